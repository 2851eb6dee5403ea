"""``sparcom identify`` and ``sparcom compare``: the analysis commands over profile runs (:mod:`sparcom.api`).

Both write into a fresh ``--out`` directory (tables/, plots/, summary.json; identify also the selection masks),
built under a temporary name and renamed at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.analysis.settings import CompareSettings, IdentifySettings
from sparcom.cli.app import app, stdout_console
from sparcom.cli.options import Overwrite, Plots, RunArgument, out_option, with_settings


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _print_identify(result, folder: Path) -> None:
    from sparcom.analysis.bootstrap import SUBSAMPLING
    from sparcom.data.schema import category_label
    from sparcom.kinds import KIND_NOUNS

    out = stdout_console()
    out.print(f"[bold]{result.run.path}[/]: {result.rule.describe()}")
    for kind, a in result.kinds.items():
        intervals = {row["statistic"]: row for row in a.intervals or []}
        table = Table(title=f"{KIND_NOUNS[kind]} ({a.counts['components']:,} components)", title_justify="left")
        for column in ("category", "selected", "unique", "unique share", "general share"):
            table.add_column(column, justify="left" if column == "category" else "right")
        for category in a.categories:
            size = a.counts[f"selected_{category}"]
            unique = a.counts[f"unique_{category}"]
            share = unique / size if size else float("nan")
            cell = _percent(share)
            ci = intervals.get(f"unique_share_{category}")
            if ci and a.replicate_method == SUBSAMPLING and not math.isnan(ci["low"]):
                cell += f" [{ci['low']:.1%}, {ci['high']:.1%}]"
            table.add_row(category_label(category), f"{size:,}", f"{unique:,}", cell,
                          _percent(a.counts["general"] / size if size else float("nan")))
        out.print(table)
        union = a.counts["selected_any"]
        out.print(f"general (all categories): {a.counts['general']:,} of {union:,} selected "
                   f"({_percent(a.counts['general'] / union if union else None)}); dead: {a.activity['dead']:,}; "
                   + _interval_line(a))
    print_validity(result)
    out.print(f"wrote {folder}")


def _interval_line(analysis) -> str:
    """How the set statistics' uncertainty was measured, in a few words (the intervals are in the tables)."""
    from sparcom.analysis.bootstrap import SUBSAMPLING

    if analysis.intervals is None:
        return "no intervals (profile with --group-by instruction for subsampling intervals)"
    if analysis.replicate_method == SUBSAMPLING:
        return "intervals: subsampling of the instructions (bootstrap_intervals.csv)"
    return (f"bootstrap spread of {analysis.replicates} Poisson replicates (not a confidence interval for these "
            "thresholded statistics; profile with --group-by instruction for one)")


@app.command("identify")
@with_settings(IdentifySettings)
def identify_command(
    run: RunArgument,
    out: out_option("Output directory (selection, tables, plots, summary.json)"),
    settings: IdentifySettings,
    plots: Plots = True,
    overwrite: Overwrite = False,
) -> None:
    """Select the instruction-specific neurons (ISNs) and experts (ISEs) of each category; measure their validity.

    Validity (held-out decoding against random sets, stability, cross-source agreement) needs a run profiled with
    --group-by instruction.
    """
    from sparcom.api import identify

    result = identify(run, settings, out=out, overwrite=overwrite, plots=plots)
    _print_identify(result, out)


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None or math.isnan(low) else f" [{low:.1%}, {high:.1%}]"


def print_decoding(decoding: dict, noun: str, title: str) -> None:
    """A table of held-out decoding: each decoder against its random sets, all components and chance."""
    out = stdout_console()
    table = Table(title=title, title_justify="left")
    for column in ("decoder", "accuracy [CI]", "random sets (mean ± sd)", "p", "frequency-matched (mean, p)",
                   "undecided"):
        table.add_column(column, justify="left" if column == "decoder" else "right")
    names = {"set_score": "set-score (mean z on each set)", "centroid": "nearest centroid (union of the sets)"}
    for name, d in decoding["decoders"].items():
        table.add_row(names.get(name, name), f"{_percent(d['accuracy'])}{_interval(d['ci_low'], d['ci_high'])}",
                      f"{_percent(d.get('random_mean'))} ± {_percent(d.get('random_sd'))}",
                      "-" if d.get("p_value") is None else f"{d['p_value']:.3g}",
                      "-" if d.get("matched_p_value") is None else
                      f"{_percent(d.get('matched_random_mean'))}, {d['matched_p_value']:.3g}", str(d["undecided"]))
    every = decoding["all_components"]
    table.add_row(f"nearest centroid (all {noun})",
                  f"{_percent(every['accuracy'])}{_interval(every['ci_low'], every['ci_high'])}", "", "", "", "")
    table.add_row("chance (1/K)", _percent(decoding["chance"]), "", "", "", "")
    out.print(table)


