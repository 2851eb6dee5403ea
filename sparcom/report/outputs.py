"""Write the identify and compare results to an output folder: tables (CSV), summary.json and plots.

The folder follows the one output policy (:func:`sparcom.outputs.staged_directory`): built beside ``--out`` and
renamed into place at the end; an existing ``--out`` is only replaced with ``overwrite`` and only when it is an
earlier output (it has a summary.json). The selection masks in an identify folder are written by the analysis
layer (:mod:`sparcom.artifacts.selection`), not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparcom.analysis.pipeline import CompareResult, IdentifyResult
from sparcom.analysis.sets import CLASSES
from sparcom.kinds import KIND_UNITS
from sparcom.report import plots
from sparcom.report.files import PLOTS_DIR, TABLES_DIR, finish_folder, short_model_name, write_csv
from sparcom.report.validity import identify_validity_plots


def identify_plot(kind: str, figure: str) -> str:
    """Where an identify folder keeps one of its figures (``figure``: per_layer, overlap, sets_per_layer,
    epsilon_sweep; with validity evidence also validity_confusion, validity_random, cross_source), relative to the
    folder."""
    return f"{PLOTS_DIR}/{kind}_{figure}.png"


def compare_plot(kind: str, figure: str) -> str:
    """Where a compare folder keeps one of its figures (``figure``: change_per_layer, set_changes,
    class_transitions), relative to the folder."""
    return f"{PLOTS_DIR}/{kind}_{figure}.png"


def _model_name(manifest: dict) -> str:
    return short_model_name(manifest.get("model", {}).get("name_or_path"))


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
        subtitle = f"{model} · {rule.short()} · {a.counts['components']:,} {KIND_UNITS[kind]} in {len(a.freqs.layout.layers)} layers"
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
    return written + identify_validity_plots(result, directory)


def write_identify(result: IdentifyResult, folder: Path, make_plots: bool = True) -> Path:
    """Write the identify tables, plots and summary.json into ``folder`` (an existing, staged output folder)."""
    _write_tables(folder, result.tables())
    if make_plots:
        identify_plots(result, folder / PLOTS_DIR)
    return finish_folder(folder, result.summary())


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


def write_compare(result: CompareResult, folder: Path, make_plots: bool = True) -> Path:
    """Write the comparison tables, plots and summary.json into ``folder`` (an existing, staged output folder)."""
    _write_tables(folder, result.tables())
    if make_plots:
        compare_plots(result, folder / PLOTS_DIR)
    return finish_folder(folder, result.summary())
