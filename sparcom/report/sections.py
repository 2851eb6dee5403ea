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

from sparcom.data.schema import category_label
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report import svg
from sparcom.report.cards import render_cards
from sparcom.report.files import short_model_name
from sparcom.report.plots import GAINED_COLOR, GENERAL_COLOR, LOST_COLOR, RETAINED_COLOR, SHARED_COLOR
from sparcom.report.studies import Output, Study
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
    """At a glance: one line per output with its headline numbers."""
    items = []
    for output in ctx.study.outputs:
        d = output.document
        if output.kind == "identify":
            for kind, k in d.get("kinds", {}).items():
                chance = (k.get("chance_baseline") or {}).get("chance_unique_share")
                items.append(
                    f"<li><b>{escape(short_model_name(d.get('run', {}).get('model')))}</b> — {fmt_int(k.get('selected_any'))} "
                    f"{escape(KIND_UNITS.get(kind, kind))} selected by at least one category "
                    f"({escape(d.get('rule_description', ''))}); <b>{fmt_int(k.get('general'))}</b> general "
                    f"({fmt_pct((k.get('shares') or {}).get('general_share'))}), <b>{fmt_int(k.get('unique_total'))}"
                    f"</b> unique to one category ({fmt_pct((k.get('shares') or {}).get('unique_share'))}; "
                    f"{fmt_pct(chance)} if the sets were drawn at random).</li>")
        elif output.kind == "compare":
            for kind, k in d.get("kinds", {}).items():
                jaccards = [v.get("jaccard") for v in (k.get("per_category") or {}).values()]
                finite = [float(j) for j in jaccards if j is not None and math.isfinite(float(j))]
                mean = sum(finite) / len(finite) if finite else None
                items.append(f"<li><b>{escape(short_model_name(d.get('base', {}).get('model')))} → "
                             f"{escape(short_model_name(d.get('tuned', {}).get('model')))}</b> — {escape(KIND_NOUNS.get(kind, kind))}: "
                             f"mean Jaccard of the base and tuned sets {fmt_num(mean)}.</li>")
        elif output.kind == "ablate":
            level = (d.get("significance") or {}).get("level", 0.05)
            for name, t in (d.get("targets") or {}).items():
                rows = t.get("specificity") or []
                seeds = (t.get("random") or {}).get("seeds") or 0
                below = sum(1 for r in rows if r.get("own_p_value") is not None and r["own_p_value"] <= level)
                own = _mean([r.get("own_delta_nll") for r in rows])
                other = _mean([r.get("mean_other_delta_nll") for r in rows])
                excess = _mean([r.get("own_excess_over_random") for r in rows])
                floor = f"; with {seeds} random sets the smallest possible p is {fmt_num(1 / (1 + seeds))}" \
                    if seeds and 1 / (1 + seeds) > level else ""
                items.append(f"<li><b>causal check ({escape(name)})</b> on "
                             f"{escape(short_model_name(d.get('model', {}).get('name_or_path')))} — deactivating a "
                             f"category's set raises its own NLL by {fmt_signed(own)} nats/token on average, the "
                             f"other categories' by {fmt_signed(other)}; {fmt_signed(excess)} beyond random sets of "
                             f"the same per-layer shape. p ≤ {fmt_num(level)} for {below} of {len(rows)} "
                             f"categories{floor}.</li>")
        elif output.kind == "examples":
            items.append(f"<li><b>token examples</b> for {len(d.get('components', []))} components, top "
                         f"{fmt_int((d.get('settings') or {}).get('top_k'))} instructions each.</li>")
    if not items:
        return []
    return [Section("overview", "At a glance", f'<ul class="glance">{"".join(items)}</ul>')]