def print_validity(result) -> None:
    """The validity evidence of an identify result, or the note saying how to get it."""
    from sparcom.kinds import KIND_NOUNS, KIND_UNITS

    out = stdout_console()
    if not result.validity:
        for note in result.notes:
            if "validity" in note:
                out.print(f"[yellow]note:[/] {note}")
        return
    settings = result.validity_settings
    for kind, v in result.validity.items():
        s = v.summary()
        decoding = s["held_out_decoding"]
        if decoding:
            print_decoding(decoding, KIND_UNITS[kind], f"validity of the {KIND_NOUNS[kind]}: {settings.folds}-fold "
                                                       f"held-out decoding, {settings.random_sets} random sets per fold")
        stability = s["stability"]
        if stability:
            out.print(f"stability: mean Jaccard of each category's set across the {stability['replicates']} "
                      f"training folds {stability['mean_jaccard']:.3f}"
                      + (f"; across {s['bootstrap_stability']['replicates']} resamples "
                         f"{s['bootstrap_stability']['mean_jaccard']:.3f}" if s["bootstrap_stability"] else ""))
        cross = s["cross_source"]
        if cross:
            wins = sum(cross["within_exceeds_across"].values())
            out.print(f"cross-source (sets selected on the AI vs the human half): Jaccard within a category "
                      f"{cross['within_mean']:.3f}, across categories {cross['across_mean']:.3f}; within > every "
                      f"across for {wins} of {len(cross['within'])} categories")
        for note in v.notes:
            out.print(f"[yellow]note:[/] {note}")
    for note in result.notes:
        if "validity" in note:
            out.print(f"[yellow]note:[/] {note}")


def _print_compare(result, folder: Path) -> None:
    from sparcom.data.schema import category_label
    from sparcom.kinds import KIND_NOUNS

    out = stdout_console()
    out.print(f"[bold]{result.base_run.path}[/] → [bold]{result.tuned_run.path}[/]: {result.rule.describe()}")
    for reason in result.overridden:
        out.print(f"[yellow]forced despite: {reason}[/]")
    for note in result.notes:
        out.print(f"note: {note}")
    for kind, c in result.kinds.items():
        table = Table(title=KIND_NOUNS[kind], title_justify="left")
        for column in ("category", "base", "tuned", "retained", "gained", "lost", "Jaccard", "Spearman ρ"):
            table.add_column(column, justify="left" if column == "category" else "right")
        correlation = {r["category"]: r for r in c.correlation}
        for row in c.changes:
            jac, rho = row["jaccard"], correlation[row["category"]]["spearman"]
            table.add_row(category_label(row["category"]), *(f"{row[k]:,}" for k in ("base", "tuned", "retained",
                                                                                        "gained", "lost")),
                          "-" if math.isnan(jac) else f"{jac:.3f}", "-" if math.isnan(rho) else f"{rho:.3f}")
        out.print(table)
    out.print(f"wrote {folder}")


@app.command("compare")
@with_settings(CompareSettings)
def compare_command(
    base_run: Annotated[Path, typer.Argument(help="Profile run of the base model.", show_default=False)],
    tuned_run: Annotated[Path, typer.Argument(help="Profile run of the tuned model.", show_default=False)],
    out: out_option("Output directory (tables, plots, summary.json)"),
    settings: CompareSettings,
    plots: Plots = True,
    overwrite: Overwrite = False,
) -> None:
    """Compare the ISNs/ISEs of a base and a tuned model: retained, gained, lost, correlation, routing shift."""
    from sparcom.api import compare

    result = compare(base_run, tuned_run, settings, out=out, overwrite=overwrite, plots=plots)
    _print_compare(result, out)
