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

from sparcom.analysis.selection import DEFAULT_RULE
from sparcom.cli.app import app, stdout_console


def _targets(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _cell(delta: float, mean: float, std: float, p: float, level: float) -> str:
    if not math.isfinite(mean):
        return f"{delta:+.3f}"
    star = "*" if math.isfinite(p) and p <= level else ""
    spread = f"±{std:.3f}" if math.isfinite(std) else ""
    return f"[bold]{delta:+.3f}[/]{star}\n{mean:+.3f}{spread}\np={p:.2g}"


def _print(result, folder: Path) -> None:
    from sparcom.causal.settings import SIGNIFICANCE_LEVEL as level
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
        sig = target.significance()
        table = Table(title=f"ΔNLL, {name} ({', '.join(target.kinds)}): observed / random mean ± std / p "
                            f"(* p ≤ {level})", title_justify="left")
        table.add_column("deactivated set")
        for c in target.evaluated:
            table.add_column(category_label(c), justify="right")
        sizes = target.sizes()
        for a, c in enumerate(target.ablated):
            table.add_row(f"{category_label(c)} ({sizes[c]:,})",
                          *(_cell(target.delta[a, j], sig["mean"][a, j], sig["std"][a, j], sig["p"][a, j], level)
                            for j in range(len(target.evaluated))))
        out.print(table)
        _print_tests(out, target)
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


def _print_tests(out, target) -> None:
    """Per category: damage and specificity with intervals, their random means, p → p_holm (test) and verdict."""
    from sparcom.causal.statistics import verdict_label
    from sparcom.data.schema import category_label

    stats = target.statistics
    if stats is None or not stats.tests:
        return
    table = Table(title=f"damage and specificity, {target.name}: selected set [95% bootstrap interval over rows] vs "
                        f"{stats.random_sets} random sets; p → Holm-adjusted p (test)", title_justify="left")
    for column in ("set", "damage", "random", "p", "specificity", "random ", "p ", "verdict"):
        table.add_column(column.strip(), justify="left" if column in ("set", "verdict") else "right")
    for t in stats.tests:
        verdict = verdict_label(t["verdict"])
        table.add_row(category_label(t["ablated"]), _interval(t["damage"], t["damage_low"], t["damage_high"]),
                      _interval(t["damage_random_mean"], math.nan, math.nan),
                      _p(t["damage_p"], t["damage_p_holm"], t["damage_test"]),
                      _interval(t["specificity"], t["specificity_low"], t["specificity_high"]),
                      _interval(t["specificity_random_mean"], math.nan, math.nan),
                      _p(t["specificity_p"], t["specificity_p_holm"], t["specificity_test"]), verdict)
    out.print(table)
    held = sum(1 for t in stats.tests if t["verdict"].startswith("specific:"))
    tested = sum(1 for t in stats.tests if not t["reason"])
    out.print(f"specific after Holm correction: {held} of {tested} categories (α = {stats.alpha}; "
              f"test {stats.test} → {stats.test_used})")


@app.command("ablate")
def ablate_command(
    model: Annotated[str, typer.Argument(help="The model the selection was made on: hub id, folder, .gguf or "
                                              "built-in name.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Instruction rows with reference outputs (JSON Lines).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (must not exist unless --overwrite).")],
    selection: Annotated[Path | None, typer.Option("--selection", help="A 'sparcom identify' output directory.")
                         ] = None,
    run: Annotated[Path | None, typer.Option("--run", help="Cross-fitting: a run profiled with --group-by "
                                                           "instruction (use with --folds, --rule, --epsilon).")] = None,
    rule: Annotated[str, typer.Option("--rule", help="Cross-fitting: the selection rule applied on each fold's "
                                                     "complement (percentile, threshold, layer-percentile, lape, "
                                                     "contrast, test).")] = DEFAULT_RULE,
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="Cross-fitting: the rule's ε (default: the "
                                                                    "rule's).")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Cross-fitting: select on k − 1 folds of the run's "
                                                              "instructions, score the held-out fold.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Random control sets per category (0: none).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="First seed of the random sets (seeds seed … seed+N−1).")] = 0,
    per_category: Annotated[int | None, typer.Option("--per-category", help="Evaluate only N rows of each "
                                                                            "category, half AI-written, half human-written "
                                                                            "(each source's first rows).")] = None,
    targets: Annotated[list[str] | None, typer.Option(
        "--targets", help="What to deactivate (repeat or comma-separate): neurons (dense, shared-expert and expert "
                          "neurons), experts, or a single kind. Default: every target the selection has.")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="Also measure greedy exact-match accuracy on cls, "
                                                              "math and short qa answers.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Generation bound per answer.")] = 64,
    generate_seeds: Annotated[int, typer.Option("--generate-seeds", help="Random sets also scored by generation "
                                                                         "(the first N of --seeds).")] = 3,
    expert_removal: Annotated[str, typer.Option(
        "--expert-removal", help="renormalize (drop the expert, rescale the token's other weights) or next-best "
                                 "(route to the best remaining experts).")] = "renormalize",
    unique: Annotated[bool, typer.Option("--unique", help="Deactivate only the components unique to each category "
                                                          "(selected for it and for no other category).")] = False,
    exclude_profiled: Annotated[bool, typer.Option("--exclude-profiled", help="Skip rows the selection's profile "
                                                                              "run counted (held-out check).")] = False,
    test: Annotated[str, typer.Option("--test", help="p-values of damage and specificity: empirical, parametric "
                                                     "(t tail of the random sets, normality checked) or auto.")
                    ] = "auto",
    replicates: Annotated[int, typer.Option("--replicates", help="Bootstrap replicates over rows.")] = 1000,
    max_scored_tokens: Annotated[int | None, typer.Option("--max-scored-tokens", help="Score only the first N "
                                                                                      "tokens of each reference "
                                                                                      "response.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted check of --out (same "
                                                          "arguments).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")] = "cpu",
    device_map: Annotated[str | None, typer.Option("--device-map", help="'auto' spreads a large model over "
                                                                        "devices.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Ablate even if the selection was made on other weights "
                                                        "or another tokenizer.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out causal directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Deactivate each category's selected neurons/experts; ΔNLL per category against random sets of equal shape.

    SIGTERM and Ctrl-C stop it with one line (exit 130); --resume continues from the last finished condition.
    """
    from sparcom.api import ablate
    from sparcom.causal.settings import CausalSettings
    from sparcom.distributed import is_main_process

    settings = CausalSettings(seeds=seeds, seed=seed, per_category=per_category, batch_size=batch_size,
                              expert_removal=expert_removal, targets=_targets(targets), generate=generate,
                              max_new_tokens=max_new_tokens, generate_seeds=generate_seeds,
                              exclude_profiled=exclude_profiled, force=force, unique=unique, replicates=replicates,
                              test=test, max_scored_tokens=max_scored_tokens, folds=folds)
    result = ablate(model, selection, data, settings, run=run, rule=rule, epsilon=epsilon, out=out, resume=resume,
                    dtype=dtype, device=device, device_map=device_map, overwrite=overwrite, plots=plots,
                    progress=not quiet)
    if is_main_process():  # under torchrun rank 0 alone prints (and writes)
        _print(result, out)
