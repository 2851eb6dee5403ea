"""The files a person reads, written one way: CSV tables (exact floats, NaN as empty), JSON summaries, folder names."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FILE = "summary.json"
TABLES_DIR = "tables"
PLOTS_DIR = "plots"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Rows as CSV; columns in order of first appearance, floats exact (shortest repr), NaN as an empty cell."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    return path


def to_json(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays converted, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_json(data), indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def finish_folder(folder: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` into an output folder, listing every file the folder holds (itself included)."""
    files = sorted({SUMMARY_FILE, *(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())})
    return write_json(folder / SUMMARY_FILE, {**summary, "files": files})


def short_model_name(name: object) -> str:
    """A model as titles and pages show it: a hub id as it is (``org/name``), a local path by its last two parts."""
    parts = Path(str(name or "model")).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else str(name or "model")
