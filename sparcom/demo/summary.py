"""The demo's ``SUMMARY.md`` and ``index.html``: headline numbers read back from the outputs the steps wrote."""

from __future__ import annotations

import html
import os
from pathlib import Path

from sparcom.analysis.claims import Claim, claims_table
from sparcom.artifacts.causal import CausalSummary, TestRow, control_words, intervention_words, read_causal
from sparcom.artifacts.fields import read_document
from sparcom.artifacts.summaries import Decoding, IdentifySummary, read_compare, read_identify
from sparcom.data.schema import category_label
from sparcom.demo.config import BASE, INSTRUCT, MODEL_NAMES, MOE, TUNED, DemoConfig
from sparcom.demo.layout import RULE_TAGS, Layout, rules
from sparcom.outputs import write_json_atomic, write_text_atomic
from sparcom.report.claims import claim_text, claim_uncertainty, verdict_words
from sparcom.report.files import SUMMARY_FILE
from sparcom.report.verdicts import outcomes_text, shared_reasons
from sparcom.report.widgets import fmt_pct

#: The component kind whose claims each model answers, and the causal target that removes it.
CLAIM_KIND = {INSTRUCT: ("neuron", "neurons"), BASE: ("neuron", "neurons"), TUNED: ("neuron", "neurons"),
              MOE: ("expert", "experts")}
#: The demo's claims, decided once and stored beside SUMMARY.md (read back by index.html).
CLAIMS_FILE, CLAIMS_FORMAT, CLAIMS_VERSION = "claims.json", "sparcom-demo-claims", 1
NO_DECODING = Decoding(*[float("nan")] * 7)


def _identify(where: Layout, name: str, tag: str = "paper") -> IdentifySummary | None:
    """The typed identify summary of one model and rule, None when that step did not run."""
    folder = where.identify(name, tag)
    return read_identify(folder) if (folder / SUMMARY_FILE).is_file() else None


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "–" if value is None or value != value else format(value, fmt)


def _rel(where: Layout, path: Path) -> str:
    return path.relative_to(where.out).as_posix()


def _image(where: Layout, alt: str, path: Path) -> list[str]:
    """A Markdown image line for a figure that exists (none when the demo ran without plots)."""
    return [f"![{alt}]({_rel(where, path)})"] if path.is_file() else []


def _ablate_dirs(where: Layout, name: str) -> list[Path]:
    folder = where.out / "ablate" / name
    return sorted(p for p in folder.glob("*") if (p / SUMMARY_FILE).is_file()) if folder.is_dir() else []


def _claims_ablate(where: Layout, role: str) -> CausalSummary | None:
    """The causal check that answers a model's claims: the paper's sets, renormalised expert removal."""
    _, target = CLAIM_KIND[role]
    path = where.ablate(MODEL_NAMES[role], "paper", target, "renormalize")
    return read_causal(path) if (path / SUMMARY_FILE).is_file() else None


def model_claims(config: DemoConfig, where: Layout, role: str) -> list[Claim]:
    """The four claims of one model, decided from its typed identify and causal summaries."""
    kind, target = CLAIM_KIND[role]
    not_run = ("causal check not run in `make demo` (its budget); `make demo-full` runs it"
               if not any(r == role for r, *_ in config.causal) else "causal check output missing")
    return claims_table(_identify(where, MODEL_NAMES[role]), _claims_ablate(where, role), kind, target, not_run)


def write_claims(config: DemoConfig, where: Layout, order: list[str]) -> dict[str, list[Claim]]:
    """Decide every model's claims once and store them (``claims.json`` beside SUMMARY.md) for both pages."""
    claims = {MODEL_NAMES[role]: model_claims(config, where, role) for role in order}
    write_json_atomic(where.out / CLAIMS_FILE, {"format": CLAIMS_FORMAT, "version": CLAIMS_VERSION,
                                                "models": {m: [c.to_json() for c in cs] for m, cs in claims.items()}})
    return claims


def read_claims(where: Layout) -> dict[str, list[Claim]]:
    """The stored claims (:func:`write_claims`), typed."""
    f = read_document(where.out / CLAIMS_FILE, CLAIMS_FORMAT, CLAIMS_VERSION, "run the demo again")
    return {m: [Claim.read(c) for c in f.obj("models").items(m)] for m in f.obj("models").names()}


