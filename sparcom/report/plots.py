"""PNG figures of the analysis tables (matplotlib, object API on the Agg canvas: no pyplot, no global state).

Every function takes plain rows or arrays, writes one PNG and returns its path. Categories are shown by
their labels (CLS, CODE, QA, GEN, MATH, SUM) in the Okabe–Ito colour-blind-safe palette; heatmaps use
viridis (sequential) or PuOr (diverging), both readable with colour-vision deficiencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparcom.data.schema import CATEGORIES, category_label
from sparcom.kinds import KIND_NOUNS, KIND_UNITS

DPI = 160
#: Okabe & Ito (2008) colour-blind-safe palette, in the order categories are given colours.
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
GENERAL_COLOR = "#222222"
SHARED_COLOR = "#AAAAAA"
BASE_COLOR, TUNED_COLOR, RETAINED_COLOR = "#0072B2", "#D55E00", "#222222"
GAINED_COLOR, LOST_COLOR = "#009E73", "#D55E00"


def category_color(category: str, categories: Sequence[str]) -> str:
    """A fixed colour for each HexaInst category, then the rest of the palette in order for other names."""
    if category in CATEGORIES:
        return OKABE_ITO[CATEGORIES.index(category)]
    others = [c for c in categories if c not in CATEGORIES]
    return OKABE_ITO[(len(CATEGORIES) + others.index(category)) % len(OKABE_ITO)] if category in others else "#777777"


def figure_grid(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, **kwargs)
    return figure, axes


def figure_row(width: float, height: float, cols: int = 1):
    """A figure with one row of ``cols`` axes (the axes as a flat array)."""
    figure, axes = figure_grid(width, height, 1, cols)
    return figure, axes[0]


def save_figure(figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI, facecolor="white")
    return path


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, axis="y", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)


def _layer_axis(ax, layers: Sequence[int]) -> None:
    ax.set_xlabel("layer (0 = first decoder layer)")
    if len(layers) <= 40:
        step = max(1, int(np.ceil(len(layers) / 16)))
        ax.set_xticks(list(layers)[::step])


def _grid_shape(count: int) -> tuple[int, int]:
    cols = min(3, count)
    return int(np.ceil(count / cols)), cols


def selected_per_layer(rows: Sequence[dict], categories: Sequence[str], kind: str, subtitle: str,
                       path: str | Path) -> Path:
    """Lines: number of selected components in each layer, one line per category."""
    figure, axes = figure_grid(8, 4.5)
    ax = axes[0, 0]
    layers = sorted({r["layer"] for r in rows})
    widths = {r["layer"]: r["components"] for r in rows}
    for category in categories:
        values = {r["layer"]: r["selected"] for r in rows if r["category"] == category}
        ax.plot(layers, [values.get(j, 0) for j in layers], marker="o", markersize=3.5, linewidth=1.6,
                color=category_color(category, categories), label=category_label(category))
    _style(ax)
    _layer_axis(ax, layers)
    ax.set_ylabel(f"selected {KIND_UNITS[kind]} per layer")
    ax.set_ylim(bottom=0)
    if len(set(widths.values())) == 1:
        width = next(iter(widths.values()))
        secondary = ax.secondary_yaxis("right", functions=(lambda v: v / width * 100, lambda v: v * width / 100))
        secondary.set_ylabel(f"% of the layer's {width:,} {KIND_UNITS[kind]}")
    ax.legend(title="category", ncols=min(6, len(categories)), loc="upper center", bbox_to_anchor=(0.5, -0.15),
              frameon=False)
    ax.set_title(f"{KIND_NOUNS[kind]} per layer and category\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def _annotated_heatmap(ax, matrix: np.ndarray, row_labels, col_labels, vmin=0.0, vmax=1.0, fmt="{:.2f}",
                       cmap="viridis", norm=None, nan_text="n/a", notes=None, max_cells: int = 100):
    """The one annotated heatmap: colour per cell (NaN grey), and in each cell ``notes[i][j]`` or the value in
    ``fmt`` (only up to ``max_cells`` cells), black or white by the colour's luminance."""
    values = np.asarray(matrix, dtype=np.float64)
    from matplotlib import colormaps

    colormap = colormaps[cmap].with_extremes(bad="#EEEEEE")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=None if norm else vmin,
                      vmax=None if norm else vmax, norm=norm, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=col_labels)
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    if notes is not None or values.size <= max_cells:
        for (i, j), value in np.ndenumerate(values):
            if np.isnan(value):
                text, color = nan_text, "#555555"
            else:
                rgba = colormap(image.norm(value))
                luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                text, color = fmt.format(value), "black" if luminance > 0.5 else "white"
            ax.text(j, i, notes[i][j] if notes is not None else text, ha="center", va="center",
                    fontsize=7.5 if notes is not None else 8.5, color=color)
    return image


