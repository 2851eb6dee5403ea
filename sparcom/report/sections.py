"""The sections of the HTML report, one small function each, rendered from whatever outputs a study has.

A section function takes the :class:`Context` (and the output it describes) and returns a list of
:class:`~sparcom.report.widgets.Section` — empty when it has nothing to show, or a "not computed" line where a
reader would expect the result. To add a section, write a function and add it to one of the lists at the end
(:data:`IDENTIFY_SECTIONS`, :data:`COMPARE_SECTIONS`, :data:`CAUSAL_SECTIONS`, :data:`PAGE`). Results that other
work adds to the summaries (validity measures, new causal statistics) are shown by the generic renderers
(:func:`generic_value`) until they get a section of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from sparcom.artifacts.causal import CausalSummary, CausalTarget
from sparcom.artifacts.summaries import CompareSummary, IdentifySummary, KindComparison, KindSets, ValidityHeadline
from sparcom.artifacts.summary import Header
from sparcom.data.schema import category_label
from sparcom.examples.files import Examples
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report import svg
from sparcom.report.cards import render_cards
from sparcom.report.files import short_model_name
from sparcom.report.plots import GAINED_COLOR, GENERAL_COLOR, LOST_COLOR, RETAINED_COLOR, SHARED_COLOR
from sparcom.report.studies import Output, Study
from sparcom.report.verdicts import specific_headline, verdict_label, verdict_text
from sparcom.report.widgets import (
    Markup,
    Section,
    cat_badge,
    details,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_signed,
    heatmap,
    key_values,
    not_computed,
    note,
    png_figure,
    table,
)

DEFAULT_CARDS = 6
UNIQUE_COLOR = "#E69F00"


@dataclass
class Context:
    """What every section may use: the study, the categories in display order and the card settings."""

    study: Study
    cards_per_category: int = DEFAULT_CARDS
    categories: list[str] = field(default_factory=list)
    #: Extra per-component scores for the cards: name → function(identify output, kind, p [K, N]) → [K, N] or None.
    score_sources: dict[str, Callable[[Output, str, np.ndarray], np.ndarray | None]] = field(default_factory=dict)

    def badge(self, category: str) -> str:
        return cat_badge(category, self.categories)


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def _sid(output: Output, *parts: str) -> str:
    base = "-".join([output.kind, output.name, *parts])
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base)


def _cat_attrs(categories: Sequence[str]) -> list[dict[str, Any]]:
    return [{"data-cat": c} for c in categories]


def _layer_attrs(layers: Sequence[int]) -> list[dict[str, Any]]:
    return [{"data-layer": j} for j in layers]


def _labels(categories: Sequence[str]) -> list[str]:
    return [category_label(c) for c in categories]


# --------------------------------------------------------------------------------------------- page head


def overview(ctx: Context) -> list[Section]:
    """At a glance: one line per output with its headline numbers (the causal check: its stored decisions)."""
    items = []
    for output in ctx.study.outputs:
        glance = GLANCES.get(output.kind)
        items += glance(output) if glance else []
    if not items:
        return []
    return [Section("overview", "At a glance", f'<ul class="glance">{"".join(items)}</ul>')]


def _identify_glance(output: Output) -> list[str]:
    s: IdentifySummary = output.summary
    return [f"<li><b>{escape(short_model_name(s.header.model.name_or_path))}</b> — {fmt_int(k.selected_any)} "
            f"{escape(KIND_UNITS.get(kind, kind))} selected by at least one category ({escape(s.rule.description)}); "
            f"<b>{fmt_int(k.general)}</b> general ({fmt_pct(k.shares.get('general_share'))}), "
            f"<b>{fmt_int(k.unique_total)}</b> unique to one category ({fmt_pct(k.shares.get('unique_share'))}; "
            f"{fmt_pct(k.chance.get('chance_unique_share'))} if the sets were drawn at random).</li>"
            for kind, k in s.kinds.items()]


def _compare_glance(output: Output) -> list[str]:
    s: CompareSummary = output.summary
    return [f"<li><b>{escape(short_model_name(s.header.model.name_or_path))} → "
            f"{escape(short_model_name(s.tuned.model.name_or_path))}</b> — {escape(KIND_NOUNS.get(kind, kind))}: "
            f"mean Jaccard of the base and tuned sets {fmt_num(_mean([c.jaccard for c in k.per_category.values()]))}."
            "</li>" for kind, k in s.kinds.items()]


def _ablate_glance(output: Output) -> list[str]:
    s: CausalSummary = output.summary
    items = []
    for name, t in s.targets.items():
        tests = [r for r in t.tests if r.tested]
        model = escape(short_model_name(s.header.model.name_or_path))
        if not tests:
            items.append(f"<li><b>causal check ({escape(name)})</b> on {model} — no category could be tested "
                         f"({escape(t.tests[0].decision.reason if t.tests else 'no tests')}).</li>")
            continue
        specific, tested = specific_headline(tests)
        stats = t.statistics
        items.append(
            f"<li><b>causal check ({escape(name)})</b> on {model} — deactivating a category's set raises its own NLL "
            f"by {fmt_signed(_mean([r.damage.estimate for r in tests]))} nats/token on average, the other "
            f"categories' by {fmt_signed(_mean([r.others for r in tests]))}; "
            f"{fmt_signed(_mean([r.damage.excess for r in tests]))} beyond random sets of the same per-layer shape. "
            f"<b>Specific in {specific} of {tested} categories</b> after Holm (α = {fmt_num(stats.alpha)}, "
            f"{escape(stats.test_used)} test, {stats.random_sets} random sets); critical in "
            f"{sum(r.decision.damage_significant for r in tests)}.</li>")
    return items


def _examples_glance(output: Output) -> list[str]:
    e: Examples = output.summary
    return [f"<li><b>token examples</b> for {len(e.components)} components, top {fmt_int(e.top_k)} instructions "
            "each.</li>"]


GLANCES: dict[str, Callable[[Output], list[str]]] = {
    "identify": _identify_glance, "compare": _compare_glance, "ablate": _ablate_glance, "examples": _examples_glance}


def provenance(ctx: Context) -> list[Section]:
    """Where every number comes from: models, data, settings, software, per output (one header for every kind)."""
    blocks = []
    for output in ctx.study.outputs:
        pairs: list[tuple[str, Any]] = [("folder", str(output.path))]
        if output.header is not None:
            pairs += _header_pairs(output.header)
        pairs += PROVENANCE_EXTRAS.get(output.kind, lambda o: [])(output)
        blocks.append(f'<div class="prov"><h4>{escape(output.kind)} · {escape(output.name)}</h4>'
                      f"{key_values(pairs)}</div>")
    return [Section("provenance", "Provenance and settings",
                    details(f"{len(blocks)} inputs: models, data, settings and software versions",
                            f'<div class="prov-grid">{"".join(blocks)}</div>'))]


def _header_pairs(h: Header) -> list[tuple[str, Any]]:
    return [("model", h.model.name_or_path), ("architecture", h.model.architecture),
            ("weights fingerprint", (h.model.fingerprint or "")[:16] or None), ("dtype", h.model.dtype),
            ("source run", h.data.run), ("data", h.data.path), ("data sha256", (h.data.sha256 or "")[:16] or None),
            ("instructions", _per_cat(h.data.instructions)), ("tokens", _per_cat(h.data.tokens)),
            ("measurement", _compact(h.measurement)), ("settings", _compact(h.settings)),
            ("software", _compact(h.software))]


def _compare_extras(output: Output) -> list[tuple[str, Any]]:
    s: CompareSummary = output.summary
    return [("rule", s.rule.description), ("tuned model", s.tuned.model.name_or_path),
            ("tuned run", s.tuned.data.run), ("compared despite", "; ".join(s.forced_despite) or "nothing")]


def _ablate_extras(output: Output) -> list[tuple[str, Any]]:
    s: CausalSummary = output.summary
    return [("selection", s.selection.get("path")), ("selection rule", s.selection.get("description")),
            ("wall time (s)", s.wall_time_seconds)]


def _examples_extras(output: Output) -> list[tuple[str, Any]]:
    e: Examples = output.summary
    return [("model", e.model), ("selection", e.selection), ("data", e.data), ("rows", e.rows_recorded),
            ("top K", e.top_k), ("window", e.window), ("scope", e.scope), ("wall time (s)", e.wall_time_seconds)]


PROVENANCE_EXTRAS: dict[str, Callable[[Output], list[tuple[str, Any]]]] = {
    "identify": lambda o: [("rule", o.summary.rule.description)], "compare": _compare_extras,
    "ablate": _ablate_extras, "examples": _examples_extras}


def _per_cat(values: dict | None) -> str | None:
    if not values:
        return None
    return " · ".join(f"{category_label(c)} {fmt_num(v)}" for c, v in values.items())


def _compact(values: dict | None) -> str | None:
    if not values:
        return None
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)


# --------------------------------------------------------------------------------------------- identify


def selection_summary(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """General / shared / unique per category, with the chance baseline and bootstrap intervals."""
    cats = output.summary.categories
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, "selected": k.selected[c], "unique": k.unique[c],
             "unique_share": k.shares.get(f"unique_share_{c}"), "general_share": k.shares.get(f"general_share_{c}")}
            for c in cats]
    body = table(rows, [("category", "category"), ("selected", "selected"), ("unique", "unique"),
                        ("unique_share", "unique share"), ("general_share", "general share")],
                 formats={"unique_share": fmt_pct, "general_share": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, kind, "summary"))
    shared = ", ".join(f"by {m}: {fmt_int(v)}" for m, v in k.shared_by.items())
    totals = [("components", k.components), ("layers", k.layers), ("selected by at least one category", k.selected_any),
              ("general (in every set)", Markup(f'<span data-stat="general">{fmt_int(k.general)}</span> '
                                                f'({fmt_pct(k.shares.get("general_share"))} of the selected; chance '
                                                f'{fmt_num(k.chance.get("chance_general"))})')),
              ("shared", shared or None),
              ("unique to one category", Markup(f'<span data-stat="unique_total">{fmt_int(k.unique_total)}'
                                                f'</span> ({fmt_pct(k.shares.get("unique_share"))}; chance '
                                                f'{fmt_pct(k.chance.get("chance_unique_share"))})')),
              ("never selected", k.never_selected), ("dead (never active)", k.activity.get("dead")),
              ("always on", k.activity.get("always_on"))]
    body = f'<div class="two">{body}{key_values(totals)}</div>'
    boot = k.bootstrap
    if boot is not None and boot.available:
        intervals = [{"statistic": name, "estimate": v.estimate, "low": v.low, "high": v.high}
                     for name, v in boot.intervals.items()]
        body += details(f"bootstrap intervals ({fmt_pct(boot.level)}, {fmt_int(boot.replicates)} replicates)",
                        table(intervals, [("statistic", "statistic"), ("estimate", "estimate"), ("low", "low"),
                                          ("high", "high")]))
    else:
        body += not_computed("Confidence intervals", (boot.note or "") if boot else "")
    body += note("<b>General</b>: selected for every category; <b>unique</b>: for one category only. The chance "
                 "values are what independent random sets of the same sizes would give.")
    return [Section(_sid(output, kind, "sets"), "General, shared and unique", body, 4)]


def per_layer(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Selected components per layer and category (heatmap) and their general/shared/unique split (bars)."""
    cats = output.summary.categories
    selected = [r for r in (output.table("selected_per_layer") or []) if r.get("kind") == kind]
    sets_rows = [r for r in (output.table("sets_per_layer") or []) if r.get("kind") == kind]
    if not selected and not sets_rows:
        return [Section(_sid(output, kind, "layers"), "Per layer",
                        not_computed("Per-layer counts", "the identify output has no tables/selected_per_layer.csv"), 4)]
    layers = sorted({int(r["layer"]) for r in selected} | {int(r["layer"]) for r in sets_rows})
    body = ""
    if selected:
        cell = {(int(r["layer"]), r["category"]): r for r in selected}
        values = [[(cell.get((j, c)) or {}).get("selected") for j in layers] for c in cats]
        tips = [[f"layer {j} · {category_label(c)}: {fmt_int((cell.get((j, c)) or {}).get('selected'))} of "
                 f"{fmt_int((cell.get((j, c)) or {}).get('components'))} selected "
                 f"({fmt_pct((cell.get((j, c)) or {}).get('fraction'))})" for j in layers] for c in cats]
        body += ("<h5>Selected per category and layer</h5>"
                 + heatmap(values, _labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                           fmt=fmt_int, tips=tips, row_attrs=_cat_attrs(cats), col_attrs=_layer_attrs(layers),
                           heat_id=_sid(output, kind, "layer-heat"), compact=True))
    if sets_rows:
        by_layer = {int(r["layer"]): r for r in sets_rows}
        shared = [sum(float(by_layer[j].get(f"shared_by_{m}") or 0) for m in range(2, len(cats))) for j in layers]
        series = [("general", GENERAL_COLOR, [by_layer[j].get("general") for j in layers]),
                  ("shared by 2–5" if len(cats) == 6 else "shared", SHARED_COLOR, shared),
                  ("unique", UNIQUE_COLOR, [by_layer[j].get("unique_total") for j in layers])]
        body += ("<h5>General, shared and unique per layer</h5>"
                 + svg.stacked_bars(layers, series, x_title="layer", y_title=f"selected {KIND_UNITS.get(kind, kind)}"))
    return [Section(_sid(output, kind, "layers"), "Per layer", body, 4)]