def provenance(ctx: Context) -> list[Section]:
    """Where every number comes from: models, data, settings, software, per output."""
    blocks = []
    for output in ctx.study.outputs:
        d = output.document
        pairs: list[tuple[str, Any]] = [("folder", str(output.path))]
        if output.kind == "run":
            model = d.get("model", {})
            dataset = d.get("dataset", {})
            pairs += [("model", model.get("name_or_path")), ("architecture", model.get("architecture")),
                      ("weights fingerprint", (model.get("fingerprint") or "")[:16] or None),
                      ("dataset", dataset.get("path")), ("dataset sha256", (dataset.get("sha256") or "")[:16] or None),
                      ("instructions", _per_cat(d.get("instructions"))), ("counted tokens", _per_cat(d.get("counted_tokens"))),
                      ("scope", d.get("scope")), ("template", f"{d.get('template')} (policy {d.get('template_policy')})"),
                      ("system prompt", d.get("system_prompt") or "none"), ("dtype", d.get("dtype")),
                      ("batching", _compact(d.get("batching_plan"))), ("wall time (s)", d.get("wall_time_seconds")),
                      ("software", _compact(d.get("software")))]
        elif output.kind == "identify":
            run = d.get("run", {})
            fp = run.get("fingerprint") or {}
            pairs += [("source run", run.get("path")), ("model", run.get("model")),
                      ("architecture", fp.get("model.architecture")),
                      ("weights fingerprint", (fp.get("model.fingerprint") or "")[:16] or None),
                      ("rule", d.get("rule_description")), ("scope", fp.get("scope")),
                      ("template", fp.get("template")), ("dtype", fp.get("dtype")),
                      ("instructions", _per_cat(run.get("instructions"))),
                      ("counted tokens", _per_cat(run.get("counted_tokens")))]
        elif output.kind == "compare":
            pairs += [("base run", d.get("base", {}).get("path")), ("base model", d.get("base", {}).get("model")),
                      ("tuned run", d.get("tuned", {}).get("path")), ("tuned model", d.get("tuned", {}).get("model")),
                      ("rule", d.get("rule_description")),
                      ("compared despite", "; ".join(d.get("forced_despite") or []) or "nothing")]
        elif output.kind == "ablate":
            data = d.get("data", {})
            pairs += [("model", d.get("model", {}).get("name_or_path")), ("selection", d.get("selection", {}).get("path")),
                      ("selection rule", d.get("selection", {}).get("description")),
                      ("data", data.get("path")), ("data sha256", (data.get("sha256") or "")[:16] or None),
                      ("evaluated instructions", _per_cat(data.get("instructions"))),
                      ("excluded (profiled) rows", data.get("excluded_profiled")),
                      ("settings", _compact(d.get("settings"))), ("NLL unit", d.get("nll_unit")),
                      ("wall time (s)", d.get("wall_time_seconds"))]
        elif output.kind == "examples":
            settings = d.get("settings", {})
            pairs += [("model", d.get("model", {}).get("name_or_path")), ("selection", d.get("selection", {}).get("path")),
                      ("data", d.get("data", {}).get("path")), ("rows", d.get("data", {}).get("rows")),
                      ("top K", settings.get("top_k")), ("window", settings.get("window")),
                      ("scope", settings.get("scope")), ("wall time (s)", d.get("wall_time_seconds"))]
        blocks.append(f'<div class="prov"><h4>{escape(output.kind)} · {escape(output.name)}</h4>'
                      f"{key_values(pairs)}</div>")
    return [Section("provenance", "Provenance and settings",
                    details(f"{len(blocks)} inputs: models, data, settings and software versions",
                            f'<div class="prov-grid">{"".join(blocks)}</div>'))]


def _per_cat(values: dict | None) -> str | None:
    if not values:
        return None
    return " · ".join(f"{category_label(c)} {fmt_num(v)}" for c, v in values.items())


def _compact(values: dict | None) -> str | None:
    if not values:
        return None
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)


# --------------------------------------------------------------------------------------------- identify