def claims_section(config: DemoConfig, claims: dict[str, list[Claim]], order: list[str]) -> list[str]:
    lines = ["## Do the paper's claims hold here?", "",
             "Each claim is judged on the paper's rule (top ε = 1% of each category's activation frequencies) from "
             "this demo's own outputs, by a test fixed in advance whose null can fail: **generality** against "
             f"{config.reference_rows} XSum passages that are not instructions (are the general components just as "
             "top-frequent there?); **uniqueness** by the within − across cross-source agreement above a 0.10 margin "
             "and held-out decoding by the unique members alone against random sets; **critical role** and "
             "**specificity** by the row-aware empirical test against "
             f"{config.seeds} {control_words(config.control)}, with the set's "
             f"{intervention_words(config.intervention)}, and over the rows: first pooled over the "
             "categories, then (only if that holds) per category with Holm, each at α = 0.05 (docs/causal.md, "
             "\"The decision rule\")" + (
                 f"; each check drew its random sets a round at a time and stopped once no further draw could change "
                 f"a decision, so its decisions are those of all {config.seeds} (\"Stopping when decided\")"
                 if config.stop_when_decided else "") + ". Verdicts: holds / partly / holds on average / does not hold / "
             "not enough evidence / not measured, stored in `claims.json`; each names its numbers.", "",
             "| model | claim | number | uncertainty | verdict |", "|---|---|---|---|---|"]
    for role in order:
        name, (kind, _) = MODEL_NAMES[role], CLAIM_KIND[role]
        lines += [f"| {name} ({kind}s) | {c.claim} | {claim_text(c)} | {claim_uncertainty(c)} | "
                  f"**{verdict_words(c)}** |" for c in claims[name]]
    return [*lines, ""]


