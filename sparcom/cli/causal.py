"""``sparcom ablate``: deactivate each category's instruction-specific components and measure the damage.

Writes a fresh ``--out`` directory (summary.json, tables/, plots/, generations.jsonl with --generate), built
under a temporary name and renamed at the end (:func:`sparcom.api.ablate`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.causal.settings import CausalSettings
from sparcom.cli.app import app, stdout_console
from sparcom.cli.options import (
    Data,
    Device,
    DeviceMap,
    Dtype,
    Overwrite,
    Plots,
    Quiet,
    Resume,
    out_option,
    with_settings,
)


def _cell(delta: float, mean: float, std: float, p: float) -> str:
    if not math.isfinite(mean):
        return f"{delta:+.3f}"
    spread = f"±{std:.3f}" if math.isfinite(std) else ""
    return f"[bold]{delta:+.3f}[/]\n{mean:+.3f}{spread}\np={p:.2g}"


def _print(result, folder: Path) -> None:
    from sparcom.data.schema import category_label

    out = stdout_console()
    s = result.settings
    out.print(f"[bold]{result.model.get('name_or_path')}[/] · selection {result.selection['path']} "
              f"({result.selection.get('description') or result.selection.get('rule')}) · "
              f"{'unique sets · ' if s.unique else ''}{s.seeds} random sets · "
              f"{f'cross-fitted over {s.folds} folds · ' if s.folds else ''}"
              f"expert removal {s.expert_removal}")
    for reason in result.overridden:
        out.print(f"[yellow]forced despite: {reason}[/]")
    baseline = "  ".join(f"{category_label(c)} {result.baseline[c]['nll']:.3f}" for c in result.evaluated)
    out.print(f"unablated mean NLL (nats/token): {baseline}")
    for name, target in result.targets.items():
        sig = target.cells()
        table = Table(title=f"ΔNLL, {name} ({', '.join(target.kinds)}): observed / random mean ± std / per-cell p "
                            "(unadjusted, descriptive: the decisions are the tests below)", title_justify="left")
        table.add_column("deactivated set")
        for c in target.evaluated:
            table.add_column(category_label(c), justify="right")
        sizes = target.sizes()
        for a, c in enumerate(target.ablated):
            table.add_row(f"{category_label(c)} ({sizes[c]:,})",
                          *(_cell(target.delta[a, j], sig["mean"][a, j], sig["std"][a, j], sig["p"][a, j])
                            for j in range(len(target.evaluated))))
        out.print(table)
        _print_tests(out, target)
    for control, targets in result.other_controls().items():
        for target in targets.values():
            _print_tests(out, target, f" ({control} control)")
    _print_matching(out, result)
    _print_dose(out, result)
    if result.accuracy:
        base = {r["evaluated"]: r for r in result.accuracy if r["condition"] == "unablated"}
        out.print("exact match unablated: " + "  ".join(
            f"{category_label(c)} {r['correct']}/{r['total']}" for c, r in base.items()))
    for note in result.notes:
        out.print(f"note: {note}")
    out.print(f"wrote {folder}")


def _interval(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "–"
    bounds = f" [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{value:+.3f}{bounds}"


def _p(p: float, holm: float, test: str) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.2g} → {holm:.2g}\n{test}"


def _print_tests(out, target, control: str = "") -> None:
    """Per category: damage and specificity with intervals, their random means, p → p_holm (test) and verdict."""
    from sparcom.data.schema import category_label
    from sparcom.report.verdicts import specific_headline, verdict_label

    stats = target.statistics
    if stats is None or not stats.tests:
        return
    drawn = (f"{stats.random_sets} random sets" if stats.planned_random_sets is None else
             f"the first {stats.random_sets} of {stats.planned_random_sets} random sets (stopped when decided)")
    table = Table(title=f"damage and specificity, {target.name}{control}: selected set [{stats.level:.0%} bootstrap "
                        f"interval over rows] vs {drawn}; p → Holm-adjusted p (test)", title_justify="left")
    for column in ("set", "damage", "random", "p", "specificity", "random ", "p ", "verdict"):
        table.add_column(column.strip(), justify="left" if column in ("set", "verdict") else "right")
    for t in stats.tests:
        cells = [(_interval(c.estimate, c.low, c.high), _interval(c.random_mean, math.nan, math.nan),
                  _p(c.p, c.p_holm, c.test)) for c in (t.damage, t.specificity)]
        table.add_row(category_label(t.ablated), *cells[0], *cells[1], verdict_label(t.decision))
    out.print(table)
    held, tested = specific_headline(stats.tests)
    out.print(f"specific after Holm correction: {held} of {tested} categories (α = {stats.alpha}; "
              f"{stats.tests[0].damage.test} test)")
    for claim in stats.claims.values():
        pooled = claim.pooled
        first = (f" (pooled over {pooled.categories} categories: {pooled.estimate:+.3f} vs random "
                 f"{pooled.random_mean:+.3f}, p = {pooled.p:.3g})" if pooled and math.isfinite(pooled.p) else "")
        out.print(f"{claim.claim}: {claim.outcome}{first}")


def _print_matching(out, result) -> None:
    """How well each control's random sets match the selected sets (mean of the matched statistic)."""
    rows = [row for targets in result.controls.values() for t in targets.values() for row in t.matching]
    if not rows:
        return
    table = Table(title=f"control match: mean {rows[0]['statistic']} of the selected set vs its random sets "
                        "(mean, min–max over the sets); widened: blocks / selected components whose bin was "
                        "merged with lower bins; shared: the share of the set's members a random set holds too",
                  title_justify="left")
    for column in ("target", "control", "set", "selected", "random", "widened", "shared"):
        table.add_column(column, justify="left" if column in ("target", "control", "set") else "right")
    for r in rows:
        table.add_row(r["target"], r["control"], r["category"], f"{r['selected_mean']:.3f}",
                      f"{r['random_mean']:.3f} [{r['random_min']:.3f}, {r['random_max']:.3f}]",
                      f"{r['widened_blocks']} / {r['widened_components']}", f"{r.get('shared', float('nan')):.2f}")
    out.print(table)


