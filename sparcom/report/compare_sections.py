"""The report's sections for a compare output (base → tuned): per kind, the retained, gained and lost
components, per-layer Jaccard, class transitions and the routing shift. To add one, add it to
:data:`COMPARE_SECTIONS`."""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from sparcom.artifacts.summaries import CompareSummary, KindComparison
from sparcom.data.schema import category_label
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report import svg
from sparcom.report.context import Context, category_attrs, category_labels, layer_attrs, section_id
from sparcom.report.files import short_model_name
from sparcom.report.plots import GAINED_COLOR, LOST_COLOR, RETAINED_COLOR
from sparcom.report.studies import Output
from sparcom.report.widgets import (
    Markup,
    Section,
    details,
    fmt_int,
    fmt_num,
    heatmap,
    not_computed,
    note,
    png_figure,
    table,
)


def compare_sets(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    cats = output.summary.categories
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, **vars(k.per_category[c]),
             **vars(k.correlation[c])} for c in cats]
    tab = table(rows, [("category", "category"), ("base", "base"), ("tuned", "tuned"), ("retained", "retained"),
                       ("gained", "gained"), ("lost", "lost"), ("jaccard", "Jaccard"),
                       ("spearman", "Spearman ρ of p"), ("mean_abs_change", "mean |Δp|")],
                row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=section_id(output, kind, "changes-table"))
    structure = [{"statistic": name, **vars(v)} for name, v in k.structure.items()]
    struct = details("every set statistic, base → tuned", table(structure, [("statistic", "statistic"),
                                                                             ("base", "base"), ("tuned", "tuned"),
                                                                             ("change", "change")]))
    bars = svg.stacked_bars([category_label(c) for c in cats], [
        (name, colour, [getattr(k.per_category[c], name) for c in cats])
        for name, colour in (("retained", RETAINED_COLOR), ("gained", GAINED_COLOR), ("lost", LOST_COLOR))],
        x_title="category", y_title=KIND_UNITS.get(kind, kind), width=520, layer_attr=False, tip_prefix="")
    return [Section(section_id(output, kind, "changes"), "Retained, gained and lost",
                    f'<div class="two">{tab}{bars}</div>{struct}', 4)]


def compare_per_layer(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    rows = [r for r in (output.table("compare_per_layer") or []) if r.get("kind") == kind]
    if not rows:
        return []
    cats = output.summary.categories
    layers = sorted({int(r["layer"]) for r in rows})
    cell = {(int(r["layer"]), r["category"]): r for r in rows}
    values = [[(cell.get((j, c)) or {}).get("jaccard") for j in layers] for c in cats]
    tips = []
    for c in cats:
        line = []
        for j in layers:
            r = cell.get((j, c)) or {}
            line.append(f"layer {j} · {category_label(c)}: base {fmt_int(r.get('base'))}, tuned {fmt_int(r.get('tuned'))},"
                        f" retained {fmt_int(r.get('retained'))}, gained {fmt_int(r.get('gained'))}, lost "
                        f"{fmt_int(r.get('lost'))}; Jaccard {fmt_num(r.get('jaccard'))}")
        tips.append(line)
    body = heatmap(values, category_labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                   tips=tips, vmin=0.0, vmax=1.0, row_attrs=category_attrs(cats), col_attrs=layer_attrs(layers),
                   compact=True)
    return [Section(section_id(output, kind, "layers"), "Jaccard of base and tuned sets per layer", body, 4)]


def compare_transitions(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    classes, matrix = k.classes, k.transitions
    if not classes:
        return []
    tips = [[f"{fmt_int(matrix[a][b])} {KIND_UNITS.get(kind, kind)}: {classes[a]} in the base → {classes[b]} "
             "in the tuned model" for b in range(len(classes))] for a in range(len(classes))]
    shown = [[math.log10(1 + v) for v in row] for row in matrix]
    body = heatmap(shown, classes, classes, row_title="base", col_title="tuned", tips=tips,
                   fmt=lambda v: fmt_int(round(10 ** v - 1)))
    return [Section(section_id(output, kind, "transitions"), "Class transitions (colour: log scale)", body, 4)]


def routing_shift(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    if kind != "expert":
        return []
    rows = output.table("routing_shift") or []
    if not rows:
        return []
    cats = output.summary.categories
    layers = sorted({int(r["layer"]) for r in rows})
    cell = {(int(r["layer"]), r["category"]): r for r in rows}
    values = [[(cell.get((j, c)) or {}).get("js_divergence_bits") for j in layers] for c in cats]
    body = heatmap(values, category_labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                   vmin=0.0, row_attrs=category_attrs(cats), col_attrs=layer_attrs(layers), compact=True)
    figure = output.plot("routing_shift.png")
    if figure:
        body += png_figure(figure, "Routing shift per layer")
    return [Section(section_id(output, kind, "routing"), "Routing shift (Jensen–Shannon divergence, bits)", body, 4)]


COMPARE_SECTIONS: list[Callable[[Context, Output, str, KindComparison], list[Section]]] = [
    compare_sets, compare_per_layer, compare_transitions, routing_shift]


def compare_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("compare"):
        s: CompareSummary = output.summary
        title = (f"Base → tuned: {short_model_name(s.header.model.name_or_path)} → "
                 f"{short_model_name(s.tuned.model.name_or_path)}")
        notes = "".join(note(escape(n)) for n in s.notes)
        sections.append(Section(section_id(output), title, notes + note(escape(s.rule.description)), 2))
        for kind, k in s.kinds.items():
            sections.append(Section(section_id(output, kind), KIND_NOUNS.get(kind, kind), "", 3))
            for section in COMPARE_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections and len(ctx.study.of("identify")) >= 2:
        sections.append(Section("compare", "Base → tuned", not_computed(
            "Base → tuned comparison", "Pass a 'sparcom compare' output folder."), 2))
    return sections


__all__ = ["COMPARE_SECTIONS", "compare_sections"]
