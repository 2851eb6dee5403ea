"""``sparcom tune``: supervised fine-tuning of a base model (LoRA or full) into a model folder sparcom profiles.

The entry point is :func:`sparcom.api.tune`; :mod:`sparcom.tune.settings` holds its settings (no torch),
:mod:`sparcom.tune.trainer` the training and :mod:`sparcom.tune.lora` the adapters.
"""
