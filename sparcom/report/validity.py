"""Validity figures and the evaluate / sweep output folders (identify's validity figures are written with its own).

Figures (PNG, the conventions of :mod:`sparcom.report.plots`):

- ``{kind}_validity_confusion.png``: held-out confusion matrices (set-score, centroid on the sets, centroid on all
  components), coloured by row share, annotated with counts;
- ``{kind}_validity_random.png``: each decoder's accuracy against the distribution of its random sets of the same
  per-layer shape, with the all-component accuracy and chance;
- ``{kind}_cross_source.png``: Jaccard of the sets selected on the AI half (rows) and the human half (columns),
  beside each category's within-category Jaccard, its largest across-category one, and its stability over folds;
- ``{kind}_validity_sweep.png`` (sweep folders): accuracy, stability and cross-source agreement of every rule
  against its mean set size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparcom import stats
from sparcom.analysis.validity import CrossSource, HeldOutDecoding, Stability
from sparcom.data.schema import category_label
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report import plots
from sparcom.report.files import PLOTS_DIR, TABLES_DIR, finish_folder, short_model_name, write_csv

DECODER_TITLES = {"set_score": "set-score (mean z over each category's set)",
                  "centroid": "nearest centroid on the union of the sets",
                  "centroid_all_components": "nearest centroid on all components"}
RULE_COLORS = ("#000000", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#999999")


def validity_plot(kind: str, figure: str) -> str:
    """Where an identify or evaluate folder keeps a validity figure (``figure``: validity_confusion,
    validity_random, cross_source, validity_sweep), relative to the folder."""
    return f"{PLOTS_DIR}/{kind}_{figure}.png"


def confusion_matrices(decoding: HeldOutDecoding, kind: str, subtitle: str, path: str | Path) -> Path:
    """One heatmap per decoder: rows the true category, columns the predicted one; colour = share of the row."""
    labels = [category_label(c) for c in decoding.categories]
    panels = [*decoding.decoders.items(), ("centroid_all_components", decoding.all_components)]
    figure, axes = plots.figure_row(5.0 * len(panels), 4.8, len(panels))
    image = None
    for ax, (name, result) in zip(axes, panels, strict=True):
        counts = result.confusion.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
        image = plots._annotated_heatmap(ax, shares, labels, labels)
        if len(ax.texts) == counts.size:  # the heatmap annotates small matrices: show counts, not shares
            for (i, j), value in np.ndenumerate(counts):
                ax.texts[i * len(labels) + j].set_text(f"{int(value)}")
        ax.set_title(f"{DECODER_TITLES.get(name, name)}\naccuracy {result.accuracy:.1%}", fontsize=9.5)
        ax.set_xlabel("predicted category")
        ax.set_ylabel("true category")
    figure.colorbar(image, ax=list(axes), shrink=0.85, label="share of the true category's instructions")
    figure.suptitle(f"Held-out decoding of each instruction's category from the {KIND_NOUNS[kind]} "
                    f"({decoding.folds}-fold)\n{subtitle}", fontsize=11)
    return plots.save_figure(figure, path)


def random_distribution(decoding: HeldOutDecoding, kind: str, subtitle: str, path: str | Path) -> Path:
    """Per decoder: histogram of the random sets' accuracies, the observed accuracy with its CI, all, chance."""
    figure, axes = plots.figure_row(11, 4.4, len(decoding.decoders))
    everything = decoding.all_components.accuracy
    for ax, (name, result) in zip(axes, decoding.decoders.items(), strict=True):
        random = result.random_accuracy
        low, high = result.interval
        values = [v for v in (*random.tolist(), result.accuracy, everything, decoding.chance) if np.isfinite(v)]
        span = (min(values) - 0.03, max(values) + 0.03) if values else (0.0, 1.0)
        if random.size:
            ax.hist(random, bins=np.linspace(*span, 40), color="#AAAAAA", edgecolor="white",
                    label=f"{random.size} random sets of the same shape (mean {random.mean():.1%})")
        ax.axvspan(low, high, color="#0072B2", alpha=0.15, label=f"observed {result.level:.0%} CI")
        ax.axvline(result.accuracy, color="#0072B2", linewidth=2.2,
                   label=f"selected sets {result.accuracy:.1%} (p = {result.p_value:.3g})")
        ax.axvline(everything, color="#D55E00", linestyle="--", linewidth=1.5,
                   label=f"centroid on all {KIND_UNITS[kind]} {everything:.1%}")
        ax.axvline(decoding.chance, color="#222222", linestyle=":", linewidth=1.5,
                   label=f"chance {decoding.chance:.1%}")
        plots._style(ax)
        ax.set_xlim(*span)
        ax.xaxis.set_major_formatter(_percent_formatter())
        ax.set_xlabel("held-out accuracy")
        ax.set_ylabel("random sets")
        ax.set_title(DECODER_TITLES.get(name, name), fontsize=9.5)
        ax.legend(fontsize=7.5, frameon=False, loc="upper left")
    figure.suptitle(f"Do the selected {KIND_NOUNS[kind]} decode the category better than random sets?\n{subtitle}",
                    fontsize=11)
    return plots.save_figure(figure, path)


