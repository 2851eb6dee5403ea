"""The demo's ``SUMMARY.md`` and ``index.html``: headline numbers read back from the outputs the steps wrote."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from sparcom.data.schema import category_label
from sparcom.demo.config import BASE, INSTRUCT, MODEL_NAMES, MOE, TUNED, DemoConfig
from sparcom.demo.layout import RULE_TAGS, Layout, rules
from sparcom.report.files import SUMMARY_FILE

#: The component kind whose claims each model answers, and the causal target that removes it.
CLAIM_KIND = {INSTRUCT: ("neuron", "neurons"), BASE: ("neuron", "neurons"), TUNED: ("neuron", "neurons"),
              MOE: ("expert", "experts")}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}%"


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


def _claims_ablate(where: Layout, role: str) -> Path | None:
    """The causal check that answers a model's claims: the paper's sets, renormalised expert removal."""
    _, target = CLAIM_KIND[role]
    path = where.ablate(MODEL_NAMES[role], "paper", target, "renormalize")
    return path if (path / SUMMARY_FILE).is_file() else None


def claims_section(config: DemoConfig, where: Layout, order: list[str]) -> list[str]:
    from sparcom.report.claims import claims_table

    lines = ["## Do the paper's claims hold here?", "",
             "Each claim is judged on the paper's rule (top ε = 1% of each category's activation frequencies) from "
             "this demo's own outputs: generality and uniqueness from `identify` with held-out validity, critical "
             "role and specificity from the causal check (paired bootstrap over rows, Holm over categories, "
             f"{config.seeds} random sets of each set's per-layer shape). Verdicts: holds / partly / does not hold / "
             "not enough evidence / not measured. The rules behind each verdict: `sparcom/report/claims.py`.", "",
             "| model | claim | number | uncertainty | verdict |", "|---|---|---|---|---|"]
    for role in order:
        name = MODEL_NAMES[role]
        kind, target = CLAIM_KIND[role]
        identify = _load(where.identify(name, "paper") / SUMMARY_FILE)
        ablate_dir = _claims_ablate(where, role)
        not_run = ("causal check not run in `make demo` (its budget); `make demo-full` runs it"
                   if not any(r == role for r, *_ in config.causal) else "causal check output missing")
        rows = claims_table(identify, _load(ablate_dir / SUMMARY_FILE) if ablate_dir else None, kind, target,
                            not_run=not_run)
        for row in rows:
            lines.append(f"| {name} ({kind}s) | {row['claim']} | {row['text']} | {row['uncertainty']} | "
                         f"**{row['verdict']}** |")
    return [*lines, ""]


def validity_section(where: Layout, order: list[str]) -> list[str]:
    """Paper's rule vs recommended rule per model: held-out decoding against random sets, stability, sources."""
    described = {tag: rule.describe() for tag, rule in rules().items()}
    lines = ["## Are the selected sets instruction-specific? (held-out validity)", "",
             f"Paper's rule: {described['paper']}. Recommended rule: {described['recommended']} "
             "(why: docs/analysis.md, \"Which rule\"). Held-out decoding: 5-fold over instructions (stratified by "
             "category and source); sets selected on the training folds; the set-score decoder assigns a held-out "
             "instruction to the category whose set has the highest mean standardised frequency, the centroid "
             "decoder uses the union of the sets. Random: sets of the same per-layer shape (mean and empirical p). "
             "Stability: mean Jaccard of each category's set across folds. Cross-source: Jaccard of sets selected "
             "on the AI-written vs human-written halves, same category vs different categories.", "",
             "| model | kind | rule | set-score acc [95% CI] | random | p | centroid acc | random | all components | "
             "chance | stability | cross-source within / across |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for role in order:
        name = MODEL_NAMES[role]
        for tag in RULE_TAGS:
            validity = _load(where.identify(name, tag) / SUMMARY_FILE).get("validity") or {}
            for kind, v in validity.items():
                if not isinstance(v, dict) or "headline" not in v:
                    continue
                h = v["headline"]
                s, c = h.get("set_score") or {}, h.get("centroid") or {}
                lines.append(
                    f"| {name} | {kind} | {tag} | {_pct(s.get('accuracy'))} [{_pct(s.get('ci_low'))}, "
                    f"{_pct(s.get('ci_high'))}] | {_pct(s.get('random_mean'))} | {_num(s.get('p_value'), '.2g')} | "
                    f"{_pct(c.get('accuracy'))} | {_pct(c.get('random_mean'))} | {_pct(h.get('all_components'))} | "
                    f"{_pct(h.get('chance'))} | {_num(h.get('stability'), '.2f')} | "
                    f"{_num(h.get('cross_source_within'), '.2f')} / {_num(h.get('cross_source_across'), '.2f')} |")
    return [*lines, ""]


def identify_section(where: Layout, name: str) -> list[str]:
    """Per-category counts and general/unique shares of one model under the paper's rule, with its plots."""
    from sparcom.report.outputs import identify_plot

    folder = where.identify(name, "paper")
    summary = _load(folder / SUMMARY_FILE)
    if not summary.get("kinds"):
        return [f"*{name}: no identify output*", ""]
    lines = [f"### {name}", ""]
    for kind, counts in summary["kinds"].items():
        shares = counts["shares"]
        lines += [f"**{kind}** — {counts['components']:,} in {counts['layers']} layers. Selected by at least one "
                  f"category: **{counts['selected_any']:,}**; general (all six): **{counts['general']:,}** "
                  f"({_pct(shares.get('general_share'))} of the selected); unique to one category: "
                  f"**{counts['unique_total']:,}** ({_pct(shares.get('unique_share'))}); never active: "
                  f"{counts['dead']:,}.", "",
                  "| category | selected | unique | unique share | general share |", "|---|---:|---:|---:|---:|"]
        for category in summary["categories"]:
            lines.append(f"| {category_label(category)} | {counts['selected'][category]:,} | "
                         f"{counts['unique'][category]:,} | {_pct(shares.get(f'unique_share_{category}'))} | "
                         f"{_pct(shares.get(f'general_share_{category}'))} |")
        lines += ["", *_image(where, f"{kind}: general, shared, unique per layer",
                              folder / identify_plot(kind, "sets_per_layer"))]
        if kind == "expert":
            lines += [*_image(where, "Expert routing frequency per category", folder / "plots/expert_frequency.png"),
                      *_image(where, "Expert routing frequency minus its mean",
                              folder / "plots/expert_frequency_deviation.png")]
        lines.append("")
    return lines


def compare_section(where: Layout) -> list[str]:
    from sparcom.report.outputs import compare_plot

    folder = where.compare("paper")
    summary = _load(folder / SUMMARY_FILE)
    neuron = summary.get("kinds", {}).get("neuron")
    if not neuron:
        return ["*no comparison output*", ""]
    lines = ["Paper's rule, base vs tuned selected on the same rows.", "",
             "| category | base ISNs | tuned ISNs | retained | gained | lost | Jaccard | Spearman ρ of p |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for category in summary["categories"]:
        c = neuron["per_category"][category]
        rho = neuron["correlation"][category]["spearman"]
        lines.append(f"| {category_label(category)} | {c['base']:,} | {c['tuned']:,} | {c['retained']:,} | "
                     f"{c['gained']:,} | {c['lost']:,} | {c['jaccard']:.3f} | {rho:.3f} |")
    structure = neuron["structure"]
    lines += ["", f"General ISNs: {structure['general']['base']:,} → {structure['general']['tuned']:,}; "
              f"selected by any category: {structure['selected_any']['base']:,} → "
              f"{structure['selected_any']['tuned']:,}.", "",
              *_image(where, "Retained, gained and lost ISNs", folder / compare_plot("neuron", "set_changes")), ""]
    return lines


def causal_section(where: Layout, order: list[str]) -> list[str]:
    """Per checked set: damage and specificity per category with intervals, Holm p-values and verdicts."""
    from sparcom.report.causal import causal_plot, normalised_plot

    lines = ["## Causal checks", "",
             "Mean NLL (nats per scored response token) of held-out rows' reference responses with each category's "
             "set deactivated. Damage: own-category ΔNLL minus the random sets' mean. Specificity: own ΔNLL minus "
             "the mean ΔNLL on the other categories, against the same statistic of the random sets (docs/causal.md). "
             "Intervals: paired bootstrap over rows; p: Holm-corrected over categories.", ""]
    found = False
    for role in order:
        name = MODEL_NAMES[role]
        for folder in _ablate_dirs(where, name):
            summary = _load(folder / SUMMARY_FILE)
            settings = summary.get("settings", {})
            for target_name, target in summary.get("targets", {}).items():
                stats = target.get("statistics") or {}
                tests = stats.get("tests") or []
                found = True
                lines += [f"### {name}: {folder.name}", "",
                          f"{settings.get('seeds')} random sets; {settings.get('expert_removal')} expert removal; "
                          f"rows: {', '.join(f'{category_label(c)} {n}' for c, n in (stats.get('rows') or {}).items())}"
                          f"; dtype {summary.get('model', {}).get('dtype', '–')}.", "",
                          "| set of | damage (excess over random) [95% CI] | p (Holm) | specificity excess [95% CI] | "
                          "p (Holm) | test | verdict |", "|---|---:|---:|---:|---:|---|---|"]
                for t in tests:
                    lines.append(
                        f"| {category_label(t['ablated'])} | {t['damage_excess']:+.3f} [{t['damage_excess_low']:+.3f}, "
                        f"{t['damage_excess_high']:+.3f}] | {_num(t['damage_p_holm'], '.2g')} | "
                        f"{t['specificity_excess']:+.3f} [{t['specificity_excess_low']:+.3f}, "
                        f"{t['specificity_excess_high']:+.3f}] | {_num(t['specificity_p_holm'], '.2g')} | "
                        f"{t.get('damage_test', '–')} | {t['verdict']} |")
                lines += ["", *_image(where, "ΔNLL matrix", folder / causal_plot(target_name)),
                          *_image(where, "ΔNLL normalised by the random sets", folder / normalised_plot(target_name)),
                          ""]
    return lines if found else [*lines, "*no causal check ran*", ""]


def timings_section(timings: dict[str, dict[str, float]]) -> list[str]:
    load = os.getloadavg()
    lines = ["## Wall time per step", "",
             f"CPU count {os.cpu_count()}; 1-minute load average when the summary was written: {load[0]:.1f}. "
             "CPU seconds are this process's (both threads); on a busy machine wall time grows, CPU time much less.",
             "", "| step | wall seconds | CPU seconds |", "|---|---:|---:|"]
    for name, t in timings.items():
        cpu = t.get("cpu_seconds")
        step = name.split("-", 1)[1] if name[:2].isdigit() else name  # in the order run; file numbers may vary
        lines.append(f"| {step} | {t['seconds']:,.0f} | {'–' if cpu is None else f'{cpu:,.0f}'} |")
    total = sum(t["seconds"] for t in timings.values())
    cpu_total = sum(t.get("cpu_seconds") or 0 for t in timings.values())
    return [*lines, f"| total | {total:,.0f} | {cpu_total:,.0f} |", ""]


def write_summary(config: DemoConfig, where: Layout, timings: dict[str, dict[str, float]], order: list[str]) -> Path:
    """``SUMMARY.md``: the claims, the validity evidence, the sets, base → tuned, the causal checks, the times."""
    rows = ("all rows" if config.per_category is None else
            f"{config.per_category} rows of each category (its first AI-written and human-written rows, half each)")
    lines = ["# sparcom demo — results", "",
             f"Data: HexaInst, {rows}, profiled with `--group-by instruction` (scope `instruction`: the user text "
             f"only; chat template where the tokenizer has one). Every model ran in **{config.dtype}**. "
             f"Interactive reports: [index.html](index.html).", "",
             *claims_section(config, where, order), *validity_section(where, order),
             "## The selected sets (paper's rule)", ""]
    for role in order:
        lines += identify_section(where, MODEL_NAMES[role])
    if BASE in order and TUNED in order:
        lines += ["## Base → tuned: Gemma-3-270M and its LoRA-tuned version", "", *compare_section(where)]
    lines += causal_section(where, order)
    lines += timings_section(timings)
    path = where.out / "SUMMARY.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_index(config: DemoConfig, where: Layout, groups: dict[str, list[str]]) -> Path:
    """``index.html``: one self-contained page linking the per-model reports, with each model's claim verdicts."""
    from sparcom.report.claims import claims_table

    items = []
    for report_name, roles in groups.items():
        path = where.report(report_name)
        verdicts: list[str] = []
        for role in roles:
            kind, target = CLAIM_KIND[role]
            ablate_dir = _claims_ablate(where, role)
            rows = claims_table(_load(where.identify(MODEL_NAMES[role], "paper") / SUMMARY_FILE),
                                _load(ablate_dir / SUMMARY_FILE) if ablate_dir else None, kind, target)
            verdicts.append(f"{html.escape(MODEL_NAMES[role])}: " + "; ".join(
                f"{html.escape(r['claim'])} <b>{html.escape(r['verdict'])}</b>" for r in rows))
        size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
        items.append(f"<li><a href=\"{html.escape(_rel(where, path))}\">{html.escape(report_name)}</a> ({size})"
                     f"<br><small>{'<br>'.join(verdicts)}</small></li>")
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparcom demo</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;line-height:1.5}"
            "li{margin:1em 0}</style></head><body><h1>sparcom demo</h1>"
            f"<p>HexaInst, {'all rows' if config.per_category is None else f'{config.per_category} rows per category'}"
            f", {html.escape(config.dtype)}. The written summary with every number: "
            "<a href=\"SUMMARY.md\">SUMMARY.md</a>.</p><h2>Reports</h2><ul>" + "".join(items) + "</ul></body></html>\n")
    from sparcom.outputs import write_text_atomic

    return write_text_atomic(where.index, page)


__all__ = ["claims_section", "write_index", "write_summary"]
