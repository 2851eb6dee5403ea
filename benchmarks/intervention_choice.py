"""Which intervention keeps the model on-distribution: zero vs mean vs resample on a real model's paper-rule sets.

Usage: python benchmarks/intervention_choice.py --data data/hexainst.jsonl --out /tmp/iv
                                               [--profile-per-category 24] [--per-category 8] [--seeds 3]
                                               [--max-scored-tokens 48] [--interventions zero,mean,resample]

Profiles the built-in model on the first ``--profile-per-category`` rows of each category (the run records the
activation sums that mean ablation reads), selects with the paper's rule (top 1 % by frequency), and runs the causal
check on ``--per-category`` other rows of each category (``--exclude-profiled``) under every intervention with
``--seeds`` random sets of the same shape. Printed per intervention: the damage of a category's set to the
*other* categories (mean ΔNLL over the off-diagonal cells: a set that breaks the model shows it everywhere), to its
own category (the diagonal), the same two for the random sets, and the specificity (own − mean of others). Every
step is kept in ``--out`` and reused on a second run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from sparcom import ProfileSettings, identify, profile
from sparcom.analysis.selection import PAPER_RULE
from sparcom.artifacts.run import load_run
from sparcom.causal import CausalSettings, causal_check
from sparcom.zoo.builtin import resolve_builtin
from sparcom.zoo.catalog import load_model


def off_diagonal(matrix: np.ndarray, ablated: list[str], evaluated: list[str]) -> tuple[float, float]:
    """(mean of the diagonal cells, mean of the off-diagonal cells) of an [A, C] (or [A, N, C]) ΔNLL array."""
    own_cells, other_cells = [], []
    for a, category in enumerate(ablated):
        for j, evaluated_category in enumerate(evaluated):
            (own_cells if category == evaluated_category else other_cells).append(matrix[a, ..., j])
    return float(np.mean(own_cells)), float(np.mean(other_cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profile-per-category", type=int, default=24)
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-scored-tokens", type=int, default=48)
    parser.add_argument("--interventions", default="zero,mean,resample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_model(str(resolve_builtin(args.model)), dtype="float32")
    run_dir = args.out / "run"
    if (run_dir / "manifest.json").is_file():
        run = load_run(run_dir)
    else:
        run = profile(model, args.data, run_dir, ProfileSettings(per_category=args.profile_per_category,
                                                                 batch_size=8), progress=False)
    selection = args.out / "selection-paper"
    if not (selection / "selection.safetensors").is_file():
        identify(run, PAPER_RULE, sweep=False, out=selection, plots=False, overwrite=True)
    interventions = tuple(args.interventions.split(","))
    settings = CausalSettings(seeds=args.seeds, per_category=args.per_category, exclude_profiled=True,
                              max_scored_tokens=args.max_scored_tokens, interventions=interventions,
                              targets=("neurons",))
    result = causal_check(model, selection, args.data, settings, progress=False)
    rows = []
    print(f"model {args.model}; paper's rule (percentile, ε = {PAPER_RULE.epsilon}); profiled "
          f"{args.profile_per_category} rows per category, scored {args.per_category} others per category "
          f"(first {args.max_scored_tokens} response tokens), {args.seeds} random sets; load average "
          f"{os.getloadavg()[0]:.1f} (2 cores)")
    print("baseline NLL: " + ", ".join(f"{c} {result.baseline[c]['nll']:.3f}" for c in result.evaluated))
    print(f"{'intervention':<13}{'own ΔNLL':>10}{'others ΔNLL':>13}{'specificity':>13}{'random own':>12}"
          f"{'random others':>15}")
    for name, target in result.targets.items():
        own, others = off_diagonal(target.delta, target.ablated, target.evaluated)
        random_own, random_others = off_diagonal(target.random_delta, target.ablated, target.evaluated)
        rows.append({"result": name, "intervention": target.intervention, "own": own, "others": others,
                     "specificity": own - others, "random_own": random_own, "random_others": random_others,
                     "delta": target.delta.tolist(), "random_delta_mean": target.random_delta.mean(1).tolist(),
                     "ablated": target.ablated, "evaluated": target.evaluated})
        print(f"{target.intervention:<13}{own:>10.3f}{others:>13.3f}{own - others:>13.3f}{random_own:>12.3f}"
              f"{random_others:>15.3f}")
        for a, category in enumerate(target.ablated):
            print(f"    {category:<5} set ({target.sizes()[category]} neurons): ΔNLL "
                  + " ".join(f"{e} {target.delta[a, j]:+.3f}" for j, e in enumerate(target.evaluated)))
    (args.out / "intervention_choice.json").write_text(json.dumps({"settings": vars(args) | {
        "data": str(args.data), "out": str(args.out)}, "rows": rows,
        "baseline": result.baseline, "wall_seconds": time.perf_counter() - started}, indent=2))
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
