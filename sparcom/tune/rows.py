"""The rows ``sparcom tune`` trains on, read and checked before any model loads (no torch here): a JSON Lines
file, the built-in ``sparcom-sft`` set, or rows given in Python; never rows of HexaInst unless allowed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparcom.data.schema import InstructionRow, read_rows
from sparcom.errors import SparcomError


@dataclass(frozen=True)
class TrainingRows:
    """The training rows and what the tune record says about them (path, sha256, count, recipe)."""

    rows: list[InstructionRow]
    info: dict[str, Any]


def load_training_rows(data: str | Path) -> tuple[list[InstructionRow], dict[str, Any]]:
    """Rows from a JSON Lines file, or the built-in ``sparcom-sft`` set; with what the record says about them."""
    from sparcom.data import tuning_data

    path = Path(data)
    if path.is_file():
        rows = read_rows(path, require_output=True)
        return rows, {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": len(rows)}
    if str(data) == tuning_data.NAME:
        rows = tuning_data.build_tuning_rows()
        return rows, {
            "path": tuning_data.NAME,
            "sha256": hashlib.sha256(tuning_data.rows_bytes(rows)).hexdigest(),
            "rows": len(rows),
            "recipe": {"salt": tuning_data.SELECTION_SALT, "per_category": tuning_data.DEFAULT_PER_CATEGORY,
                       "max_prompt_chars": tuning_data.MAX_PROMPT_CHARS,
                       "max_output_chars": tuning_data.MAX_OUTPUT_CHARS, "sources": tuning_data.summary(rows)},
        }
    raise SparcomError(f"--data {data}: file not found; pass a JSON Lines file of instruction rows "
                       f"or '{tuning_data.NAME}' for the built-in tuning set")


def check_not_hexainst(rows: Sequence[InstructionRow]) -> None:
    """Refuse training rows that repeat HexaInst rows (the set the tuned model is profiled on)."""
    from sparcom.data import human, tuning_data

    # Without the source packages only the AI half can be compared; ids and origins still catch a copied file.
    footprint = tuning_data.hexainst_footprint(include_human=not human.missing_packages())
    clash = tuning_data.overlapping_rows(rows, footprint)
    if clash:
        raise SparcomError(
            f"{len(clash)} training row(s) repeat HexaInst rows (first: {clash[0]}); tuning on the profiling set "
            f"would confound the base → tuned comparison; remove them or pass --allow-hexainst"
        )


def training_rows(data: str | Path | Sequence[InstructionRow], allow_hexainst: bool = False) -> TrainingRows:
    """The rows of ``data`` (a file, ``sparcom-sft`` or rows), checked against HexaInst unless ``allow_hexainst``."""
    if isinstance(data, (str, Path)):
        rows, info = load_training_rows(data)
    else:
        from sparcom.data.tuning_data import rows_bytes

        rows = list(data)
        if not rows:
            raise SparcomError("no training rows given")
        info = {"path": None, "sha256": hashlib.sha256(rows_bytes(rows)).hexdigest(), "rows": len(rows)}
    if not allow_hexainst:
        check_not_hexainst(rows)
    return TrainingRows(rows, info)


__all__ = ["TrainingRows", "check_not_hexainst", "load_training_rows", "training_rows"]