def selection_summary(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """General / shared / unique per category, with the chance baseline and bootstrap intervals."""
    cats = output.document["categories"]
    shares = k.get("shares") or {}
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, "selected": (k.get("selected") or {}).get(c),
             "unique": (k.get("unique") or {}).get(c), "unique_share": shares.get(f"unique_share_{c}"),
             "general_share": shares.get(f"general_share_{c}")} for c in cats]
    body = table(rows, [("category", "category"), ("selected", "selected"), ("unique", "unique"),
                        ("unique_share", "unique share"), ("general_share", "general share")],
                 formats={"unique_share": fmt_pct, "general_share": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, kind, "summary"))
    chance = k.get("chance_baseline") or {}
    shared = ", ".join(f"by {m}: {fmt_int(v)}" for m, v in (k.get("shared_by") or {}).items())
    totals = [("components", k.get("components")), ("layers", k.get("layers")),
              ("selected by at least one category", k.get("selected_any")),
              ("general (in every set)", Markup(f'<span data-stat="general">{fmt_int(k.get("general"))}</span> '
                                                f'({fmt_pct(shares.get("general_share"))} of the selected; chance '
                                                f'{fmt_num(chance.get("chance_general"))})')),
              ("shared", shared or None),
              ("unique to one category", Markup(f'<span data-stat="unique_total">{fmt_int(k.get("unique_total"))}'
                                                f'</span> ({fmt_pct(shares.get("unique_share"))}; chance '
                                                f'{fmt_pct(chance.get("chance_unique_share"))})')),
              ("never selected", k.get("never_selected")), ("dead (never active)", k.get("dead")),
              ("always on", k.get("always_on"))]
    body = f'<div class="two">{body}{key_values(totals)}</div>'
    boot = k.get("bootstrap") or {}
    if boot.get("available"):
        intervals = [{"statistic": name, **v} for name, v in (boot.get("intervals") or {}).items()]
        body += details(f"bootstrap intervals ({fmt_pct(boot.get('level'))}, {fmt_int(boot.get('replicates'))} "
                        "replicates)", table(intervals, [("statistic", "statistic"), ("estimate", "estimate"),
                                                         ("low", "low"), ("high", "high")]))
    else:
        body += not_computed("Confidence intervals", boot.get("note") or "")
    body += note("<b>General</b>: selected for every category; <b>unique</b>: for one category only. The chance "
                 "values are what independent random sets of the same sizes would give.")
    return [Section(_sid(output, kind, "sets"), "General, shared and unique", body, 4)]