def _percent_formatter():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def cross_source_figure(cross: CrossSource, stability: Stability | None, kind: str, subtitle: str,
                        path: str | Path) -> Path:
    """Heatmap of J[AI set of c, human set of c'] and, per category, within vs largest across J and stability."""
    labels = [category_label(c) for c in cross.categories]
    figure, axes = plots.figure_row(12, 4.8, 2)
    heat, bars = axes
    image = plots._annotated_heatmap(heat, cross.jaccard, labels, labels)
    figure.colorbar(image, ax=heat, shrink=0.85, label="Jaccard")
    heat.set_xlabel("set selected on the human-written half")
    heat.set_ylabel("set selected on the AI-written half")
    heat.set_title(f"within (diagonal) {cross.within_mean:.2f} · across (off-diagonal) {cross.across_mean:.2f}",
                   fontsize=9.5)
    k = len(labels)
    across = np.array([np.nanmax(np.concatenate([np.delete(cross.jaccard[c], c), np.delete(cross.jaccard[:, c], c)]))
                       if k > 1 and np.isfinite(cross.jaccard).any() else np.nan for c in range(k)])
    x = np.arange(k)
    width = 0.27
    bars.bar(x - width, np.nan_to_num(cross.within), width, color="#0072B2", label="within: AI vs human set of c")
    bars.bar(x, np.nan_to_num(across), width, color="#AAAAAA", label="largest across: c vs another category")
    if stability is not None:
        bars.bar(x + width, np.nan_to_num(stability.jaccard), width, color="#009E73",
                 label=f"stability over {stability.replicates} {stability.method}")
    plots._style(bars)
    bars.set_xticks(x, labels=labels)
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("Jaccard")
    bars.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    bars.set_title("Does each category's set survive a change of source?", fontsize=9.5)
    figure.suptitle(f"Cross-source agreement of the {KIND_NOUNS[kind]} sets\n{subtitle}", fontsize=11)
    return plots.save_figure(figure, path)


