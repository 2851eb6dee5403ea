"""Write analysis results to an output directory: tables (CSV), summary.json, selection masks and plots.

The directory is built under a temporary name next to ``--out`` and renamed into place at the end, so an
error or an interruption never leaves a half-written output; an existing ``--out`` is only replaced with
``overwrite`` and only when it is an earlier analysis output (it has a summary.json) or empty.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.analysis.pipeline import CompareResult, IdentifyResult
from sparcom.analysis.selection_file import write_selection
from sparcom.analysis.sets import CLASSES
from sparcom.errors import SparcomError
from sparcom.report import plots

SUMMARY_FILE = "summary.json"
TABLES_DIR = "tables"
PLOTS_DIR = "plots"


def check_output_dir(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and even then anything but an earlier analysis output."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise SparcomError(f"{out}: exists and is a file; --out must be a directory")
        if not overwrite:
            raise SparcomError(f"{out}: output directory exists; choose another --out or pass --overwrite")
        if any(out.iterdir()) and not (out / SUMMARY_FILE).is_file():
            raise SparcomError(f"{out}: exists and is not a sparcom analysis output (no {SUMMARY_FILE}); "
                               "refusing to replace it, choose another --out")


@contextmanager
def staged_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block finishes without an error."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(out)


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


def _model_name(manifest: dict) -> str:
    name = str(manifest.get("model", {}).get("name_or_path") or "model")
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else name


def _write_tables(directory: Path, tables: dict[str, list[dict]]) -> list[Path]:
    (directory / TABLES_DIR).mkdir()
    return [write_csv(directory / TABLES_DIR / f"{name}.csv", rows) for name, rows in tables.items()]


def identify_plots(result: IdentifyResult, directory: Path) -> list[Path]:
    """Every identify figure for every kind (expert heatmaps only for MoE runs)."""
    directory.mkdir(exist_ok=True)
    model, rule = _model_name(result.run.manifest), result.rule
    written = []
    for kind, a in result.kinds.items():
        cats = list(a.categories)
        subtitle = f"{model} · {rule.short()} · {a.counts['components']:,} {plots.KIND_UNITS[kind]} in {len(a.freqs.layout.layers)} layers"
        written.append(plots.selected_per_layer(a.selected_per_layer, cats, kind, subtitle,
                                                directory / f"{kind}_per_layer.png"))
        written.append(plots.overlap_heatmaps(a.overlap.jaccard, a.overlap.containment, cats, kind, subtitle,
                                              directory / f"{kind}_overlap.png"))
        written.append(plots.sets_per_layer(a.per_layer, cats, kind, subtitle, directory / f"{kind}_sets_per_layer.png"))
        if a.sweep:
            written.append(plots.epsilon_sweep(a.sweep, cats, kind, rule.name, rule.epsilon, f"{model}",
                                               directory / f"{kind}_epsilon_sweep.png"))
        if kind == "expert":
            freqs = a.freqs
            per_cat = {c: freqs.layout.split(freqs.p[i]) for i, c in enumerate(cats)}
            written.append(plots.layer_expert_heatmaps(
                per_cat, cats, f"Expert routing frequency f = routed tokens / counted tokens, per category\n{model}",
                "routing frequency f", directory / "expert_frequency.png"))
            mean = freqs.p.mean(axis=0)
            deviation = {c: freqs.layout.split(freqs.p[i] - mean) for i, c in enumerate(cats)}
            written.append(plots.layer_expert_heatmaps(
                deviation, cats, f"Expert routing frequency minus its mean over categories\n{model}",
                "f − mean over categories", directory / "expert_frequency_deviation.png", diverging=True))
        if kind == "expert_neuron":
            per_cat = {}
            for i, c in enumerate(cats):
                per_cat[c] = {layer: m.sum(axis=1).astype(np.float64)
                              for layer, m in a.freqs.layout.split(a.mask[i]).items()}
            written.append(plots.layer_expert_heatmaps(
                per_cat, cats, f"Selected expert neurons per expert and layer ({rule.short()})\n{model}",
                "selected neurons in the expert", directory / "expert_neuron_per_expert.png"))
    return written


def write_identify(result: IdentifyResult, out: str | Path, overwrite: bool = False, make_plots: bool = True) -> Path:
    """Write selection masks, selection.json, tables, summary.json and plots to ``out``."""
    out = Path(out)
    with staged_directory(out, overwrite) as staging:
        write_selection(staging, result.masks(), to_json(result.selection_meta()))
        files = _write_tables(staging, result.tables())
        if make_plots:
            files += identify_plots(result, staging / PLOTS_DIR)
        summary = result.summary()
        summary["files"] = sorted(["selection.safetensors", "selection.json", SUMMARY_FILE]
                                  + [str(f.relative_to(staging)) for f in files])
        write_json(staging / SUMMARY_FILE, summary)
    return out


def compare_plots(result: CompareResult, directory: Path) -> list[Path]:
    directory.mkdir(exist_ok=True)
    cats = list(result.categories)
    subtitle = (f"{_model_name(result.base_run.manifest)} → {_model_name(result.tuned_run.manifest)} · "
                f"{result.rule.short()}")
    written = []
    for kind, c in result.kinds.items():
        written.append(plots.change_per_layer(c.changes_per_layer, cats, kind, subtitle,
                                              directory / f"{kind}_change_per_layer.png"))
        written.append(plots.set_changes(c.changes, cats, kind, subtitle, directory / f"{kind}_set_changes.png"))
        written.append(plots.class_transitions(c.transitions, CLASSES, kind, subtitle,
                                               directory / f"{kind}_class_transitions.png"))
        if c.routing:
            models = f"{_model_name(result.base_run.manifest)} → {_model_name(result.tuned_run.manifest)}"
            written.append(plots.routing_shift(c.routing, cats, models, directory / "routing_shift.png"))
    return written


def write_compare(result: CompareResult, out: str | Path, overwrite: bool = False, make_plots: bool = True) -> Path:
    """Write the comparison tables, summary.json and plots to ``out``."""
    out = Path(out)
    with staged_directory(out, overwrite) as staging:
        files = _write_tables(staging, result.tables())
        if make_plots:
            files += compare_plots(result, staging / PLOTS_DIR)
        summary = result.summary()
        summary["files"] = sorted([SUMMARY_FILE] + [str(f.relative_to(staging)) for f in files])
        write_json(staging / SUMMARY_FILE, summary)
    return out
