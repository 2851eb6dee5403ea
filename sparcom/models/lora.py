"""LoRA adapter folders: recognise one, check it, find its base, and merge it into a loaded base model.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, usually with the record
:data:`RECORD` that ``sparcom tune`` writes) loads like any model: :func:`sparcom.models.loading.load_model` merges
it into the base its record names. Training adapters is :mod:`sparcom.tune`; ``peft`` is imported on demand.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from sparcom.errors import SparcomError
from sparcom.provenance import file_sha256

#: The record ``sparcom tune`` writes into every folder it makes (base, data, seed, settings, results).
RECORD = "sparcom-tune.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def require_peft():
    """The ``peft`` module, or a one-line error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise SparcomError("LoRA needs the 'peft' package; run: pip install 'peft>=0.12' (or use --method full)") from None
    return peft


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``sparcom tune`` record of a folder (None when it has none)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SparcomError(f"{path} is not valid JSON; restore it from the adapter's source") from None


def is_adapter_folder(path: str | Path) -> bool:
    """A folder with a LoRA adapter (it may or may not hold full model weights too)."""
    path = Path(path)
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and (path / ADAPTER_WEIGHTS).is_file()


def check_adapter_folder(folder: Path) -> dict[str, Any]:
    """The adapter folder's record (may be empty); refuse a folder that is not an adapter or whose weights changed."""
    if not folder.is_dir():
        raise SparcomError(f"--from-adapter {folder}: folder not found")
    if not is_adapter_folder(folder):
        raise SparcomError(f"--from-adapter {folder}: not a LoRA adapter folder (needs {ADAPTER_CONFIG} and "
                           f"{ADAPTER_WEIGHTS})")
    record = read_record(folder) or {}
    expected = record.get("adapter", {}).get("sha256")
    if expected and file_sha256(folder / ADAPTER_WEIGHTS) != expected:
        raise SparcomError(f"{folder / ADAPTER_WEIGHTS} does not match the sha256 in its record; "
                           "the adapter is damaged or was replaced")
    return record


def merge_adapter(model, folder: Path):
    """``model`` with the adapter in ``folder`` merged into its weights (a plain transformers model again)."""
    peft = require_peft()
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