def per_layer(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """Selected components per layer and category (heatmap) and their general/shared/unique split (bars)."""
    cats = output.document["categories"]
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


def overlap(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """Pairwise Jaccard and containment of the category sets."""
    o = k.get("overlap")
    if not o:
        return []
    cats = o["categories"]
    labels = _labels(cats)
    sizes = (k.get("selected") or {})
    inter = o.get("intersection")
    jt = [[f"{labels[a]} ∩ {labels[b]}: {fmt_int(inter[a][b]) if inter else '?'} shared; Jaccard "
           f"{fmt_num(o['jaccard'][a][b])}" for b in range(len(cats))] for a in range(len(cats))]
    ct = [[f"{fmt_pct(o['containment_row_in_column'][a][b])} of the {fmt_int(sizes.get(cats[a]))} {labels[a]} "
           f"{KIND_NOUNS.get(kind, kind)} are also {labels[b]} {KIND_NOUNS.get(kind, kind)}" for b in range(len(cats))]
          for a in range(len(cats))]
    common = dict(row_title="", col_title="", vmin=0.0, vmax=1.0, row_attrs=_cat_attrs(cats), col_attrs=_cat_attrs(cats))
    body = ('<div class="two"><div><h5>Jaccard |A∩B| / |A∪B|</h5>'
            + heatmap(o["jaccard"], labels, labels, tips=jt, heat_id=_sid(output, kind, "jaccard"), **common)
            + '</div><div><h5>Containment |A∩B| / |A| (row A in column B)</h5>'
            + heatmap(o["containment_row_in_column"], labels, labels, fmt=fmt_pct, tips=ct, **common) + "</div></div>")
    return [Section(_sid(output, kind, "overlap"), "Overlap between categories", body, 4)]


def epsilon_sweep(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
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


def validity(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """Validity measures of the selection (DESIGN §6) when the summary carries them."""
    found = k.get("validity") or (output.document.get("validity") or {}).get(kind)
    if not found:
        body = not_computed("Validity measures",
                            "This selection has no held-out decoding accuracy, cross-source agreement, stability or "
                            "per-component specificity yet (DESIGN §6).")
    else:
        body = generic_value(found, output.document.get("categories") or [])
    return [Section(_sid(output, kind, "validity"), "Validity", body, 4)]


EXPERT_FIGURES = (("expert_frequency.png", "Expert routing frequency per category"),
                  ("expert_frequency_deviation.png", "Expert routing frequency minus its mean over categories"),
                  ("expert_neuron_per_expert.png", "Selected expert neurons per expert and layer"))


def expert_figures(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """Static figures that read better than tables: layer × expert heatmaps of MoE runs."""
    if kind not in ("expert", "expert_neuron"):
        return []
    figures = [png_figure(data, caption) for name, caption in EXPERT_FIGURES
               if (kind == "expert") == name.startswith("expert_frequency") and (data := output.plot(name))]
    if not figures:
        return []
    return [Section(_sid(output, kind, "figures"), "Layer × expert", "".join(figures), 4)]


def cards(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    """Cards for the top members of each category's set, by frequency and by specificity."""
    return [Section(_sid(output, kind, "cards"), f"{KIND_NOUNS.get(kind, kind)}: cards",
                    render_cards(ctx, output, kind), 4)]


IDENTIFY_SECTIONS: list[Callable[[Context, Output, str, dict], list[Section]]] = [
    selection_summary, per_layer, overlap, epsilon_sweep, validity, expert_figures, cards]


def identify_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("identify"):
        d = output.document
        model = short_model_name(d.get("run", {}).get("model"))
        rule = (d.get("rule") or {}).get("rule") if isinstance(d.get("rule"), dict) else d.get("rule")
        title = f"Selection: {model}" + (f" · {rule}" if rule else "")  # one model, two rules: tell them apart
        sections.append(Section(_sid(output), title,
                                note(f"{escape(d.get('rule_description', ''))}. Source run "
                                     f"<code>{escape(str(d.get('run', {}).get('path')))}</code>."), 2))
        for kind, k in d.get("kinds", {}).items():
            sections.append(Section(_sid(output, kind), f"{KIND_NOUNS.get(kind, kind)} ({KIND_UNITS.get(kind, kind)})",
                                    "", 3))
            for section in IDENTIFY_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections:
        sections.append(Section("selection", "Selection", not_computed(
            "Selection (ISNs / ISEs)", "Pass a 'sparcom identify' output folder."), 2))
    return sections


# --------------------------------------------------------------------------------------------- compare


def compare_sets(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    cats = output.document["categories"]
    rows = []
    for c in cats:
        change = (k.get("per_category") or {}).get(c, {})
        corr = (k.get("correlation") or {}).get(c, {})
        rows.append({"category": Markup(ctx.badge(c)), "_cat": c, **change, "spearman": corr.get("spearman"),
                     "pearson": corr.get("pearson"), "mean_abs_change": corr.get("mean_abs_change")})
    tab = table(rows, [("category", "category"), ("base", "base"), ("tuned", "tuned"), ("retained", "retained"),
                       ("gained", "gained"), ("lost", "lost"), ("jaccard", "Jaccard"),
                       ("spearman", "Spearman ρ of p"), ("mean_abs_change", "mean |Δp|")],
                row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, kind, "changes-table"))
    structure = [{"statistic": name, **v} for name, v in (k.get("structure") or {}).items()]
    struct = details("every set statistic, base → tuned", table(structure, [("statistic", "statistic"),
                                                                             ("base", "base"), ("tuned", "tuned"),
                                                                             ("change", "change")]))
    bars = svg.stacked_bars([category_label(c) for c in cats], [
        ("retained", RETAINED_COLOR, [(k.get("per_category") or {}).get(c, {}).get("retained") for c in cats]),
        ("gained", GAINED_COLOR, [(k.get("per_category") or {}).get(c, {}).get("gained") for c in cats]),
        ("lost", LOST_COLOR, [(k.get("per_category") or {}).get(c, {}).get("lost") for c in cats])],
        x_title="category", y_title=KIND_UNITS.get(kind, kind), width=520, layer_attr=False, tip_prefix="")
    return [Section(_sid(output, kind, "changes"), "Retained, gained and lost",
                    f'<div class="two">{tab}{bars}</div>{struct}', 4)]


def compare_per_layer(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    rows = [r for r in (output.table("compare_per_layer") or []) if r.get("kind") == kind]
    if not rows:
        return []
    cats = output.document["categories"]
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


def compare_transitions(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    t = k.get("class_transitions")
    if not t:
        return []
    classes = t["classes"]
    matrix = t["base_rows_tuned_columns"]
    tips = [[f"{fmt_int(matrix[a][b])} {KIND_UNITS.get(kind, kind)}: {classes[a]} in the base → {classes[b]} "
             "in the tuned model" for b in range(len(classes))] for a in range(len(classes))]
    shown = [[math.log10(1 + v) for v in row] for row in matrix]
    body = heatmap(shown, classes, classes, row_title="base", col_title="tuned", tips=tips,
                   fmt=lambda v: fmt_int(round(10 ** v - 1)))
    return [Section(_sid(output, kind, "transitions"), "Class transitions (colour: log scale)", body, 4)]


def routing_shift(ctx: Context, output: Output, kind: str, k: dict) -> list[Section]:
    if kind != "expert":
        return []
    rows = output.table("routing_shift") or []
    if not rows:
        return []
    cats = output.document["categories"]
    layers = sorted({int(r["layer"]) for r in rows})
    cell = {(int(r["layer"]), r["category"]): r for r in rows}
    values = [[(cell.get((j, c)) or {}).get("js_divergence_bits") for j in layers] for c in cats]
    body = heatmap(values, _labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                   vmin=0.0, row_attrs=_cat_attrs(cats), col_attrs=_layer_attrs(layers), compact=True)
    figure = output.plot("routing_shift.png")
    if figure:
        body += png_figure(figure, "Routing shift per layer")
    return [Section(_sid(output, kind, "routing"), "Routing shift (Jensen–Shannon divergence, bits)", body, 4)]


COMPARE_SECTIONS: list[Callable[[Context, Output, str, dict], list[Section]]] = [
    compare_sets, compare_per_layer, compare_transitions, routing_shift]


def compare_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("compare"):
        d = output.document
        title = f"Base → tuned: {short_model_name(d.get('base', {}).get('model'))} → {short_model_name(d.get('tuned', {}).get('model'))}"
        notes = "".join(note(escape(n)) for n in d.get("notes") or [])
        sections.append(Section(_sid(output), title, notes + note(escape(d.get("rule_description", ""))), 2))
        for kind, k in d.get("kinds", {}).items():
            sections.append(Section(_sid(output, kind), KIND_NOUNS.get(kind, kind), "", 3))
            for section in COMPARE_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections and len(ctx.study.of("identify")) >= 2:
        sections.append(Section("compare", "Base → tuned", not_computed(
            "Base → tuned comparison", "Pass a 'sparcom compare' output folder."), 2))
    return sections


# --------------------------------------------------------------------------------------------- causal

KNOWN_TARGET_KEYS = {"kinds", "ablated", "evaluated", "set_sizes", "nll_ablated", "delta_nll", "random",
                     "excess_over_random", "z", "p_value", "specificity", "expert_removal"}


def causal_matrix(ctx: Context, output: Output, name: str, t: dict) -> list[Section]:
    """ΔNLL per ablated and evaluated category, with the random sets in the hover and significant cells marked."""
    d = output.document
    ablated, evaluated = t["ablated"], t["evaluated"]
    level = (d.get("significance") or {}).get("level", 0.05)
    random = t.get("random") or {}
    seeds = random.get("seeds") or 0
    tips, marks = [], []
    for a, ca in enumerate(ablated):
        line, mark = [], []
        for j, ce in enumerate(evaluated):
            p = _at(t.get("p_value"), a, j)
            line.append(f"{category_label(ca)} {KIND_NOUNS.get('neuron') if name == 'neurons' else name} ablated → "
                        f"{category_label(ce)}: ΔNLL {fmt_signed(_at(t.get('delta_nll'), a, j))}; random sets "
                        f"{fmt_signed(_at(random.get('mean'), a, j))} ± {fmt_num(_at(random.get('std'), a, j))} "
                        f"(n={seeds}); z {fmt_num(_at(t.get('z'), a, j))}; p {fmt_num(p)}")
            mark.append(p is not None and seeds > 0 and p <= level)
        tips.append(line)
        marks.append(mark)
    sizes = t.get("set_sizes") or {}
    rows = [f"{category_label(c)} ({fmt_int(sizes.get(c))})" for c in ablated]
    common = dict(row_title="ablated (size)", col_title="evaluated", diverging=True,
                  row_attrs=_cat_attrs(ablated), col_attrs=_cat_attrs(evaluated))
    body = ('<div class="two"><div><h5>ΔNLL (nats per response token)</h5>'
            + heatmap(t["delta_nll"], rows, _labels(evaluated), fmt=fmt_signed, tips=tips, marks=marks,
                      heat_id=_sid(output, name, "delta"), **common) + "</div>")
    if seeds:
        body += ("<div><h5>ΔNLL minus the random sets' mean</h5>"
                 + heatmap(t["excess_over_random"], rows, _labels(evaluated), fmt=fmt_signed, tips=tips, marks=marks,
                           **common) + "</div>")
    else:
        body += not_computed("Random baseline", "the check ran with --seeds 0")
    body += "</div>" + note(f"Outlined cells: one-sided empirical p ≤ {fmt_num(level)} against {seeds} random sets "
                            "with the same per-layer counts (with few random sets the smallest possible p is "
                            f"{fmt_num(1 / (1 + seeds)) if seeds else '–'}).")
    return [Section(_sid(output, name, "matrix"), "Damage matrix", body, 4)]


def _at(matrix, a: int, j: int):
    try:
        return matrix[a][j]
    except (TypeError, IndexError):
        return None


def causal_specificity(ctx: Context, output: Output, name: str, t: dict) -> list[Section]:
    rows = t.get("specificity") or []
    if not rows:
        return []
    shown = [{"category": Markup(ctx.badge(r["ablated"])), "_cat": r["ablated"], **r} for r in rows]
    body = table(shown, [("category", "ablated"), ("own_delta_nll", "own ΔNLL"),
                         ("mean_other_delta_nll", "mean ΔNLL on the others"), ("specificity", "own − others"),
                         ("own_excess_over_random", "own excess over random"), ("own_p_value", "p (own)")],
                 formats={k: fmt_signed for k in ("own_delta_nll", "mean_other_delta_nll", "specificity",
                                                  "own_excess_over_random")},
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=_sid(output, name, "specificity-table"))
    return [Section(_sid(output, name, "specificity"), "Own-category damage", body, 4)]


def causal_extra(ctx: Context, output: Output, name: str, t: dict) -> list[Section]:
    """Whatever else a target carries (e.g. normalised matrices, corrected p-values): shown generically."""
    extra = {k: v for k, v in t.items() if k not in KNOWN_TARGET_KEYS and v is not None}
    if not extra:
        return []
    cats = list(dict.fromkeys([*t.get("ablated", []), *t.get("evaluated", [])]))
    body = "".join(f"<h5>{escape(key.replace('_', ' '))}</h5>"
                   + generic_value(value, cats, rows=t.get("ablated"), cols=t.get("evaluated"))
                   for key, value in extra.items())
    return [Section(_sid(output, name, "more"), "Further statistics", body, 4)]


CAUSAL_SECTIONS: list[Callable[[Context, Output, str, dict], list[Section]]] = [
    causal_matrix, causal_specificity, causal_extra]


def causal_baseline(ctx: Context, output: Output) -> list[Section]:
    d = output.document
    baseline = d.get("baseline") or {}
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, **v} for c, v in baseline.items()]
    body = table(rows, [("category", "category"), ("instructions", "instructions"), ("tokens", "response tokens"),
                        ("nll", "NLL, unablated")], row_attrs=lambda r: {"data-cat": r["_cat"]},
                 table_id=_sid(output, "baseline-table"))
    return [Section(_sid(output, "baseline"), "Unablated NLL (the baseline of every ΔNLL)", body, 3)]


def causal_accuracy(ctx: Context, output: Output) -> list[Section]:
    accuracy = output.document.get("accuracy")
    if not accuracy:
        return [Section(_sid(output, "accuracy"), "Exact-match accuracy",
                        not_computed("Exact-match accuracy", "the check ran without --generate"), 3)]
    rows = [r for r in accuracy.get("rows") or [] if r.get("condition") in ("unablated", "selected")]
    body = table(rows, [("target", "target"), ("ablated", "ablated"), ("condition", "condition"),
                        ("evaluated", "evaluated"), ("correct", "correct"), ("total", "total"),
                        ("accuracy", "accuracy")], formats={"accuracy": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r.get("evaluated")})
    return [Section(_sid(output, "accuracy"), "Exact-match accuracy", body, 3)]


def ablate_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("ablate"):
        d = output.document
        model = short_model_name(d.get("model", {}).get("name_or_path"))
        notes = "".join(note(escape(n)) for n in d.get("notes") or [])
        sections.append(Section(_sid(output), f"Causal check: {model}",
                                note(f"Mean NLL of the reference responses ({escape(d.get('nll_unit', ''))}) with each "
                                     "category's set deactivated, minus the unablated NLL. "
                                     f"z: {escape((d.get('significance') or {}).get('z', ''))}; "
                                     f"p: {escape((d.get('significance') or {}).get('p_value', ''))}.") + notes, 2))
        sections += causal_baseline(ctx, output)
        for name, t in (d.get("targets") or {}).items():
            sections.append(Section(_sid(output, name), f"Target: {name} ({', '.join(t.get('kinds', []))})", "", 3))
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
    notes = []
    for output in ctx.study.outputs:
        for text in output.document.get("notes") or []:
            if isinstance(text, str):
                notes.append(f"<li><b>{escape(output.kind)} · {escape(output.name)}</b>: {escape(text)}</li>")
    if not notes:
        return []
    return [Section("notes", "Notes from the outputs", f'<ul>{"".join(notes)}</ul>')]


#: The page, top to bottom.
PAGE: list[Callable[[Context], list[Section]]] = [overview, provenance, identify_sections, compare_sections,
                                                  ablate_sections, notes_section]


def build_sections(ctx: Context) -> list[Section]:
    sections = []
    for part in PAGE:
        try:
            sections += part(ctx)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise SparcomError(f"a summary lacks what the {part.__name__.replace('_', ' ')} section needs "
                               f"({type(exc).__name__}: {exc}); re-run the step that wrote it") from None
    return sections


__all__ = ["CAUSAL_SECTIONS", "COMPARE_SECTIONS", "IDENTIFY_SECTIONS", "PAGE", "Context", "build_sections",
           "generic_value"]
