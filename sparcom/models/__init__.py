"""Model access: loading (hub id, folder, GGUF, built-ins, LoRA folders), the family table, one site map per model."""

from sparcom.models.families import FAMILIES, Family, family_for
from sparcom.models.sites import ModelSites, model_sites

__all__ = ["FAMILIES", "Family", "ModelSites", "family_for", "model_sites"]
