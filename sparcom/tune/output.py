"""Output folders of ``sparcom tune``: written beside their target, then renamed into place."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparcom.errors import SparcomError
from sparcom.models.lora import RECORD

#: Sub-folder of a merged LoRA run that keeps the adapter itself (what ``--from-adapter`` takes).
ADAPTER_SUBDIR = "adapter"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` (unless ``overwrite``) or one that cannot be created — before any work."""
    if out.exists() and not overwrite:
        raise SparcomError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise SparcomError(f"{out} exists and is not a folder; choose another --out")
    parent = out.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise SparcomError(f"cannot create {out}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparcomError(f"cannot create {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed."""
    check_out(out, overwrite)
    parent = out.resolve().parent
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tune-", dir=parent))
    try:
        yield work
        for path in work.rglob("*"):  # safetensors writes owner-only files; model folders are often shared
            if path.is_file():
                path.chmod(path.stat().st_mode | 0o044)
        work.chmod(0o755)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            out.rename(trash / out.name)
            work.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
