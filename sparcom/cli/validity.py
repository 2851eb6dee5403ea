"""``sparcom evaluate`` and ``sparcom sweep``: is a selection instruction-specific? (:mod:`sparcom.api`).

``evaluate`` decodes other instructions with a selection's fixed sets; ``sweep`` is the rule / ε study behind the
recommended default rule. Both write a fresh ``--out`` folder (tables/, plots/, summary.json).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.analysis.settings import EvaluateSettings, SweepSettings
from sparcom.cli.analysis import print_decoding
from sparcom.cli.app import app, stdout_console
from sparcom.cli.options import Overwrite, Plots, RunArgument, out_option, with_settings


@app.command("evaluate")
@with_settings(EvaluateSettings)
def evaluate_command(
    selection: Annotated[Path, typer.Argument(help="An identify output folder (its selection).", show_default=False)],
    run: RunArgument,
    out: out_option("Output directory (tables, plots, summary.json)"),
    settings: EvaluateSettings,
    plots: Plots = True,
    overwrite: Overwrite = False,
) -> None:
    """Decode OTHER instructions' categories with a selection's fixed sets, against random sets of the same shape.

    RUN: other instructions profiled with --group-by instruction on the same model and settings. Also reports the
    centroid on all components and chance; nothing is re-selected.
    """
    from sparcom.api import evaluate
    from sparcom.kinds import KIND_UNITS

    result = evaluate(selection, run, settings, out=out, overwrite=overwrite, plots=plots)
    console = stdout_console()
    meta = result.selection.meta
    console.print(f"[bold]{result.selection.path}[/] ({meta.get('description') or meta.get('rule')}) on "
                  f"[bold]{result.run.path}[/]")
    for kind, k in result.kinds.items():
        sizes = ", ".join(f"{c} {n:,}" for c, n in k.sizes.items())
        print_decoding(k.decoding.summary(), KIND_UNITS[kind],
                       f"{KIND_UNITS[kind]}: {k.decoding.decoders['set_score'].evaluated} instructions, "
                       f"{settings.validity.folds}-fold (decoders fitted on training folds; sets fixed: {sizes})")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {out}")


def _cell(value: float, percent: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1%}" if percent else f"{value:.3g}"


@app.command("sweep")
@with_settings(SweepSettings)
def sweep_command(
    run: RunArgument,
    out: out_option("Output directory (tables, plots, summary.json)"),
    settings: SweepSettings,
    plots: Plots = True,
    overwrite: Overwrite = False,
) -> None:
    """The rule / ε study: held-out validity of every rule over its ε grid (--group-by instruction runs).

    Per rule and ε: set sizes, general/unique shares, held-out decoding against random sets of the same shape,
    stability and cross-source agreement. Slow: about 10–20 s per rule and ε on SmolLM2.
    """
    from sparcom.api import sweep

    result = sweep(run, settings, out=out, overwrite=overwrite, plots=plots)
    validity = settings.validity
    console = stdout_console()
    for kind, rows in result.rows.items():
        table = Table(title=f"{kind}: {validity.folds}-fold held-out decoding, {validity.random_sets} random sets "
                            "per fold",
                      title_justify="left")
        for column in ("rule", "ε", "mean share", "unique", "set-score", "random", "p", "centroid", "random ",
                       "p ", "stability", "within/across"):
            table.add_column(column, justify="left" if column == "rule" else "right")
        for r in rows:
            table.add_row(r["variant"], f"{r['epsilon']:g}", _cell(r["mean_fraction"]), _cell(r["unique_share"]),
                          _cell(r["set_score_accuracy"]), _cell(r["set_score_random_mean"]),
                          _cell(r["set_score_p"], False), _cell(r["centroid_accuracy"]),
                          _cell(r["centroid_random_mean"]), _cell(r["centroid_p"], False),
                          _cell(r["stability"], False),
                          f"{_cell(r['cross_source_within'], False)}/{_cell(r['cross_source_across'], False)}",
                          style="bold" if r["variant"] == "percentile" and r["is_default"] else None)
        console.print(table)
        console.print(f"all components (centroid) {_cell(rows[0]['all_components_accuracy'])}; "
                      f"chance {_cell(rows[0]['chance'])}; bold: the paper's rule at its default ε")
    console.print(f"wrote {out}")
