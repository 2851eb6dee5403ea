"""The report's sections for an ablate output (the causal check): the unablated baseline, per target the
damage matrix, the tests with their stored decisions and any further statistics, and exact-match accuracy. To
add one, add it to :data:`CAUSAL_SECTIONS`."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from sparcom.artifacts.causal import CausalSummary, CausalTarget
from sparcom.data.schema import category_label
from sparcom.kinds import KIND_NOUNS
from sparcom.report.context import Context, category_attrs, category_labels, section_id
from sparcom.report.files import short_model_name
from sparcom.report.generic import generic_value
from sparcom.report.studies import Output
from sparcom.report.verdicts import specific_headline, verdict_label, verdict_text
from sparcom.report.widgets import (
    Markup,
    Section,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_signed,
    heatmap,
    not_computed,
    note,
    png_figure,
    table,
)


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
                  row_attrs=category_attrs(ablated), col_attrs=category_attrs(evaluated))
    body = ('<div class="two"><div><h5>ΔNLL (nats per response token)</h5>'
            + heatmap(t.delta, rows, category_labels(evaluated), heat_id=section_id(output, name, "delta"), **common) + "</div>")
    if seeds:
        body += ("<div><h5>ΔNLL minus the random sets' mean</h5>"
                 + heatmap(t.excess, rows, category_labels(evaluated), **common) + "</div>")
    else:
        body += not_computed("Random baseline", "the check ran with --seeds 0")
    body += "</div>" + note(f"Random sets: {seeds} with the same per-layer counts as each set. The hover's per-cell "
                            "z and p describe one cell against its random sets; they are not decisions.")
    return [Section(section_id(output, name, "matrix"), "Damage matrix", body, 4)]


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
                 row_attrs=lambda r: {"data-cat": r["_cat"]}, table_id=section_id(output, name, "tests-table"))
    specific, tested = specific_headline(t.tests)
    body += note(f"Specific in {specific} of {tested} tested categories: Holm-adjusted p ≤ α = {fmt_num(stats.alpha)} "
                 f"for both tests ({escape(t.tests[0].damage.test)} p-values, {stats.random_sets} random sets, "
                 f"{fmt_pct(stats.level)} bootstrap intervals over {stats.replicates} resamples of the rows).")
    return [Section(section_id(output, name, "tests"), "Damage and specificity tests", body, 4)]


def causal_extra(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """Whatever else a target carries (expert removal counts, fold sizes, later statistics): shown generically."""
    if not t.extra:
        return []
    cats = list(dict.fromkeys([*t.ablated, *t.evaluated]))
    body = "".join(f"<h5>{escape(key.replace('_', ' '))}</h5>"
                   + generic_value(value, cats, rows=t.ablated, cols=t.evaluated) for key, value in t.extra.items())
    return [Section(section_id(output, name, "more"), "Further statistics", body, 4)]


def causal_dose(ctx: Context, output: Output, name: str, t: CausalTarget) -> list[Section]:
    """The dose–response figure of a target (``ablate --dose-response``), drawn when the check was written."""
    data = output.plot(f"dose_response_{name}.png")
    if data is None:
        return []
    body = png_figure(data, f"Dose–response of {name}: ΔNLL against the top-k of each set") + note(
        "Each category's set is deactivated top-k first (ranked by the selection rule's score) for k on a geometric "
        "grid up to its size: ΔNLL on its own category and the mean over the others, against random sets matched "
        "to each top-k set (shaded: their range). Numbers: tables/dose_response.csv.")
    return [Section(section_id(output, name, "dose"), "Dose–response", body, 4)]


CAUSAL_SECTIONS: list[Callable[[Context, Output, str, CausalTarget], list[Section]]] = [
    causal_matrix, causal_tests, causal_dose, causal_extra]


def causal_baseline(ctx: Context, output: Output) -> list[Section]:
    rows = [{"category": Markup(ctx.badge(c)), "_cat": c, **vars(v)} for c, v in output.summary.baseline.items()]
    body = table(rows, [("category", "category"), ("instructions", "instructions"), ("tokens", "response tokens"),
                        ("nll", "NLL, unablated")], row_attrs=lambda r: {"data-cat": r["_cat"]},
                 table_id=section_id(output, "baseline-table"))
    return [Section(section_id(output, "baseline"), "Unablated NLL (the baseline of every ΔNLL)", body, 3)]


def causal_accuracy(ctx: Context, output: Output) -> list[Section]:
    accuracy = output.summary.accuracy
    if not accuracy:
        return [Section(section_id(output, "accuracy"), "Exact-match accuracy",
                        not_computed("Exact-match accuracy", "the check ran without --generate"), 3)]
    rows = [r for r in accuracy if r["condition"] in ("unablated", "selected")]
    body = table(rows, [("target", "target"), ("ablated", "ablated"), ("condition", "condition"),
                        ("evaluated", "evaluated"), ("correct", "correct"), ("total", "total"),
                        ("accuracy", "accuracy")], formats={"accuracy": fmt_pct},
                 row_attrs=lambda r: {"data-cat": r["evaluated"]})
    return [Section(section_id(output, "accuracy"), "Exact-match accuracy", body, 3)]


def ablate_sections(ctx: Context) -> list[Section]:
    sections = []
    for output in ctx.study.of("ablate"):
        s: CausalSummary = output.summary
        notes = "".join(note(escape(n)) for n in s.notes)
        sections.append(Section(section_id(output), f"Causal check: {short_model_name(s.header.model.name_or_path)}",
                                note(f"Mean NLL of the reference responses "
                                     f"({escape(str(s.header.measurement.get('nll_unit')))}) with each category's set "
                                     "deactivated, minus the unablated NLL.") + notes, 2))
        sections += causal_baseline(ctx, output)
        for name, t in s.targets.items():
            sections.append(Section(section_id(output, name), f"Target: {name} ({', '.join(t.kinds)})", "", 3))
            for section in CAUSAL_SECTIONS:
                sections += section(ctx, output, name, t)
        sections += causal_accuracy(ctx, output)
    if not sections and ctx.study.of("identify"):
        sections.append(Section("causal", "Causal check", not_computed(
            "Causal check", "Pass a 'sparcom ablate' output folder."), 2))
    return sections


__all__ = ["CAUSAL_SECTIONS", "ablate_sections"]