def overlap(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Pairwise Jaccard and containment of the category sets."""
    o = k.overlap
    if o is None:
        return []
    cats, labels, noun = o.categories, _labels(o.categories), KIND_NOUNS.get(kind, kind)
    jt = [[f"{labels[a]} ∩ {labels[b]}: {fmt_int(o.intersection[a][b])} shared; Jaccard {fmt_num(o.jaccard[a][b])}"
           for b in range(len(cats))] for a in range(len(cats))]
    ct = [[f"{fmt_pct(o.containment[a][b])} of the {fmt_int(k.selected.get(cats[a]))} {labels[a]} {noun} are also "
           f"{labels[b]} {noun}" for b in range(len(cats))] for a in range(len(cats))]
    common = dict(row_title="", col_title="", vmin=0.0, vmax=1.0, row_attrs=_cat_attrs(cats), col_attrs=_cat_attrs(cats))
    body = ('<div class="two"><div><h5>Jaccard |A∩B| / |A∪B|</h5>'
            + heatmap(o.jaccard, labels, labels, tips=jt, heat_id=_sid(output, kind, "jaccard"), **common)
            + '</div><div><h5>Containment |A∩B| / |A| (row A in column B)</h5>'
            + heatmap(o.containment, labels, labels, fmt=fmt_pct, tips=ct, **common) + "</div></div>")
    return [Section(_sid(output, kind, "overlap"), "Overlap between categories", body, 4)]


def epsilon_sweep(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """How the general and unique shares change with ε (line chart and table)."""
    rows = [r for r in (output.table("epsilon_sweep") or []) if r.get("kind") == kind]
    if not rows:
        return [Section(_sid(output, kind, "sweep"), "ε sweep",
                        not_computed("ε sweep", "identify ran without it (sweep off)"), 4)]
    rows.sort(key=lambda r: r["epsilon"])
    eps = [r["epsilon"] for r in rows]
    default = next((r["epsilon"] for r in rows if r.get("is_default")), None)
    chart = svg.line_chart(eps, [
        ("general share", GENERAL_COLOR, [r.get("general_share") for r in rows], False),
        ("unique share", UNIQUE_COLOR, [r.get("unique_share") for r in rows], False),
        ("unique share by chance", UNIQUE_COLOR, [r.get("chance_unique_share") for r in rows], True),
    ], x_title="ε (fraction selected per category)", y_title="share of the selected", marker=default, y_max=1.0)
    columns = [("epsilon", "ε"), ("selected_any", "selected (any)"), ("general", "general"),
               ("unique_total", "unique"), ("general_share", "general share"), ("unique_share", "unique share"),
               ("chance_unique_share", "unique share by chance")]
    tab = table(rows, columns, formats={"general_share": fmt_pct, "unique_share": fmt_pct,
                                        "chance_unique_share": fmt_pct},
                row_attrs=lambda r: {"class": "default" if r.get("is_default") else None},
                table_id=_sid(output, kind, "sweep-table"))
    return [Section(_sid(output, kind, "sweep"), "ε sweep", f'<div class="two">{chart}{tab}</div>', 4)]


def validity(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Validity measures of the selection (DESIGN §6) when the summary carries them (shown generically)."""
    s: IdentifySummary = output.summary
    found = k.extra.get("validity") or (s.validity[kind].raw if kind in s.validity else None)
    if not found:
        body = not_computed("Validity measures",
                            "This selection has no held-out decoding accuracy, cross-source agreement, stability or "
                            "per-component specificity yet (DESIGN §6).")
    elif kind in s.validity:
        body = (_validity_headline(output, kind, s.validity[kind].headline)
                + details("every validity measure", generic_value(found, s.categories)))
    else:
        body = generic_value(found, s.categories)
    return [Section(_sid(output, kind, "validity"), "Validity", body, 4)]


def _validity_headline(output: Output, kind: str, h: ValidityHeadline) -> str:
    """The numbers a reader wants first: each decoder against its random sets, then all components, chance,
    stability and the cross-source agreement."""
    decoders = [{"decoder": name, **vars(d)} for name, d in h.decoders.items()]
    body = table(decoders, [("decoder", "held-out decoder"), ("accuracy", "accuracy"), ("ci_low", "CI low"),
                            ("ci_high", "CI high"), ("random_mean", "random sets"), ("p_value", "p")],
                 formats={k: fmt_pct for k in ("accuracy", "ci_low", "ci_high", "random_mean")},
                 table_id=_sid(output, kind, "validity-decoding"))
    rest = [{"all_components": h.all_components, "chance": h.chance, "stability": h.stability,
             "cross_source_within": h.cross_source_within, "cross_source_across": h.cross_source_across}]
    return body + table(rest, [("all_components", "centroid on all components"), ("chance", "chance"),
                               ("stability", "fold stability (Jaccard)"), ("cross_source_within", "cross-source within"),
                               ("cross_source_across", "across")],
                        formats={"all_components": fmt_pct, "chance": fmt_pct}, sortable=False,
                        table_id=_sid(output, kind, "validity-headline"))


EXPERT_FIGURES = (("expert_frequency.png", "Expert routing frequency per category"),
                  ("expert_frequency_deviation.png", "Expert routing frequency minus its mean over categories"),
                  ("expert_neuron_per_expert.png", "Selected expert neurons per expert and layer"))


def expert_figures(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Static figures that read better than tables: layer × expert heatmaps of MoE runs."""
    if kind not in ("expert", "expert_neuron"):
        return []
    figures = [png_figure(data, caption) for name, caption in EXPERT_FIGURES
               if (kind == "expert") == name.startswith("expert_frequency") and (data := output.plot(name))]
    if not figures:
        return []
    return [Section(_sid(output, kind, "figures"), "Layer × expert", "".join(figures), 4)]


def cards(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Cards for the top members of each category's set, by frequency and by specificity."""
    return [Section(_sid(output, kind, "cards"), f"{KIND_NOUNS.get(kind, kind)}: cards",
                    render_cards(ctx, output, kind), 4)]


IDENTIFY_SECTIONS: list[Callable[[Context, Output, str, KindSets], list[Section]]] = [
    selection_summary, per_layer, overlap, epsilon_sweep, validity, expert_figures, cards]


def identify_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("identify"):
        s: IdentifySummary = output.summary
        title = f"Selection: {short_model_name(s.header.model.name_or_path)}" + (f" · {s.rule.name}" if s.rule.name else "")
        sections.append(Section(_sid(output), title,  # one model, two rules: the rule tells them apart
                                note(f"{escape(s.rule.description)}. Source run "
                                     f"<code>{escape(str(s.header.data.run))}</code>."), 2))
        for kind, k in s.kinds.items():
            sections.append(Section(_sid(output, kind), f"{KIND_NOUNS.get(kind, kind)} ({KIND_UNITS.get(kind, kind)})",
                                    "", 3))
            for section in IDENTIFY_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections:
        sections.append(Section("selection", "Selection", not_computed(
            "Selection (ISNs / ISEs)", "Pass a 'sparcom identify' output folder."), 2))
    return sections


# --------------------------------------------------------------------------------------------- compare


def compare_sets(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    cats = output.summary.categories
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, **vars(k.per_category[c]),
             **vars(k.correlation[c])} for c in cats]
    tab = table(rows, [("category", "category"), ("base", "base"), ("tuned", "tuned"), ("retained", "retained"),
                       ("gained", "gained"), ("lost", "lost"), ("jaccard", "Jaccard"),
                       ("spearman", "Spearman ρ of p"), ("mean_abs_change", "mean |Δp|")],
                row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, kind, "changes-table"))
    structure = [{"statistic": name, **vars(v)} for name, v in k.structure.items()]
    struct = details("every set statistic, base → tuned", table(structure, [("statistic", "statistic"),
                                                                             ("base", "base"), ("tuned", "tuned"),
                                                                             ("change", "change")]))
    bars = svg.stacked_bars([category_label(c) for c in cats], [
        (name, colour, [getattr(k.per_category[c], name) for c in cats])
        for name, colour in (("retained", RETAINED_COLOR), ("gained", GAINED_COLOR), ("lost", LOST_COLOR))],
        x_title="category", y_title=KIND_UNITS.get(kind, kind), width=520, layer_attr=False, tip_prefix="")
    return [Section(_sid(output, kind, "changes"), "Retained, gained and lost",
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
    body = heatmap(values, _labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                   tips=tips, vmin=0.0, vmax=1.0, row_attrs=_cat_attrs(cats), col_attrs=_layer_attrs(layers),
                   compact=True)
    return [Section(_sid(output, kind, "layers"), "Jaccard of base and tuned sets per layer", body, 4)]


def compare_transitions(ctx: Context, output: Output, kind: str, k: KindComparison) -> list[Section]:
    classes, matrix = k.classes, k.transitions
    if not classes:
        return []
    tips = [[f"{fmt_int(matrix[a][b])} {KIND_UNITS.get(kind, kind)}: {classes[a]} in the base → {classes[b]} "
             "in the tuned model" for b in range(len(classes))] for a in range(len(classes))]
    shown = [[math.log10(1 + v) for v in row] for row in matrix]
    body = heatmap(shown, classes, classes, row_title="base", col_title="tuned", tips=tips,
                   fmt=lambda v: fmt_int(round(10 ** v - 1)))
    return [Section(_sid(output, kind, "transitions"), "Class transitions (colour: log scale)", body, 4)]


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
    body = heatmap(values, _labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                   vmin=0.0, row_attrs=_cat_attrs(cats), col_attrs=_layer_attrs(layers), compact=True)
    figure = output.plot("routing_shift.png")
    if figure:
        body += png_figure(figure, "Routing shift per layer")
    return [Section(_sid(output, kind, "routing"), "Routing shift (Jensen–Shannon divergence, bits)", body, 4)]


COMPARE_SECTIONS: list[Callable[[Context, Output, str, KindComparison], list[Section]]] = [
    compare_sets, compare_per_layer, compare_transitions, routing_shift]


def compare_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("compare"):
        s: CompareSummary = output.summary
        title = (f"Base → tuned: {short_model_name(s.header.model.name_or_path)} → "
                 f"{short_model_name(s.tuned.model.name_or_path)}")
        notes = "".join(note(escape(n)) for n in s.notes)
        sections.append(Section(_sid(output), title, notes + note(escape(s.rule.description)), 2))
        for kind, k in s.kinds.items():
            sections.append(Section(_sid(output, kind), KIND_NOUNS.get(kind, kind), "", 3))
            for section in COMPARE_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections and len(ctx.study.of("identify")) >= 2:
        sections.append(Section("compare", "Base → tuned", not_computed(
            "Base → tuned comparison", "Pass a 'sparcom compare' output folder."), 2))
    return sections


# --------------------------------------------------------------------------------------------- causal

def causal_matrix(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """ΔNLL per ablated and evaluated category, with the random sets and each cell's (descriptive) z and p in the
    hover; the decisions are the tests' (next section), so no cell is marked significant here."""
    ablated, evaluated, seeds = t.ablated, t.evaluated, t.random_sets
    unit = KIND_NOUNS.get("neuron") if name == "neurons" else name
    tips = [[f"{category_label(ca)} {unit} ablated → {category_label(ce)}: ΔNLL {fmt_signed(t.delta[a][j])}; "
             f"random sets {fmt_signed(t.random_mean[a][j])} ± {fmt_num(t.random_std[a][j])} (n={seeds}); "
             f"z {fmt_num(t.cell_z[a][j])}; p {fmt_num(t.cell_p[a][j])} (this cell alone, unadjusted)"
             for j, ce in enumerate(evaluated)] for a, ca in enumerate(ablated)]
    rows = [f"{category_label(c)} ({fmt_int(t.set_sizes.get(c))})" for c in ablated]
    common = dict(row_title="ablated (size)", col_title="evaluated", diverging=True, tips=tips, fmt=fmt_signed,
                  row_attrs=_cat_attrs(ablated), col_attrs=_cat_attrs(evaluated))
    body = ('<div class="two"><div><h5>ΔNLL (nats per response token)</h5>'
            + heatmap(t.delta, rows, _labels(evaluated), heat_id=_sid(output, name, "delta"), **common) + "</div>")
    if seeds:
        body += ("<div><h5>ΔNLL minus the random sets' mean</h5>"
                 + heatmap(t.excess, rows, _labels(evaluated), **common) + "</div>")
    else:
        body += not_computed("Random baseline", "the check ran with --seeds 0")
    body += "</div>" + note(f"Random sets: {seeds} with the same per-layer counts as each set. The hover's per-cell "
                            "z and p describe one cell against its random sets; they are not decisions.")
    return [Section(_sid(output, name, "matrix"), "Damage matrix", body, 4)]


def causal_tests(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """Each category's damage and specificity tests and the stored decision (Holm over the categories)."""
    if t.statistics is None or not t.tests:
        return []
    stats = t.statistics
    rows = [{"category": Markup(ctx.badge(r.ablated)), "_cat": r.ablated, "damage": r.damage.estimate,
             "damage_excess": r.damage.excess, "damage_p_holm": r.damage.p_holm, "specificity": r.specificity.estimate,
             "specificity_excess": r.specificity.excess, "specificity_p_holm": r.specificity.p_holm,
             "test": " / ".join(dict.fromkeys((r.damage.test, r.specificity.test))),
             "verdict": Markup(f'<span title="{escape(verdict_text(r))}">{escape(verdict_label(r.decision))}</span>')}
            for r in t.tests]
    body = table(rows, [("category", "ablated"), ("damage", "own ΔNLL"), ("damage_excess", "beyond random"),
                        ("damage_p_holm", "p (Holm)"), ("specificity", "own − others"),
                        ("specificity_excess", "beyond random"), ("specificity_p_holm", "p (Holm)"),
                        ("test", "test"), ("verdict", "verdict")],
                 formats={k: fmt_signed for k in ("damage", "damage_excess", "specificity", "specificity_excess")},
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, name, "tests-table"))
    specific, tested = specific_headline(t.tests)
    body += note(f"Specific in {specific} of {tested} tested categories: Holm-adjusted p ≤ α = {fmt_num(stats.alpha)} "
                 f"for both tests ({escape(stats.test_used)} p-values, {stats.random_sets} random sets, "
                 f"{fmt_pct(stats.level)} bootstrap intervals over {stats.replicates} resamples of the rows).")
    return [Section(_sid(output, name, "tests"), "Damage and specificity tests", body, 4)]


def causal_extra(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """Whatever else a target carries (expert removal counts, fold sizes, later statistics): shown generically."""
    if not t.extra:
        return []
    cats = list(dict.fromkeys([*t.ablated, *t.evaluated]))
    body = "".join(f"<h5>{escape(key.replace('_', ' '))}</h5>"
                   + generic_value(value, cats, rows=t.ablated, cols=t.evaluated) for key, value in t.extra.items())
    return [Section(_sid(output, name, "more"), "Further statistics", body, 4)]


def causal_dose(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """The dose–response figure of a target (``ablate --dose-response``), drawn when the check was written."""
    data = output.plot(f"dose_response_{name}.png")
    if data is None:
        return []
    body = png_figure(data, f"Dose–response of {name}: ΔNLL against the top-k of each set") + note(
        "Each category's set is deactivated top-k first (ranked by the selection rule's score) for k on a geometric "
        "grid up to its size: ΔNLL on its own category and the mean over the others, against random sets matched "
        "to each top-k set (shaded: their range). Numbers: tables/dose_response.csv.")
    return [Section(_sid(output, name, "dose"), "Dose–response", body, 4)]


CAUSAL_SECTIONS: list[Callable[[Context, Output, str, CausalTarget], list[Section]]] = [
    causal_matrix, causal_tests, causal_dose, causal_extra]


def causal_baseline(ctx: Context, output: Output) -> list[Section]:
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, **vars(v)} for c, v in output.summary.baseline.items()]
    body = table(rows, [("category", "category"), ("instructions", "instructions"), ("tokens", "response tokens"),
                        ("nll", "NLL, unablated")], row_attrs=lambda r: {"data-cat": r["_cat"]},
                 table_id=_sid(output, "baseline-table"))
    return [Section(_sid(output, "baseline"), "Unablated NLL (the baseline of every ΔNLL)", body, 3)]


def causal_accuracy(ctx: Context, output: Output) -> list[Section]:
    accuracy = output.summary.accuracy
    if not accuracy:
        return [Section(_sid(output, "accuracy"), "Exact-match accuracy",
                        not_computed("Exact-match accuracy", "the check ran without --generate"), 3)]
    rows = [r for r in accuracy if r["condition"] in ("unablated", "selected")]
    body = table(rows, [("target", "target"), ("ablated", "ablated"), ("condition", "condition"),
                        ("evaluated", "evaluated"), ("correct", "correct"), ("total", "total"),
                        ("accuracy", "accuracy")], formats={"accuracy": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r["evaluated"]})
    return [Section(_sid(output, "accuracy"), "Exact-match accuracy", body, 3)]


def ablate_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("ablate"):
        s: CausalSummary = output.summary
        notes = "".join(note(escape(n)) for n in s.notes)
        sections.append(Section(_sid(output), f"Causal check: {short_model_name(s.header.model.name_or_path)}",
                                note(f"Mean NLL of the reference responses "
                                     f"({escape(str(s.header.measurement.get('nll_unit')))}) with each category's set "
                                     "deactivated, minus the unablated NLL.") + notes, 2))
        sections += causal_baseline(ctx, output)
        for name, t in s.targets.items():
            sections.append(Section(_sid(output, name), f"Target: {name} ({', '.join(t.kinds)})", "", 3))
            for section in CAUSAL_SECTIONS:
                sections += section(ctx, output, name, t)
        sections += causal_accuracy(ctx, output)
    if not sections and ctx.study.of("identify"):
        sections.append(Section("causal", "Causal check", not_computed(
            "Causal check", "Pass a 'sparcom ablate' output folder."), 2))
    return sections


# --------------------------------------------------------------------------------------------- generic


def _is_matrix(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(r, list) and r for r in value)
            and all(isinstance(x, int | float) or x is None for r in value for x in r))


def generic_value(value: Any, categories: Sequence[str], rows: Sequence[str] | None = None,
                  cols: Sequence[str] | None = None, depth: int = 0) -> str:
    """Any JSON value as readable HTML: scalars as key–value tables, row lists as tables, matrices as heatmaps."""
    if isinstance(value, dict):
        scalars = [(k, v) for k, v in value.items() if not isinstance(v, dict | list)]
        nested = [(k, v) for k, v in value.items() if isinstance(v, dict | list)]
        html = key_values([(k.replace("_", " "), v) for k, v in scalars]) if scalars else ""
        for k, v in nested:
            inner = generic_value(v, categories, rows, cols, depth + 1)
            html += f"<h6>{escape(k.replace('_', ' '))}</h6>{inner}" if depth < 3 else details(k, inner)
        return html
    if _is_matrix(value):
        n_rows, n_cols = len(value), len(value[0])
        row_labels = list(rows) if rows and len(rows) == n_rows else (
            list(categories) if len(categories) == n_rows else [str(i) for i in range(n_rows)])
        col_labels = list(cols) if cols and len(cols) == n_cols else (
            list(categories) if len(categories) == n_cols else [str(i) for i in range(n_cols)])
        finite = [float(x) for r in value for x in r if x is not None and math.isfinite(float(x))]
        diverging = bool(finite) and min(finite) < 0 < max(finite)
        return heatmap(value, _labels(row_labels), _labels(col_labels), row_title="", col_title="",
                       diverging=diverging)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        flat = [{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in value]
        return table(flat, row_attrs=lambda r: {"data-cat": r.get("category") or r.get("ablated")})
    if isinstance(value, list):
        return f"<p>{escape(', '.join(fmt_num(v) for v in value))}</p>"
    return f"<p>{escape(fmt_num(value))}</p>"


def notes_section(ctx: Context) -> list[Section]:
    notes = [f"<li><b>{escape(output.kind)} · {escape(output.name)}</b>: {escape(text)}</li>"
             for output in ctx.study.outputs for text in getattr(output.summary, "notes", [])]
    if not notes:
        return []
    return [Section("notes", "Notes from the outputs", f'<ul>{"".join(notes)}</ul>')]


#: The page, top to bottom.
PAGE: list[Callable[[Context], list[Section]]] = [overview, provenance, identify_sections, compare_sections,
                                                  ablate_sections, notes_section]


def build_sections(ctx: Context) -> list[Section]:
    """Every section of the page, in order (the summaries were checked by their typed readers)."""
    return [section for part in PAGE for section in part(ctx)]


__all__ = ["CAUSAL_SECTIONS", "COMPARE_SECTIONS", "IDENTIFY_SECTIONS", "PAGE", "Context", "build_sections",
           "generic_value"]
