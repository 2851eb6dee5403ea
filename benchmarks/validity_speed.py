"""Wall time of the validity analysis at SmolLM2-135M scale on synthetic per-instruction counts.

Usage: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/validity_speed.py [--layers 30] [--width 1536]
       [--per-source 100] [--random-sets 100] [--folds 5]

Builds HexaInst-shaped groups (6 categories × AI/human × 100 instructions; 30 layers × 1536 neurons by default)
with a few truly category-specific neurons per layer, then times, per rule: the whole ``validity`` call (cross-
source agreement, k-fold held-out decoding with both decoders against R random sets per fold, fold stability,
specificity scores). Reported in seconds with the machine's load average, plus the time of one plain pass over
the counts (pooling all groups) as a yardstick, so the ratio is comparable across machines and loads, and the
peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from validity_data import synthetic_groups

from sparcom.analysis.groups import pool
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.validity import validity, validity_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument("--random-sets", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="also time a small ε sweep of two rules")
    args = parser.parse_args()

    start = time.perf_counter()
    groups, truth = synthetic_groups(("cls", "code", "qa", "gen", "math", "sum"), layers=args.layers,
                                     width=args.width, per_source=args.per_source, specific=3, boost=0.4,
                                     tokens=(15, 200))
    print(f"synthetic groups: G = {groups.size}, N = {groups.layout.size}, built in "
          f"{time.perf_counter() - start:.1f} s; threads: OMP={os.environ.get('OMP_NUM_THREADS', 'unset')} "
          f"OPENBLAS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; load average {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    pool(groups)
    yardstick = time.perf_counter() - start
    print(f"one pooling pass over the counts: {yardstick:.2f} s")

    for rule in (SelectionRule("percentile", 0.01), SelectionRule("contrast", 0.01), SelectionRule("test")):
        start = time.perf_counter()
        result = validity(groups, rule, folds=args.folds, random_sets=args.random_sets)
        seconds = time.perf_counter() - start
        d = result.decoding
        hits = (result.mask & truth).sum() / max(1, result.mask.sum())
        print(f"{rule.short():<24} {seconds:6.1f} s ({seconds / yardstick:5.0f} × one pass)  sizes "
              f"{result.mask.sum(axis=1).tolist()}  true-specific share {hits:.2f}  "
              f"set-score {d.decoders['set_score'].accuracy:.3f} (random {d.decoders['set_score'].random_accuracy.mean():.3f}) "
              f"centroid {d.decoders['centroid'].accuracy:.3f} (random {d.decoders['centroid'].random_accuracy.mean():.3f}) "
              f"all {d.all_components.accuracy:.3f}  stability {result.stability.mean:.2f}  "
              f"load {os.getloadavg()[0]:.2f}")
    if args.sweep:
        start = time.perf_counter()
        rows = validity_sweep(groups, [SelectionRule("percentile"), SelectionRule("contrast")],
                              {"percentile": [0.005, 0.02], "contrast": [0.005, 0.02]},
                              folds=args.folds, random_sets=args.random_sets)
        print(f"sweep of {len(rows)} (rule, ε) rows: {time.perf_counter() - start:.1f} s")
    counts_mb = groups.counts.nbytes / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak resident memory {peak_mb:.0f} MiB (the int64 counts alone: {counts_mb:.0f} MiB)")


if __name__ == "__main__":
    main()
