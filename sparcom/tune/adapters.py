"""LoRA adapters through ``peft``: create, save, load onto a base model, merge, and materialise a merged folder.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors`` + :data:`~sparcom.tune.output.RECORD`)
is what ``sparcom tune`` commits for the demo: small, and with the record it says which base, data, seed and
hyperparameters made it. :func:`materialise_adapter` turns it back into a full model folder, the same bytes as
merging right after training.
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
from sparcom.models.loading import LoadedModel, file_fingerprint, load_model, tokenizer_fingerprint
from sparcom.provenance import file_sha256
from sparcom.tune.output import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    atomic_folder,
    read_record,
    write_record,
)


def _peft():
    try:
        import peft
    except ImportError:
        raise SparcomError("LoRA needs the 'peft' package; run: pip install 'peft>=0.12' (or use --method full)") from None
    return peft


def lora_model(model, r: int, alpha: int, dropout: float, target_modules: Sequence[str] | str, seed: int):
    """Wrap ``model`` with fresh LoRA layers (initialised from ``seed``); only the LoRA weights train."""
    peft = _peft()
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


def is_adapter_folder(path: str | Path) -> bool:
    """A folder with a LoRA adapter and no full model weights of its own."""
    path = Path(path)
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and (path / ADAPTER_WEIGHTS).is_file()


def check_adapter_folder(folder: Path) -> dict[str, Any]:
    """The adapter folder's record (may be empty); refuse a folder that is not an adapter or whose weights changed."""
    if not folder.is_dir():
        raise SparcomError(f"--from-adapter {folder}: folder not found")
    if not is_adapter_folder(folder):
        raise SparcomError(f"--from-adapter {folder}: not a LoRA adapter folder (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    record = read_record(folder) or {}
    expected = record.get("adapter", {}).get("sha256")
    if expected and file_sha256(folder / ADAPTER_WEIGHTS) != expected:
        raise SparcomError(f"{folder / ADAPTER_WEIGHTS} does not match the sha256 in its record; "
                           "the adapter is damaged or was replaced")
    return record


def merge_adapter(model, folder: Path):
    """``model`` with the adapter in ``folder`` merged into its weights (a plain transformers model again)."""
    peft = _peft()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = peft.PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparcomError(f"cannot apply the adapter in {folder} to this base model: {first}") from None
    return wrapped.merge_and_unload()


def base_spec_of(folder: Path) -> str:
    """The base model an adapter folder was trained on (its record, else peft's ``base_model_name_or_path``)."""
    record = read_record(folder) or {}
    spec = record.get("base", {}).get("spec")
    if not spec:
        try:
            spec = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError):
            spec = None
    if not spec:
        raise SparcomError(f"{folder}: the adapter does not say which base model it belongs to")
    return spec


def load_adapter_folder(path: str | Path, dtype: str = "auto", device: str = "cpu") -> LoadedModel:
    """Load a base + adapter folder (``sparcom tune --no-merge``) as one model, merged in memory.

    The base is whatever the folder's record names (a built-in name, a folder, a .gguf file, a hub id), loaded
    with :func:`~sparcom.models.loading.load_model`; the fingerprint combines the base's with the adapter's.
    """
    folder = Path(path)
    record = check_adapter_folder(folder)
    base = load_model(base_spec_of(folder), dtype=dtype, device=device)
    model = merge_adapter(base.model, folder).eval()
    tokenizer = base.tokenizer
    if (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    info = {
        **base.info,
        "name_or_path": str(path),
        "source": "adapter",
        "resolved_path": str(folder),
        "base": base.info,
        "adapter_sha256": file_sha256(folder / ADAPTER_WEIGHTS),
        "fingerprint": file_fingerprint([folder / ADAPTER_WEIGHTS], folder) + ":" + base.info["fingerprint"],
    }
    if record:
        info["tune"] = {k: record.get(k) for k in ("method", "seed", "data")}
    return LoadedModel(model, tokenizer, info)


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
    from sparcom.tune.output import check_out

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
