"""Output folders of ``sparcom tune``: the one output policy (:mod:`sparcom.outputs`) plus the tune record."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparcom.models.lora import RECORD
from sparcom.outputs import check_output_dir, staged_directory

#: Sub-folder of a merged LoRA run that keeps the adapter itself (what ``--from-adapter`` takes).
ADAPTER_SUBDIR = "adapter"
#: How a tune folder is called when ``--overwrite`` refuses to replace something else.
KIND = "tuned model folder"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` (unless ``overwrite``, and then only an earlier tune folder) before any work."""
    check_output_dir(out, overwrite, marker=RECORD, kind=KIND)


@contextlib.contextmanager
def atomic_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed."""
    with staged_directory(out, overwrite, marker=RECORD, kind=KIND) as work:
        yield work


def write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
