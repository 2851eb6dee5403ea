"""``sparcom tune``: supervised fine-tuning of a base model (LoRA or full) into a model folder sparcom profiles."""

from sparcom.tune.lora import materialise_adapter
from sparcom.tune.trainer import TuneResult, TuneSettings, tune

__all__ = ["TuneResult", "TuneSettings", "materialise_adapter", "tune"]