def _print_dose(out, result) -> None:
    """Per category: own-category ΔNLL of the top-k set and of its random sets (main control) at each k."""
    from sparcom.data.schema import category_label

    if result.dose is None:
        return
    control = result.settings.controls[0]
    table = Table(title=f"dose–response ({result.dose.ranking} score): own-category ΔNLL of the top-k / random "
                        f"mean, min–max ({control} control) / mean ΔNLL on the other categories",
                  title_justify="left")
    for column in ("set", "k", "own", "random", "others"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for curve in result.dose.curves:
        own, others = curve.own_and_others(curve.delta)
        band = curve.band(control)
        for i, k in enumerate(curve.sizes):
            table.add_row(f"{curve.target} {category_label(curve.category)}" if i == 0 else "", str(k),
                          f"{own[i]:+.3f}", f"{band['own_mean'][i]:+.3f} [{band['own_min'][i]:+.3f}, "
                          f"{band['own_max'][i]:+.3f}]", f"{others[i]:+.3f}")
    out.print(table)


@app.command("ablate")
@with_settings(CausalSettings)
def ablate_command(
    model: Annotated[str, typer.Argument(help="The model the selection was made on: hub id, folder, .gguf or "
                                              "built-in name.", show_default=False)],
    data: Data,
    out: out_option("Output directory (summary.json, tables, plots, generations.jsonl)"),
    selection: Annotated[Path | None, typer.Option("--selection", help="A 'sparcom identify' output folder.")
                         ] = None,
    run: Annotated[Path | None, typer.Option("--run", help="Cross-fitting instead of a selection: a run profiled "
                                                           "with --group-by instruction (with --crossfit-folds and "
                                                           "the rule options).")] = None,
    settings: CausalSettings = None,
    resume: Resume = False,
    dtype: Dtype = "auto",
    device: Device = "cpu",
    device_map: DeviceMap = None,
    plots: Plots = True,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Deactivate each category's selected neurons/experts; ΔNLL per category against matched random sets.

    By default a set's activations are set to their means over the profile run (--intervention) and its random sets
    are drawn from the same layer and bin of activation frequency, the set's own members included (--control).

    SIGTERM and Ctrl-C stop it with one line (exit 130); --resume continues from the last finished condition.
    """
    from sparcom.api import ablate

    result = ablate(model, selection, data, settings, run=run, out=out, resume=resume, dtype=dtype, device=device,
                    device_map=device_map, overwrite=overwrite, plots=plots, progress=not quiet)
    from sparcom.distributed import is_main_process  # torch: only once the arguments were checked

    if is_main_process():  # under torchrun rank 0 alone prints (and writes)
        _print(result, out)
