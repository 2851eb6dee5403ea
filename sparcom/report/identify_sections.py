"""The report's sections for an identify output: per kind, the sets, per-layer counts, overlap, ε sweep,
validity, expert figures and cards. To add one, write a function and add it to :data:`IDENTIFY_SECTIONS`."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from sparcom.analysis.bootstrap import SUBSAMPLING
from sparcom.artifacts.summaries import Bootstrap, IdentifySummary, KindSets, ValidityHeadline
from sparcom.data.schema import category_label
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report import svg
from sparcom.report.cards import render_cards
from sparcom.report.context import Context, category_attrs, category_labels, layer_attrs, section_id
from sparcom.report.files import short_model_name
from sparcom.report.generic import generic_value
from sparcom.report.plots import GENERAL_COLOR, SHARED_COLOR
from sparcom.report.probing import probing_figure
from sparcom.report.studies import Output
from sparcom.report.widgets import (
    Markup,
    Section,
    details,
    fmt_int,
    fmt_num,
    fmt_pct,
    heatmap,
    key_values,
    not_computed,
    note,
    png_figure,
    table,
)

UNIQUE_COLOR = "#E69F00"


def selection_summary(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """General / shared / unique per category, with the chance baseline and bootstrap intervals."""
    cats = output.summary.categories
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, "selected": k.selected[c], "unique": k.unique[c],
             "unique_share": k.shares.get(f"unique_share_{c}"), "general_share": k.shares.get(f"general_share_{c}")}
            for c in cats]
    body = table(rows, [("category", "category"), ("selected", "selected"), ("unique", "unique"),
                        ("unique_share", "unique share"), ("general_share", "general share")],
                 formats={"unique_share": fmt_pct, "general_share": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=section_id(output, kind, "summary"))
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
        body += interval_details(boot)
    else:
        body += not_computed("Confidence intervals", (boot.note or "") if boot else "")
    body += note("<b>General</b>: selected for every category; <b>unique</b>: for one category only. The chance "
                 "values are what independent random sets of the same sizes would give.")
    return [Section(section_id(output, kind, "sets"), "General, shared and unique", body, 4)]


def per_layer(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Selected components per layer and category (heatmap) and their general/shared/unique split (bars)."""
    cats = output.summary.categories
    selected = [r for r in (output.table("selected_per_layer") or []) if r.get("kind") == kind]
    sets_rows = [r for r in (output.table("sets_per_layer") or []) if r.get("kind") == kind]
    if not selected and not sets_rows:
        return [Section(section_id(output, kind, "layers"), "Per layer",
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
                 + heatmap(values, category_labels(cats), [str(j) for j in layers], row_title="category", col_title="layer",
                           fmt=fmt_int, tips=tips, row_attrs=category_attrs(cats), col_attrs=layer_attrs(layers),
                           heat_id=section_id(output, kind, "layer-heat"), compact=True))
    if sets_rows:
        by_layer = {int(r["layer"]): r for r in sets_rows}
        shared = [sum(float(by_layer[j].get(f"shared_by_{m}") or 0) for m in range(2, len(cats))) for j in layers]
        series = [("general", GENERAL_COLOR, [by_layer[j].get("general") for j in layers]),
                  ("shared by 2–5" if len(cats) == 6 else "shared", SHARED_COLOR, shared),
                  ("unique", UNIQUE_COLOR, [by_layer[j].get("unique_total") for j in layers])]
        body += ("<h5>General, shared and unique per layer</h5>"
                 + svg.stacked_bars(layers, series, x_title="layer", y_title=f"selected {KIND_UNITS.get(kind, kind)}"))
    return [Section(section_id(output, kind, "layers"), "Per layer", body, 4)]


def overlap(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Pairwise Jaccard and containment of the category sets."""
    o = k.overlap
    if o is None:
        return []
    cats, labels, noun = o.categories, category_labels(o.categories), KIND_NOUNS.get(kind, kind)
    jt = [[f"{labels[a]} ∩ {labels[b]}: {fmt_int(o.intersection[a][b])} shared; Jaccard {fmt_num(o.jaccard[a][b])}"
           for b in range(len(cats))] for a in range(len(cats))]
    ct = [[f"{fmt_pct(o.containment[a][b])} of the {fmt_int(k.selected.get(cats[a]))} {labels[a]} {noun} are also "
           f"{labels[b]} {noun}" for b in range(len(cats))] for a in range(len(cats))]
    common = dict(row_title="", col_title="", vmin=0.0, vmax=1.0, row_attrs=category_attrs(cats), col_attrs=category_attrs(cats))
    body = ('<div class="two"><div><h5>Jaccard |A∩B| / |A∪B|</h5>'
            + heatmap(o.jaccard, labels, labels, tips=jt, heat_id=section_id(output, kind, "jaccard"), **common)
            + '</div><div><h5>Containment |A∩B| / |A| (row A in column B)</h5>'
            + heatmap(o.containment, labels, labels, fmt=fmt_pct, tips=ct, **common) + "</div></div>")
    return [Section(section_id(output, kind, "overlap"), "Overlap between categories", body, 4)]


def epsilon_sweep(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """How the general and unique shares change with ε (line chart and table)."""
    rows = [r for r in (output.table("epsilon_sweep") or []) if r.get("kind") == kind]
    if not rows:
        return [Section(section_id(output, kind, "sweep"), "ε sweep",
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
                table_id=section_id(output, kind, "sweep-table"))
    return [Section(section_id(output, kind, "sweep"), "ε sweep", f'<div class="two">{chart}{tab}</div>', 4)]


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
    return [Section(section_id(output, kind, "validity"), "Validity", body, 4)]


def _validity_headline(output: Output, kind: str, h: ValidityHeadline) -> str:
    """The numbers a reader wants first: each decoder against its random sets, then all components, chance,
    stability and the cross-source agreement."""
    decoders = [{"decoder": name, **vars(d)} for name, d in h.decoders.items()]
    body = table(decoders, [("decoder", "held-out decoder"), ("accuracy", "accuracy"), ("ci_low", "CI low"),
                            ("ci_high", "CI high"), ("random_mean", "random sets"), ("p_value", "p"),
                            ("matched_random_mean", "frequency-matched random sets"), ("matched_p_value", "p")],
                 formats={k: fmt_pct for k in ("accuracy", "ci_low", "ci_high", "random_mean", "matched_random_mean")},
                 table_id=section_id(output, kind, "validity-decoding"))
    rest = [{"all_components": h.all_components, "chance": h.chance, "stability": h.stability,
             "cross_source_within": h.cross_source_within, "cross_source_across": h.cross_source_across}]
    return body + table(rest, [("all_components", "centroid on all components"), ("chance", "chance"),
                               ("stability", "fold stability (Jaccard)"), ("cross_source_within", "cross-source within"),
                               ("cross_source_across", "across")],
                        formats={"all_components": fmt_pct, "chance": fmt_pct}, sortable=False,
                        table_id=section_id(output, kind, "validity-headline"))


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
    return [Section(section_id(output, kind, "figures"), "Layer × expert", "".join(figures), 4)]


def cards(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Cards for the top members of each category's set, by frequency and by specificity."""
    return [Section(section_id(output, kind, "cards"), f"{KIND_NOUNS.get(kind, kind)}: cards",
                    render_cards(ctx, output, kind), 4)]


def probing(ctx: Context, output: Output, kind: str, k: KindSets) -> list[Section]:
    """Sparse-probing curves and the lexical baseline, when identify ran with --probing (nothing otherwise)."""
    body = probing_figure(output.table("probing_curves") or [], kind, section_id(output, kind, "probing-table"))
    return [Section(section_id(output, kind, "probing"), "Sparse probing", body, 4)] if body else []


IDENTIFY_SECTIONS: list[Callable[[Context, Output, str, KindSets], list[Section]]] = [
    selection_summary, per_layer, overlap, epsilon_sweep, validity, probing, expert_figures, cards]


def interval_details(boot: Bootstrap) -> str:
    """The set statistics' intervals, titled by their method: subsampling intervals (centred on the trend-corrected
    value, the plug-in's bias beside it) or the Poisson bootstrap's spread (its replicates' mean beside it)."""
    rows = [{"statistic": name, "estimate": v.estimate, "corrected": v.corrected, "bias": v.bias,
             "replicate_mean": v.replicate_mean, "low": v.low, "high": v.high}
            for name, v in boot.intervals.items()]
    if boot.method == SUBSAMPLING:
        title = f"{fmt_pct(boot.level)} intervals by subsampling instructions (trend-corrected)"
        columns = [("statistic", "statistic"), ("estimate", "plug-in estimate"), ("corrected", "corrected"),
                   ("bias", "bias"), ("low", "low"), ("high", "high")]
    else:
        title = (f"bootstrap spread ({fmt_pct(boot.level)}, {fmt_int(boot.replicates)} Poisson replicates; not a "
                 "confidence interval for thresholded statistics: profile per instruction for one)")
        columns = [("statistic", "statistic"), ("estimate", "estimate"), ("replicate_mean", "replicates' mean"),
                   ("low", "low"), ("high", "high")]
    return details(title, table(rows, columns) + note(escape(boot.method or "")))


def identify_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("identify"):
        s: IdentifySummary = output.summary
        title = f"Selection: {short_model_name(s.header.model.name_or_path)}" + (f" · {s.rule.name}" if s.rule.name else "")
        sections.append(Section(section_id(output), title,  # one model, two rules: the rule tells them apart
                                note(f"{escape(s.rule.description)}. Source run "
                                     f"<code>{escape(str(s.header.data.run))}</code>."), 2))
        for kind, k in s.kinds.items():
            sections.append(Section(section_id(output, kind), f"{KIND_NOUNS.get(kind, kind)} ({KIND_UNITS.get(kind, kind)})",
                                    "", 3))
            for section in IDENTIFY_SECTIONS:
                sections += section(ctx, output, kind, k)
    if not sections:
        sections.append(Section("selection", "Selection", not_computed(
            "Selection (ISNs / ISEs)", "Pass a 'sparcom identify' output folder."), 2))
    return sections


__all__ = ["IDENTIFY_SECTIONS", "identify_sections"]

