"""The head of the report: one "at a glance" line per output (the causal check's from its stored decisions)
and where every number comes from."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from sparcom.artifacts.causal import CausalSummary
from sparcom.artifacts.summaries import CompareSummary, IdentifySummary
from sparcom.artifacts.summary import Header
from sparcom.data.schema import category_label
from sparcom.examples.files import Examples
from sparcom.kinds import KIND_NOUNS, KIND_UNITS
from sparcom.report.context import Context, mean_of
from sparcom.report.files import short_model_name
from sparcom.report.studies import Output
from sparcom.report.verdicts import specific_headline
from sparcom.report.widgets import Section, details, fmt_int, fmt_num, fmt_pct, fmt_signed, key_values


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
            f"mean Jaccard of the base and tuned sets {fmt_num(mean_of([c.jaccard for c in k.per_category.values()]))}."
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
            f"by {fmt_signed(mean_of([r.damage.estimate for r in tests]))} nats/token on average, the other "
            f"categories' by {fmt_signed(mean_of([r.others for r in tests]))}; "
            f"{fmt_signed(mean_of([r.damage.excess for r in tests]))} beyond {escape(t.baseline_words)} "
            f"({escape(t.intervention_words)}). "
            f"<b>Specific in {specific} of {tested} categories</b> after Holm (α = {fmt_num(stats.alpha)}, "
            f"{escape(tests[0].damage.test)} test, {stats.random_sets} random sets); critical in "
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


__all__ = ["overview", "provenance"]
