"""Model loading and the per-family adapters that say where MLP activations (and routers/experts) live."""

from sparcom.models.adapters import FAMILIES, FamilyAdapter, adapter_for

__all__ = ["FAMILIES", "FamilyAdapter", "adapter_for"]
