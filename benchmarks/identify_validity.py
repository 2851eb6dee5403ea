"""What validity adds to ``identify`` on a real run profiled with ``--group-by instruction``.

Usage: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/identify_validity.py RUN [--rule percentile]
       [--random-sets 100] [--folds 5] [--kinds neuron]

Times, on the same loaded run: one plain pass over the per-instruction counts (pooling all groups per category:
the yardstick, so ratios compare across machines and loads); ``identify`` without validity and without the ε
sweep (the selection and its set statistics); ``identify`` with validity (held-out decoding against R random sets
per fold, stability, cross-source agreement, specificity scores) and the default ε sweep — what the CLI runs by
default. Prints seconds, the ratios to the plain pass, the load average and the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from sparcom.analysis.evidence import ValiditySettings, run_groups
from sparcom.analysis.groups import pool
from sparcom.analysis.pipeline import identify
from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--rule", default="percentile")
    parser.add_argument("--epsilon", type=float, default=None)
    parser.add_argument("--random-sets", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--kinds", default="neuron")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    rule = SelectionRule(args.rule, args.epsilon)

    start = time.perf_counter()
    run = load_run(args.run)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    groups = run_groups(run, kinds[0])
    pool(groups)
    plain = time.perf_counter() - start
    del groups
    start = time.perf_counter()
    identify(run, rule, kinds, sweep=False, validity=ValiditySettings(enabled=False))
    bare = time.perf_counter() - start
    start = time.perf_counter()
    result = identify(run, rule, kinds, validity=ValiditySettings(folds=args.folds, random_sets=args.random_sets))
    full = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    headline = result.validity[kinds[0]].headline() if result.validity else {}
    print(f"run {args.run}: G = {len(run.manifest['groups']['labels'])}, rule {rule.short()}, kinds {kinds}, "
          f"{args.folds} folds, {args.random_sets} random sets; threads OMP={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"load_run {loaded:.1f} s; plain pass (load groups + pool) {plain:.1f} s")
    print(f"identify without validity or sweep {bare:.1f} s ({bare / plain:.1f} × plain)")
    print(f"identify with validity and ε sweep {full:.1f} s ({full / plain:.1f} × plain); peak RSS {peak:.2f} GiB")
    if headline:
        print(f"set-score {headline['set_score']['accuracy']:.3f} (random {headline['set_score']['random_mean']:.3f}, "
              f"p {headline['set_score']['p_value']:.3g}); centroid {headline['centroid']['accuracy']:.3f} "
              f"(random {headline['centroid']['random_mean']:.3f}); all {headline['all_components']:.3f}")


if __name__ == "__main__":
    main()