def overlap_heatmaps(jaccard: np.ndarray, containment: np.ndarray, categories: Sequence[str], kind: str,
                     subtitle: str, path: str | Path) -> Path:
    """Two annotated heatmaps: Jaccard |A∩B|/|A∪B| and containment |A∩B|/|A| (row A, column B)."""
    labels = [category_label(c) for c in categories]
    figure, axes = figure_grid(11, 4.8, 1, 2)
    for ax, matrix, name in ((axes[0, 0], jaccard, "Jaccard |A∩B| / |A∪B|"),
                             (axes[0, 1], containment, "share of row set in column set |A∩B| / |A|")):
        image = _annotated_heatmap(ax, matrix, labels, labels)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("category B")
        ax.set_ylabel("category A")
    figure.colorbar(image, ax=axes[0, :].tolist(), shrink=0.85, label="overlap")
    figure.suptitle(f"Overlap of {KIND_NOUNS[kind]} between categories\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def sets_per_layer(rows: Sequence[dict], categories: Sequence[str], kind: str, subtitle: str,
                   path: str | Path) -> Path:
    """Stacked bars per layer: general, shared by 2…K−1 categories, and unique to each category."""
    figure, axes = figure_grid(9, 4.8)
    ax = axes[0, 0]
    layers = [r["layer"] for r in rows]
    k = len(categories)
    bottom = np.zeros(len(rows))
    stacks = [(f"general (all {k})", [r["general"] for r in rows], GENERAL_COLOR)]
    if k > 2:
        stacks.append((f"shared by 2–{k - 1}", [sum(r.get(f"shared_by_{m}", 0) for m in range(2, k)) for r in rows],
                       SHARED_COLOR))
    if k > 1:
        stacks += [(f"unique to {category_label(c)}", [r[f"unique_{c}"] for r in rows], category_color(c, categories))
                   for c in categories]
    for label, values, color in stacks:
        values = np.asarray(values, dtype=np.float64)
        ax.bar(layers, values, bottom=bottom, color=color, label=label, width=0.85, edgecolor="white", linewidth=0.3)
        bottom += values
    _style(ax)
    _layer_axis(ax, layers)
    ax.set_ylabel(f"selected {KIND_UNITS[kind]} (union of categories)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    ax.set_title(f"General, shared and unique {KIND_NOUNS[kind]} per layer\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def epsilon_sweep(rows: Sequence[dict], categories: Sequence[str], kind: str, rule_name: str, default: float,
                  subtitle: str, path: str | Path) -> Path:
    """How the general and unique shares move with ε (left) and the unique share within each category (right)."""
    rows = sorted(rows, key=lambda r: r["epsilon"])
    eps = np.array([r["epsilon"] for r in rows])
    figure, axes = figure_grid(12, 4.8, 1, 2, sharex=True)
    left, right = axes[0, 0], axes[0, 1]

    def pct(name, source=rows):
        return np.array([np.nan if r.get(name) is None else r[name] * 100 for r in source], dtype=np.float64)

    left.plot(eps, pct("general_share"), marker="o", color=GENERAL_COLOR, label="general (selected for all)")
    left.plot(eps, pct("unique_share"), marker="s", color="#0072B2", label="unique (selected for one)")
    left.plot(eps, pct("chance_general_share"), linestyle=":", color=GENERAL_COLOR, label="general if sets were random")
    left.plot(eps, pct("chance_unique_share"), linestyle=":", color="#0072B2", label="unique if sets were random")
    left.set_ylabel("% of all selected components (union)")
    left.set_title("Share of the union of category sets", fontsize=10)
    for category in categories:
        right.plot(eps, pct(f"unique_share_{category}"), marker="o", markersize=3.5,
                   color=category_color(category, categories), label=category_label(category))
    right.set_ylabel("% of the category's own set that is unique to it")
    right.set_title("Unique share within each category", fontsize=10)
    xlabel = "ε: absolute frequency threshold" if rule_name == "threshold" else "ε: selected fraction per category"
    for ax in (left, right):
        _style(ax)
        if rule_name != "threshold":
            ax.set_xscale("log")
        ax.axvline(default, color="#777777", linewidth=1, linestyle="--")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-2, 102)
    left.text(default, 101, " default", color="#555555", fontsize=8, va="top")
    left.legend(fontsize=8.5, frameon=False, loc="best")
    right.legend(title="category", fontsize=8.5, frameon=False, ncols=2, loc="best")
    figure.suptitle(f"ε sweep of the {KIND_NOUNS[kind]} selection ({rule_name})\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def _layer_expert_matrix(values: dict[int, np.ndarray]) -> np.ndarray:
    layers = sorted(values)
    width = max(len(v) for v in values.values())
    matrix = np.full((len(layers), width), np.nan)
    for row, layer in enumerate(layers):
        matrix[row, : len(values[layer])] = values[layer]
    return matrix


def layer_expert_heatmaps(per_category: dict[str, dict[int, np.ndarray]], categories: Sequence[str], title: str,
                          colorbar_label: str, path: str | Path, diverging: bool = False) -> Path:
    """One layer × expert heatmap per category on a shared colour scale (diverging around 0 if asked)."""
    from matplotlib.colors import TwoSlopeNorm

    rows, cols = _grid_shape(len(categories))
    matrices = {c: _layer_expert_matrix(per_category[c]) for c in categories}
    layers = sorted(next(iter(per_category.values())))
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices.values()]) if matrices else np.zeros(1)
    finite = finite if finite.size else np.zeros(1)
    n_experts = next(iter(matrices.values())).shape[1]
    height = min(max(0.15 * len(layers) * rows + 1.4 * rows + 1.0, 4.5), 13.0)
    figure, axes = figure_grid(min(4.2 * cols + 1.2, 16), height, rows, cols, sharex=True, sharey=True)
    if diverging:
        bound = float(np.abs(finite).max()) or 1.0
        norm, cmap = TwoSlopeNorm(0.0, -bound, bound), "PuOr_r"
    else:
        norm, cmap = None, "viridis"
    image = None
    from matplotlib import colormaps

    colormap = colormaps[cmap].with_extremes(bad="#EEEEEE")
    for index, category in enumerate(categories):
        ax = axes[index // cols, index % cols]
        image = ax.imshow(np.ma.masked_invalid(matrices[category]), aspect="auto", cmap=colormap, norm=norm,
                          vmin=None if norm else float(finite.min()), vmax=None if norm else float(finite.max()),
                          interpolation="nearest")
        ax.set_title(category_label(category), fontsize=10)
        step = max(1, int(np.ceil(len(layers) / 12)))
        ax.set_yticks(range(0, len(layers), step), labels=[str(layers[i]) for i in range(0, len(layers), step)])
        xstep = max(1, int(np.ceil(n_experts / 8)))
        ax.set_xticks(range(0, n_experts, xstep))
        if index % cols == 0:
            ax.set_ylabel("layer")
        if index // cols == rows - 1:
            ax.set_xlabel("expert index")
    for index in range(len(categories), rows * cols):
        axes[index // cols, index % cols].set_visible(False)
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=colorbar_label)
    figure.suptitle(title, fontsize=11)
    return save_figure(figure, path)


def change_per_layer(rows: Sequence[dict], categories: Sequence[str], kind: str, subtitle: str,
                     path: str | Path) -> Path:
    """One panel per category: selected components per layer in the base and the tuned model, and retained."""
    grid_rows, cols = _grid_shape(len(categories))
    figure, axes = figure_grid(4.3 * cols, 3.0 * grid_rows + 0.9, grid_rows, cols, sharex=True, sharey=True)
    layers = sorted({r["layer"] for r in rows})
    for index, category in enumerate(categories):
        ax = axes[index // cols, index % cols]
        mine = {r["layer"]: r for r in rows if r["category"] == category}
        for key, color, style, label in (("base", BASE_COLOR, "-", "base"), ("tuned", TUNED_COLOR, "--", "tuned"),
                                         ("retained", RETAINED_COLOR, ":", "retained (in both)")):
            ax.plot(layers, [mine[j][key] if j in mine else 0 for j in layers], linestyle=style, color=color,
                    marker="o", markersize=2.5, linewidth=1.4, label=label)
        ax.set_title(category_label(category), fontsize=10)
        _style(ax)
        if index // cols == grid_rows - 1:
            _layer_axis(ax, layers)
        if index % cols == 0:
            ax.set_ylabel(f"selected {KIND_UNITS[kind]}")
    for index in range(len(categories), grid_rows * cols):
        axes[index // cols, index % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    figure.suptitle(f"{KIND_NOUNS[kind]} per layer, base vs tuned\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def set_changes(rows: Sequence[dict], categories: Sequence[str], kind: str, subtitle: str, path: str | Path) -> Path:
    """Per category: retained and gained above the axis, lost below; Jaccard written over each bar."""
    figure, axes = figure_grid(8.5, 4.8)
    ax = axes[0, 0]
    by_category = {r["category"]: r for r in rows}
    x = np.arange(len(categories))
    retained = np.array([by_category[c]["retained"] for c in categories], dtype=np.float64)
    gained = np.array([by_category[c]["gained"] for c in categories], dtype=np.float64)
    lost = np.array([by_category[c]["lost"] for c in categories], dtype=np.float64)
    ax.bar(x, retained, color=RETAINED_COLOR, label="retained (in both)", width=0.6)
    ax.bar(x, gained, bottom=retained, color=GAINED_COLOR, label="gained (tuned only)", width=0.6)
    ax.bar(x, -lost, color=LOST_COLOR, label="lost (base only)", width=0.6, hatch="//", edgecolor="white")
    top = float((retained + gained).max()) if len(x) else 0.0
    bottom = float(lost.max()) if len(x) else 0.0
    span = max(top + bottom, 1.0)
    ax.set_ylim(-bottom - 0.05 * span, top + 0.14 * span)
    for i, c in enumerate(categories):
        jac = by_category[c]["jaccard"]
        text = "J = n/a" if jac is None or np.isnan(jac) else f"J = {jac:.2f}"
        ax.text(i, retained[i] + gained[i] + 0.02 * span, text, ha="center", va="bottom", fontsize=8.5)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels=[category_label(c) for c in categories])
    ax.set_xlabel("category")
    ax.set_ylabel(f"{KIND_UNITS[kind]} (lost shown below 0)")
    _style(ax)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.set_title(f"{KIND_NOUNS[kind]} retained, gained and lost from base to tuned\n{subtitle}", fontsize=11)
    return save_figure(figure, path)


def routing_shift(rows: Sequence[dict], categories: Sequence[str], subtitle: str, path: str | Path) -> Path:
    """Jensen–Shannon divergence of the routing distribution per layer, one line per category."""
    figure, axes = figure_grid(8, 4.5)
    ax = axes[0, 0]
    layers = sorted({r["layer"] for r in rows})
    for category in categories:
        values = {r["layer"]: r["js_divergence_bits"] for r in rows if r["category"] == category}
        ax.plot(layers, [np.nan if values.get(j) is None else values[j] for j in layers], marker="o", markersize=3.5,
                color=category_color(category, categories), label=category_label(category))
    _style(ax)
    _layer_axis(ax, layers)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("Jensen–Shannon divergence (bits)")
    ax.legend(title="category", frameon=False, ncols=min(6, len(categories)), loc="upper center",
              bbox_to_anchor=(0.5, -0.15))
    ax.set_title(f"Routing shift per layer, base → tuned (0 = same expert distribution, 1 = disjoint)\n{subtitle}",
                 fontsize=11)
    return save_figure(figure, path)


def class_transitions(matrix: np.ndarray, classes: Sequence[str], kind: str, subtitle: str, path: str | Path) -> Path:
    """Heatmap of how many components moved from each class in the base to each class in the tuned model."""
    from matplotlib.colors import LogNorm

    figure, axes = figure_grid(6.2, 5.2)
    ax = axes[0, 0]
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = np.where(matrix > 0, matrix, np.nan)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    image = _annotated_heatmap(ax, shown, list(classes), list(classes), fmt="{:,.0f}",
                               norm=LogNorm(vmin=1, vmax=max(top, 1.0) * 1.0001), nan_text="0")
    ax.set_xlabel("class in the tuned model")
    ax.set_ylabel("class in the base model")
    figure.colorbar(image, ax=ax, shrink=0.85, label=f"{KIND_UNITS[kind]} (log scale)")
    ax.set_title(f"How {KIND_UNITS[kind]} changed class, base → tuned\n{subtitle}", fontsize=10.5)
    return save_figure(figure, path)