def sweep_figure(rows: Sequence[dict], kind: str, subtitle: str, path: str | Path) -> Path:
    """Four panels against the mean set size: both decoders vs their random sets, stability, cross-source."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    figure, axes = plots.figure_grid(13, 8.6, 2, 2, sharex=True)
    chance = next((r["chance"] for r in rows), np.nan)
    everything = next((r["all_components_accuracy"] for r in rows), np.nan)
    panels = ((axes[0, 0], "set_score", "set-score accuracy (dotted: random sets of the same shape)"),
              (axes[0, 1], "centroid", "nearest-centroid accuracy (dotted: random sets)"))
    for index, variant in enumerate(variants):
        color = RULE_COLORS[index % len(RULE_COLORS)]
        mine = sorted((r for r in rows if r["variant"] == variant and r["mean_fraction"] > 0),
                      key=lambda r: r["mean_fraction"])
        x = [r["mean_fraction"] for r in mine]
        for ax, name, _ in panels:
            ax.plot(x, [r[f"{name}_accuracy"] for r in mine], marker="o", markersize=3.5, color=color, label=variant)
            ax.plot(x, [r[f"{name}_random_mean"] for r in mine], linestyle=":", color=color, linewidth=1.2)
            significant = [r for r in mine if stats.significant(r[f"{name}_p"])]
            ax.scatter([r["mean_fraction"] for r in significant], [r[f"{name}_accuracy"] for r in significant],
                       s=40, facecolors="none", edgecolors=color, linewidths=1.2)
        axes[1, 0].plot(x, [r["stability"] for r in mine], marker="o", markersize=3.5, color=color, label=variant)
        axes[1, 1].plot(x, [r["cross_source_within"] - r["cross_source_across"] for r in mine], marker="o",
                        markersize=3.5, color=color, label=variant)
    for ax, name, title in panels:
        shown = [v for r in rows for v in (r[f"{name}_accuracy"], r[f"{name}_random_mean"]) if np.isfinite(v)]
        bottom = min([*shown, everything if name == "centroid" else 1.0]) if shown else 0.0
        ax.set_ylim(max(0.0, bottom - 0.05), 1.01)
        if chance >= bottom - 0.05:
            ax.axhline(chance, color="#222222", linestyle=":", linewidth=1)
        else:
            title += f" (chance {chance:.1%}, below the axis)"
        ax.set_title(title + f"\nopen circle: p ≤ {stats.ALPHA} against the random sets", fontsize=9.5)
        ax.set_ylabel("held-out accuracy")
        ax.yaxis.set_major_formatter(_percent_formatter())
    axes[0, 1].axhline(everything, color="#D55E00", linestyle="--", linewidth=1.2,
                       label=f"all {KIND_UNITS[kind]} {everything:.1%}")
    axes[1, 0].set_title("stability: mean Jaccard of a category's set across training folds", fontsize=9.5)
    axes[1, 0].set_ylabel("Jaccard")
    axes[1, 1].set_title("cross-source: within-category minus across-category Jaccard (AI vs human)", fontsize=9.5)
    axes[1, 1].set_ylabel("Jaccard difference")
    axes[1, 1].axhline(0, color="#222222", linewidth=0.8)
    for ax in axes.ravel():
        plots._style(ax)
        ax.set_xscale("log")
    for ax in axes[1]:
        ax.set_xlabel(f"mean share of the {KIND_UNITS[kind]} selected per category")
    axes[0, 0].legend(fontsize=8, frameon=False, title="rule", loc="best")
    axes[0, 1].legend(fontsize=8, frameon=False, loc="best")
    figure.suptitle(f"Rule and ε study of the {KIND_NOUNS[kind]} selection\n{subtitle}", fontsize=11)
    return plots.save_figure(figure, path)


def identify_validity_plots(result, directory: Path) -> list[Path]:
    """The validity figures of an identify result (kinds with validity evidence only)."""
    model = short_model_name(result.run.manifest.get("model", {}).get("name_or_path"))
    written = []
    for kind, v in result.validity.items():
        subtitle = f"{model} · {result.rule.short()}"
        if v.decoding is not None:
            written.append(confusion_matrices(v.decoding, kind, subtitle, directory / f"{kind}_validity_confusion.png"))
            written.append(random_distribution(v.decoding, kind, subtitle, directory / f"{kind}_validity_random.png"))
        if v.cross_source is not None and v.stability is not None:
            written.append(cross_source_figure(v.cross_source, v.stability, kind, subtitle,
                                               directory / f"{kind}_cross_source.png"))
        elif v.cross_source is not None:
            written.append(cross_source_figure(v.cross_source, None, kind, subtitle,
                                               directory / f"{kind}_cross_source.png"))
    return written


def _write_tables(folder: Path, tables: dict[str, list[dict]]) -> None:
    (folder / TABLES_DIR).mkdir()
    for name, rows in tables.items():
        write_csv(folder / TABLES_DIR / f"{name}.csv", rows)


def write_evaluate(result, folder: Path, make_plots: bool = True) -> Path:
    """Tables, figures and summary.json of ``sparcom evaluate`` into a staged output folder."""
    _write_tables(folder, result.tables())
    if make_plots:
        (folder / PLOTS_DIR).mkdir()
        model = short_model_name(result.run.manifest.get("model", {}).get("name_or_path"))
        rule = result.selection.meta.get("description") or result.selection.meta.get("rule", "")
        for kind, k in result.kinds.items():
            subtitle = f"{model} · fixed sets of {result.selection.path.name} ({rule}) on {result.run.path.name}"
            confusion_matrices(k.decoding, kind, subtitle, folder / validity_plot(kind, "validity_confusion"))
            random_distribution(k.decoding, kind, subtitle, folder / validity_plot(kind, "validity_random"))
    return finish_folder(folder, result.summary())


def write_sweep(result, folder: Path, make_plots: bool = True) -> Path:
    """Tables, figures and summary.json of ``sparcom sweep`` (the rule / ε study) into a staged output folder."""
    _write_tables(folder, result.tables())
    if make_plots:
        (folder / PLOTS_DIR).mkdir()
        model = short_model_name(result.run.manifest.get("model", {}).get("name_or_path"))
        for kind, rows in result.rows.items():
            subtitle = (f"{model} · {result.settings.folds}-fold, {result.settings.random_sets} random sets per fold")
            sweep_figure(rows, kind, subtitle, folder / validity_plot(kind, "validity_sweep"))
    return finish_folder(folder, result.summary())
