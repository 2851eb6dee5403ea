"""Training-side LoRA through ``peft``: wrap a model with fresh adapters, save them, and materialise a merged folder.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors`` + :data:`~sparcom.models.lora.RECORD`)
is what ``sparcom tune`` commits for the demo: small, and with the record it says which base, data, seed and
hyperparameters made it. :func:`materialise_adapter` turns it back into a full model folder, the same bytes as
merging right after training. Recognising, checking and merging adapter folders is :mod:`sparcom.models.lora`.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sparcom.errors import SparcomError
from sparcom.models.loading import tokenizer_fingerprint
from sparcom.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter_folder, merge_adapter, require_peft
from sparcom.provenance import file_sha256
from sparcom.tune.output import atomic_folder, check_out, write_record
from sparcom.zoo.catalog import load_model


def lora_model(model, r: int, alpha: int, dropout: float, target_modules: Sequence[str] | str, seed: int):
    """Wrap ``model`` with fresh LoRA layers (initialised from ``seed``); only the LoRA weights train."""
    peft = require_peft()
    targets: list[str] | str = "all-linear" if target_modules in ("all-linear", ("all-linear",)) else list(target_modules)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                             bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():  # peft asks transformers about gradient checkpointing by a deprecated name
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SparcomError(f"cannot put LoRA on this model ({first}); check --target-modules") from None
    return wrapped


def target_names(peft_model) -> list[str]:
    """The module names (last component) LoRA was actually put on, sorted."""
    from peft.tuners.lora import LoraLayer

    return sorted({name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)})


def save_adapter(peft_model, folder: Path, base_ref: str) -> str:
    """Write the adapter (without peft's model card) into ``folder``; returns the sha256 of its weights file."""
    peft_model.peft_config["default"].base_model_name_or_path = base_ref
    peft_model.peft_config["default"].revision = None
    # save_embedding_layers=False: sparcom never resizes the vocabulary, and "auto" would look the base up on the Hub
    peft_model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    card = folder / "README.md"
    if card.is_file():
        card.unlink()
    # peft writes target_modules from a set, in an order that changes between processes; make the bytes stable
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return file_sha256(folder / ADAPTER_WEIGHTS)


def strip_gguf_marks(model) -> None:
    """A GGUF-loaded model holds plain dequantized tensors but is marked quantized, which blocks saving."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def save_model_folder(model, tokenizer, folder: Path) -> None:
    """The full model (safetensors) and its tokenizer, as a folder any loader reads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar and messages own the terminal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def materialise_adapter(
    base: str,
    adapter: str | Path,
    out: str | Path,
    overwrite: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
    command: str | None = None,
    log=None,
) -> dict[str, Any]:
    """Merge a committed adapter into ``base`` and write the full model to ``out`` (atomically).

    The result is bit-for-bit the folder ``sparcom tune --merge`` wrote when it trained the adapter (same base
    weights, same adapter weights, same merge). Returns the record written to ``out``.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    started = time.perf_counter()
    folder, out = Path(adapter), Path(out)
    check_out(out, overwrite)
    record = check_adapter_folder(folder)
    loaded = load_model(base, dtype=dtype, device=device)
    if loaded.info.get("gguf_file"):
        strip_gguf_marks(loaded.model)
    trained_on = record.get("base", {}).get("fingerprint")
    if trained_on and trained_on != loaded.info["fingerprint"]:
        log(f"sparcom: warning: the adapter was trained on a base with fingerprint {trained_on[:12]}…, "
            f"{base!r} has {loaded.info['fingerprint'][:12]}…; merging anyway")
    merged = merge_adapter(loaded.model, folder)
    new_record = {
        **record,
        "materialised": {
            "from_adapter": str(folder),
            "adapter_sha256": file_sha256(folder / ADAPTER_WEIGHTS),
            "base": base,
            "base_fingerprint": loaded.info["fingerprint"],
            "command": command,
            "wall_seconds": None,
        },
        "merged": True,
    }
    with atomic_folder(out, overwrite) as work:
        save_model_folder(merged, loaded.tokenizer, work)
        new_record["materialised"]["wall_seconds"] = round(time.perf_counter() - started, 2)
        new_record["tokenizer_fingerprint"] = tokenizer_fingerprint(loaded.tokenizer)
        write_record(work, new_record)
    return new_record
