"""The causal check's output folder: summary.json, tables (CSV, long and wide), generations.jsonl, and figures.

The ΔNLL heatmap has two panels: the measured ΔNLL of each (ablated set, evaluated category) cell, annotated
with its value and z-score, and the excess over the random sets' mean, annotated with the cell's empirical p-value
(descriptive: the decisions are each category's Holm-adjusted tests, drawn in the normalised figure).
Both use a diverging colour map (PuOr, readable with colour-vision deficiencies) centred at 0, so damage (NLL
up) and help (NLL down) are told apart at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sparcom.artifacts.causal import control_words, intervention_words
from sparcom.causal.result import CausalResult
from sparcom.data.schema import category_label
from sparcom.report.files import PLOTS_DIR, TABLES_DIR, finish_folder, short_model_name, to_json, write_csv
from sparcom.report.plots import _annotated_heatmap, figure_row, save_figure


def causal_plot(target: str) -> str:
    """Where a causal folder keeps the ΔNLL heatmap of a target, relative to the folder."""
    return f"{PLOTS_DIR}/delta_nll_{target}.png"


def normalised_plot(target: str) -> str:
    """Where a causal folder keeps the normalised matrix and the specificity tests of a target."""
    return f"{PLOTS_DIR}/delta_nll_normalised_{target}.png"


def dose_plot(target: str) -> str:
    """Where a causal folder keeps the dose–response figure of a target (``--dose-response``)."""
    return f"{PLOTS_DIR}/dose_response_{target}.png"


def write_causal(result: CausalResult, folder: Path, plots: bool = True) -> Path:
    """Write tables/*.csv, generations.jsonl (with --generate), plots/*.png and summary.json into ``folder``
    (an existing, staged output folder)."""
    (folder / TABLES_DIR).mkdir()
    for name, rows in {**result.tables(), **result.matrices()}.items():
        write_csv(folder / TABLES_DIR / f"{name}.csv", rows)
    if result.generations:
        with (folder / "generations.jsonl").open("w", encoding="utf-8") as handle:
            for record in result.generations:
                handle.write(json.dumps(to_json(record), ensure_ascii=False) + "\n")
    if plots:
        (folder / PLOTS_DIR).mkdir()
        for name, target in result.targets.items():
            delta_nll_heatmap(result, target, folder / causal_plot(name))
            if target.statistics is not None and target.random_delta.shape[1] > 1:
                normalised_heatmap(result, target, folder / normalised_plot(name))
        if result.accuracy:
            accuracy_heatmap(result, folder / PLOTS_DIR / "accuracy.png")
        if result.dose is not None:
            for name in dict.fromkeys(c.target for c in result.dose.curves):
                dose_response_figure(result, [c for c in result.dose.curves if c.target == name],
                                     folder / dose_plot(name))
    return finish_folder(folder, result.summary())


CMAP = "PuOr_r"  # orange: NLL goes up (damage); purple: NLL goes down


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(value) else f"{value:+.{digits}f}"


def _heatmap(ax, figure, values: np.ndarray, notes: list[list[str]], rows: list[str], cols: list[str],
             title: str, colorbar: str) -> None:
    """A diverging annotated heatmap centred at 0 (:func:`sparcom.report.plots._annotated_heatmap`), the diagonal
    (a set on its own category) outlined."""
    from matplotlib.colors import TwoSlopeNorm

    finite = values[np.isfinite(values)]
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    image = _annotated_heatmap(ax, values, [category_label(c) for c in rows], [category_label(c) for c in cols],
                               cmap=CMAP, norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit), notes=notes)
    ax.set_xlabel("evaluated category (reference responses scored)")
    ax.set_ylabel("category whose set is deactivated")
    ax.set_title(title, fontsize=10)
    ax.tick_params(length=0)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if rows[i] == cols[j]:
                ax.add_patch(_diagonal_box(i, j))
    bar = figure.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label(colorbar)


def _diagonal_box(i: int, j: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#222222", linewidth=1.4)


def delta_nll_heatmap(result, target, path: str | Path) -> Path:
    """ΔNLL matrix of one target and its excess over the random baseline, annotated; one PNG."""
    sig = target.cells()
    rows, cols = target.ablated, target.evaluated
    seeds = target.random_delta.shape[1]
    sizes = target.sizes()
    width = 2 * (3.0 + 0.95 * len(cols))
    height = 2.0 + 0.8 * len(rows)
    figure, axes = figure_row(width, height, cols=2)
    left = [[_fmt(target.delta[i, j]) + ("" if not np.isfinite(sig["z"][i, j]) else f"\nz={sig['z'][i, j]:.1f}")
             for j in range(len(cols))] for i in range(len(rows))]
    right = [[_fmt(sig["excess"][i, j]) + ("" if not np.isfinite(sig["p"][i, j]) else
                                            f"\np={sig['p'][i, j]:.2g}")
              for j in range(len(cols))] for i in range(len(rows))]
    _heatmap(axes[0], figure, target.delta, left, rows, cols,
             "ΔNLL = NLL with the set deactivated − NLL unablated", "ΔNLL (nats per response token)")
    _heatmap(axes[1], figure, sig["excess"], right, rows, cols,
             f"ΔNLL − mean ΔNLL of {seeds} {control_words(target.control)}" if seeds
             else "no random baseline (--seeds 0)",
             "excess ΔNLL over random (nats per token)")
    axes[0].set_yticks(range(len(rows)), [f"{category_label(c)}\n({sizes[c]:,})" for c in rows])
    removal = result.settings.expert_removal if "expert" in target.kinds else None
    kinds = ", ".join(target.kinds)
    sets = "unique sets" if result.settings.unique else "selected sets"
    figure.suptitle(f"Causal check: {target.name} ({kinds}, {sets}) of {short_model_name(result.model.get('name_or_path'))}"
                    + f" · {intervention_words(target.intervention)}"
                    + (f" · expert removal: {removal}" if removal else "")
                    + "\nrow labels: category (set size); per-cell p = (1 + #random ≥ observed) / (1 + seeds), "
                      "unadjusted (descriptive)",
                    fontsize=10.5)
    return save_figure(figure, path)


def normalised_heatmap(result, target, path: str | Path) -> Path:
    """Left: each cell's z against the random sets of that cell (the diagonal reads at a glance); right: each
    category's specificity (own ΔNLL − mean on the others) with its bootstrap interval against its random sets."""
    stats = target.statistics
    sig = stats.cells
    rows, cols = target.ablated, target.evaluated
    z = sig["z"]
    width = 2 * (3.0 + 0.95 * len(cols))
    height = 2.2 + 0.8 * len(rows)
    figure, axes = figure_row(width, height, cols=2)
    notes = [[("–" if not np.isfinite(z[i, j]) else f"{z[i, j]:+.1f}") + f"\n{_fmt(target.delta[i, j], 2)}"
              for j in range(len(cols))] for i in range(len(rows))]
    _heatmap(axes[0], figure, z, notes, rows, cols,
             "z = (ΔNLL − random mean) / random sd, per cell (cell text: z, ΔNLL)",
             f"z ({control_words(target.control)})")
    ax = axes[1]
    tests = [t for t in stats.tests if t.tested]
    for y, test in enumerate(tests):
        a = target.ablated.index(test.ablated)
        values = _random_specificity(target, a)
        ax.scatter(values, np.full(len(values), y) + np.linspace(-0.15, 0.15, len(values)), s=8, color="#999999",
                   zorder=2, label="random sets" if y == 0 else None)
        spec = test.specificity
        ax.plot([spec.low, spec.high], [y, y], color="#B35806", linewidth=2.2, zorder=3)
        ax.scatter([spec.estimate], [y], s=40, color="#B35806", zorder=4,
                   label=f"selected set ({stats.level:.0%} bootstrap interval)" if y == 0 else None)
        mark = "*" if test.decision.specificity_significant else ""
        ax.annotate(f"p_holm={spec.p_holm:.2g}{mark} ({spec.test})", (0.99, y),
                    xycoords=("axes fraction", "data"), xytext=(0, -7), textcoords="offset points", va="top",
                    ha="right", fontsize=7.5, color="#333333")
    ax.axvline(0, color="#444444", linewidth=0.8)
    ax.set_yticks(range(len(tests)), [category_label(t.ablated) for t in tests])
    ax.invert_yaxis()
    ax.set_xlabel("specificity = own ΔNLL − mean ΔNLL on the other categories (nats per token)")
    ax.set_title(f"specificity of each set against {stats.random_sets} "
                 f"{control_words(target.control)}", fontsize=10)
    if tests:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=7.5, frameon=False, ncols=2)
    sets = "unique sets" if result.settings.unique else "selected sets"
    figure.suptitle(f"Causal check normalised: {target.name} ({sets}) of "
                    f"{short_model_name(result.model.get('name_or_path'))}"
                    f"\n* specificity significant after Holm at α = {stats.alpha}; test per category in brackets",
                    fontsize=10.5)
    return save_figure(figure, path)


def _random_specificity(target, a: int) -> np.ndarray:
    """Each random set's own ΔNLL minus its mean ΔNLL on the other categories (unweighted), for ablated row a."""
    own = target.evaluated.index(target.ablated[a])
    values = target.random_delta[a]  # [R, C]
    others = (values.sum(axis=1) - values[:, own]) / max(len(target.evaluated) - 1, 1)
    return values[:, own] - others


def accuracy_heatmap(result, path: str | Path) -> Path:
    """Change of greedy exact-match accuracy after deactivating each set, per target; random sets' mean beside it."""
    rows = result.accuracy
    checkable = [c for c in result.evaluated if any(r["evaluated"] == c for r in rows)]
    base = {r["evaluated"]: r for r in rows if r["condition"] == "unablated"}
    targets = [t for t in result.targets.values() if any(r["target"] == t.name for r in rows)]
    height = 2.2 + 0.8 * max((len(t.ablated) for t in targets), default=1)
    figure, axes = figure_row(max(6.5, len(targets) * (3.2 + 1.1 * len(checkable))), height,
                              cols=max(1, len(targets)))
    for ax, target in zip(axes, targets, strict=False):
        values = np.full((len(target.ablated), len(checkable)), np.nan)
        notes = [["" for _ in checkable] for _ in target.ablated]
        for i, ablated in enumerate(target.ablated):
            for j, category in enumerate(checkable):
                hits = [r for r in rows if r["target"] == target.name and r["ablated"] == ablated
                        and r["evaluated"] == category]
                chosen = [r["accuracy"] for r in hits if r["condition"] == "selected"]
                random = [r["accuracy"] for r in hits if r["condition"] == "random"]
                if not chosen or category not in base:
                    notes[i][j] = "–"
                    continue
                values[i, j] = chosen[0] - base[category]["accuracy"]
                notes[i][j] = f"{chosen[0]:.2f}" + (f"\nrand {np.mean(random):.2f}" if random else "")
        _heatmap(ax, figure, values, notes, target.ablated, checkable,
                 f"{target.name}: accuracy after deactivation (cell text), colour = change", "Δ exact-match accuracy")
        ax.set_xticks(range(len(checkable)), [f"{category_label(c)}\n(unablated {base[c]['accuracy']:.2f}, "
                                              f"n={base[c]['total']})" for c in checkable], fontsize=8)
        ax.set_xlabel("evaluated category (greedy exact match)")
    figure.suptitle(f"Exact match before and after deactivating each category's set · "
                    f"{short_model_name(result.model.get('name_or_path'))} · max {result.settings.max_new_tokens} new tokens",
                    fontsize=10.5)
    return save_figure(figure, path)


OWN, OTHERS = "#B35806", "#542788"  # PuOr's ends: the set's own category, the other categories


def dose_response_figure(result, curves, path: str | Path) -> Path:
    """One panel per category: ΔNLL on its own category and the mean over the others against k (log axis), for the
    top-k set (lines) and its random sets (the main control's band: min to max, dashed mean; other controls'
    means dotted)."""
    from sparcom.report.plots import figure_grid

    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    figure, axes = figure_grid(max(8.0, 4.2 * cols), 3.3 * rows + 0.9, rows, cols)  # room for the title and legend
    panels = [ax for row in axes for ax in row]
    controls = list(result.settings.controls)
    for ax, curve in zip(panels, curves, strict=False):
        k = np.asarray(curve.sizes, dtype=float)
        own, others = curve.own_and_others(curve.delta)
        for name, values, colour in (("own", own, OWN), ("others", others, OTHERS)):
            for index, control in enumerate(controls):
                band = curve.band(control)
                if index == 0:
                    ax.fill_between(k, band[f"{name}_min"], band[f"{name}_max"], color=colour, alpha=0.15, linewidth=0)
                ax.plot(k, band[f"{name}_mean"], color=colour, linewidth=1, linestyle="--" if index == 0 else ":",
                        label=f"{'own' if name == 'own' else 'others'}: {control} random mean")
            ax.plot(k, values, color=colour, marker="o", markersize=3.5, linewidth=1.8,
                    label=f"{'own category' if name == 'own' else 'other categories (mean)'}: top-k of the set")
        ax.axhline(0, color="#444444", linewidth=0.7)
        ax.set_xscale("log")
        ax.set_xticks(k, [f"{int(v)}" for v in k], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"{curve.target}: {category_label(curve.category)} set ({curve.sizes[-1]:,})", fontsize=9.5)
        ax.set_xlabel("k (top-k of the set by the rule's score)", fontsize=8)
        ax.set_ylabel("ΔNLL (nats per response token)", fontsize=8)
    for ax in panels[len(curves):]:
        ax.set_visible(False)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7.5, frameon=False)
    seeds = result.settings.seeds
    figure.suptitle(f"Dose–response: {short_model_name(result.model.get('name_or_path'))} · shaded: range of {seeds} "
                    f"random sets ({controls[0]} control) matched to each top-k set", fontsize=10)
    return save_figure(figure, path)
