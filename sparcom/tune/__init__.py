"""``sparcom tune``: supervised fine-tuning of a base model (LoRA or full) into a model folder sparcom profiles."""

from sparcom.tune.adapters import is_adapter_folder, load_adapter_folder, materialise_adapter
from sparcom.tune.trainer import TuneResult, TuneSettings, tune

__all__ = ["TuneResult", "TuneSettings", "is_adapter_folder", "load_adapter_folder", "materialise_adapter", "tune"]