def validity_section(where: Layout, order: list[str]) -> list[str]:
    """Paper's rule vs recommended rule per model: held-out decoding against random sets, stability, sources."""
    described = {tag: rule.describe() for tag, rule in rules().items()}
    lines = ["## Are the selected sets instruction-specific? (held-out validity)", "",
             f"Paper's rule: {described['paper']}. Recommended rule: {described['recommended']} "
             "(why: docs/analysis.md, \"Which rule\"). Held-out decoding: 5-fold over instructions (stratified by "
             "category and source); sets selected on the training folds; the set-score decoder assigns a held-out "
             "instruction to the category whose set has the highest mean standardised frequency, the centroid "
             "decoder uses the union of the sets. Random: sets of the same per-layer shape / sets matched on layer and "
             "pooled activation frequency, drawn from whole frequency bins (mean and empirical p of each). "
             "Stability: mean Jaccard of each category's set across folds. Cross-source: Jaccard of sets selected "
             "on the AI-written vs human-written halves, same category vs different categories.", "",
             "| model | kind | rule | set-score acc [95% CI] | random: shape / matched | p: shape / matched | "
             "centroid acc | random: shape / matched | all components | chance | stability | "
             "cross-source within / across |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for role in order:
        name = MODEL_NAMES[role]
        for tag in RULE_TAGS:
            identify = _identify(where, name, tag)
            for kind, v in (identify.validity if identify else {}).items():
                h = v.headline
                s, c = (h.decoders.get(d, NO_DECODING) for d in ("set_score", "centroid"))
                lines.append(
                    f"| {name} | {kind} | {tag} | {fmt_pct(s.accuracy)} [{fmt_pct(s.ci_low)}, {fmt_pct(s.ci_high)}] "
                    f"| {fmt_pct(s.random_mean)} / {_matched(s.matched_random_mean, fmt_pct)} | "
                    f"{_num(s.p_value, '.2g')} / {_matched(s.matched_p_value, lambda v: _num(v, '.2g'))} | "
                    f"{fmt_pct(c.accuracy)} | {fmt_pct(c.random_mean)} / {_matched(c.matched_random_mean, fmt_pct)} | "
                    f"{fmt_pct(h.all_components)} | {fmt_pct(h.chance)} | "
                    f"{_num(h.stability, '.2f')} | {_num(h.cross_source_within, '.2f')} / "
                    f"{_num(h.cross_source_across, '.2f')} |")
    return [*lines, ""]


def _matched(value: float | None, fmt) -> str:
    """A frequency-matched number, or – where it was not drawn (or the summary predates it)."""
    return "–" if value is None or value != value else fmt(value)


def identify_section(where: Layout, name: str) -> list[str]:
    """Per-category counts and general/unique shares of one model under the paper's rule, with its plots."""
    from sparcom.report.outputs import identify_plot

    summary = _identify(where, name)
    if summary is None or not summary.kinds:
        return [f"*{name}: no identify output*", ""]
    lines = [f"### {name}", ""]
    for kind, k in summary.kinds.items():
        lines += [f"**{kind}** — {k.components:,} in {k.layers} layers. Selected by at least one category: "
                  f"**{k.selected_any:,}**; general (all six): **{k.general:,}** "
                  f"({fmt_pct(k.shares.get('general_share'))} of the selected); unique to one category: "
                  f"**{k.unique_total:,}** ({fmt_pct(k.shares.get('unique_share'))}); never active: "
                  f"{k.activity.get('dead', 0):,}.", "",
                  "| category | selected | unique | unique share | general share |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {category_label(c)} | {k.selected[c]:,} | {k.unique[c]:,} | "
                  f"{fmt_pct(k.shares.get(f'unique_share_{c}'))} | {fmt_pct(k.shares.get(f'general_share_{c}'))} |"
                  for c in summary.categories]
        lines += ["", *_image(where, f"{kind}: general, shared, unique per layer",
                              summary.path / identify_plot(kind, "sets_per_layer"))]
        if kind == "expert":
            lines += [*_image(where, "Expert routing frequency per category",
                              summary.path / "plots/expert_frequency.png"),
                      *_image(where, "Expert routing frequency minus its mean",
                              summary.path / "plots/expert_frequency_deviation.png")]
        lines.append("")
    return lines


def compare_section(where: Layout) -> list[str]:
    from sparcom.report.outputs import compare_plot

    folder = where.compare("paper")
    summary = read_compare(folder) if (folder / SUMMARY_FILE).is_file() else None
    neuron = summary.kinds.get("neuron") if summary else None
    if not neuron:
        return ["*no comparison output*", ""]
    lines = ["Paper's rule, base vs tuned selected on the same rows.", "",
             "| category | base ISNs | tuned ISNs | retained | gained | lost | Jaccard | Spearman ρ of p |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for category in summary.categories:
        c, rho = neuron.per_category[category], neuron.correlation[category].spearman
        lines.append(f"| {category_label(category)} | {c.base:,} | {c.tuned:,} | {c.retained:,} | "
                     f"{c.gained:,} | {c.lost:,} | {c.jaccard:.3f} | {rho:.3f} |")
    general, union = neuron.structure["general"], neuron.structure["selected_any"]
    lines += ["", f"General ISNs: {general.base:,.0f} → {general.tuned:,.0f}; selected by any category: "
              f"{union.base:,.0f} → {union.tuned:,.0f}.", "",
              *_image(where, "Retained, gained and lost ISNs", folder / compare_plot("neuron", "set_changes")), ""]
    return lines


def causal_section(where: Layout, order: list[str]) -> list[str]:
    """Per checked set: damage and specificity per category with intervals, Holm p-values and verdicts."""
    from sparcom.report.causal import causal_plot, normalised_plot

    lines = ["## Causal checks", "",
             "Mean NLL (nats per scored response token) of held-out rows' reference responses with each category's "
             "set deactivated. Damage: own-category ΔNLL minus the random sets' mean. Specificity: own ΔNLL minus "
             "the mean ΔNLL on the other categories, against the same statistic of the random sets (docs/causal.md). "
             "Intervals: paired bootstrap over rows; p: the row-aware empirical test, Holm-corrected over categories; "
             "verdict: both claims' stored outcomes with their numbers.", ""]
    found = False
    for role in order:
        name = MODEL_NAMES[role]
        for folder in _ablate_dirs(where, name):
            summary = read_causal(folder)
            settings = summary.header.settings
            for target_name, target in summary.targets.items():
                found = True
                rows = target.statistics.rows if target.statistics else {}
                lines += [f"### {name}: {folder.name}", "",
                          f"{settings.get('seeds')} {target.baseline_words}; {target.intervention_words}; "
                          f"{settings.get('expert_removal')} expert removal; "
                          f"rows: {', '.join(f'{category_label(c)} {n}' for c, n in rows.items())}"
                          f"; dtype {summary.header.model.dtype or '–'}.", "", *_tests_table(target.tests), "",
                          *_image(where, "ΔNLL matrix", folder / causal_plot(target_name)),
                          *_image(where, "ΔNLL normalised by the random sets", folder / normalised_plot(target_name)),
                          ""]
    return lines if found else [*lines, "*no causal check ran*", ""]


def _tests_table(tests: list[TestRow]) -> list[str]:
    reasons = shared_reasons(tests, category_label)

    def interval(c) -> str:
        return f"{c.excess:+.3f} [{c.excess_low:+.3f}, {c.excess_high:+.3f}]"

    return ["| set of | damage (excess over random) [95% CI] | p (Holm) | specificity excess [95% CI] | p (Holm) | "
            "test | verdict |", "|---|---:|---:|---:|---:|---|---|",
            *(f"| {category_label(t.ablated)} | {interval(t.damage)} | {_num(t.damage.p_holm, '.2g')} | "
              f"{interval(t.specificity)} | {_num(t.specificity.p_holm, '.2g')} | {t.damage.test} | "
              f"{outcomes_text(t)} |" for t in tests),
            *(["", "Why not decided:", *(f"- {reason}" for reason in reasons)] if reasons else [])]


def timings_section(timings: dict[str, dict[str, float]], workers: int = 1, elapsed: float | None = None
                    ) -> list[str]:
    """Every step's wall and CPU seconds; with several workers, what they add up to against the elapsed time."""
    load = os.getloadavg()
    side = ("" if workers <= 1 else
            f" The model steps ran on {workers} worker processes side by side, so the steps' wall times add up to "
            "more than the demo took.")
    took = "" if elapsed is None else f" This run of `sparcom demo` took {elapsed:,.0f} s (a step reused from an " \
                                      "earlier run counts its first run's time in the table, not in this)."
    lines = ["## Wall time per step", "",
             f"CPU count {os.cpu_count()}; 1-minute load average when the summary was written: {load[0]:.1f}. "
             "CPU seconds are those of the process that ran the step; on a busy machine wall time grows, CPU time "
             f"much less.{side}{took}", "", "| step | wall seconds | CPU seconds |", "|---|---:|---:|"]
    for name, t in timings.items():
        cpu = t.get("cpu_seconds")
        step = name.split("-", 1)[1] if name[:2].isdigit() else name  # in the order run; file numbers may vary
        lines.append(f"| {step} | {t['seconds']:,.0f} | {'–' if cpu is None else f'{cpu:,.0f}'} |")
    total = sum(t["seconds"] for t in timings.values())
    cpu_total = sum(t.get("cpu_seconds") or 0 for t in timings.values())
    return [*lines, f"| sum of the steps | {total:,.0f} | {cpu_total:,.0f} |", ""]


def write_summary(config: DemoConfig, where: Layout, timings: dict[str, dict[str, float]], order: list[str],
                  elapsed: float | None = None) -> Path:
    """``SUMMARY.md``: the claims (as stored in claims.json by :func:`write_claims`), the validity evidence, the
    sets, base → tuned, the causal checks, the times."""
    rows = ("all rows" if config.per_category is None else
            f"{config.per_category} rows of each category (its first AI-written and human-written rows, half each)")
    claims = read_claims(where)
    lines = ["# sparcom demo — results", "",
             f"Data: HexaInst, {rows}, profiled with `--group-by instruction` (scope `instruction`: the user text "
             f"only; chat template where the tokenizer has one). Every model ran in **{config.dtype}**. "
             f"Interactive reports: [index.html](index.html).", "",
             *claims_section(config, claims, order), *validity_section(where, order),
             "## The selected sets (paper's rule)", ""]
    for role in order:
        lines += identify_section(where, MODEL_NAMES[role])
    if BASE in order and TUNED in order:
        lines += ["## Base → tuned: Gemma-3-270M and its LoRA-tuned version", "", *compare_section(where)]
    lines += causal_section(where, order)
    lines += timings_section(timings, config.workers, elapsed)
    path = where.out / "SUMMARY.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_index(config: DemoConfig, where: Layout, groups: dict[str, list[str]]) -> Path:
    """``index.html``: one self-contained page linking the per-model reports, with each model's stored claims
    (claims.json, written with SUMMARY.md)."""
    claims = read_claims(where)
    items = []
    for report_name, roles in groups.items():
        path = where.report(report_name)
        verdicts = [f"{html.escape(MODEL_NAMES[role])}: " + "; ".join(
            f"{html.escape(c.claim)} <b>{html.escape(verdict_words(c))}</b>" for c in claims.get(MODEL_NAMES[role], []))
            for role in roles]
        size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
        items.append(f"<li><a href=\"{html.escape(_rel(where, path))}\">{html.escape(report_name)}</a> ({size})"
                     f"<br><small>{'<br>'.join(verdicts)}</small></li>")
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparcom demo</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;line-height:1.5}"
            "li{margin:1em 0}</style></head><body><h1>sparcom demo</h1>"
            f"<p>HexaInst, {'all rows' if config.per_category is None else f'{config.per_category} rows per category'}"
            f", {html.escape(config.dtype)}. The written summary with every number: "
            "<a href=\"SUMMARY.md\">SUMMARY.md</a>.</p><h2>Reports</h2><ul>" + "".join(items) + "</ul></body></html>\n")
    return write_text_atomic(where.index, page)


__all__ = ["claims_section", "model_claims", "read_claims", "write_claims", "write_index", "write_summary"]
