"""Throughput of profiling the real MoE ``smollm2-135m-moe`` vs its bare forward, on the same batches.

Usage: python benchmarks/moe_overhead.py [--cache-dir DIR] [--rows N] [--repeats K] [--modes auto,off,recompute]
                                         [--group-by category,instruction]

The MoE (GraniteMoeShared, 30 layers, 64 experts of 16 neurons, top-16, a 512-neuron shared expert) is resolved from the sparcom cache (built on
first use). Its decoder stack runs the same length-bucketed batches bare and with sparcom's counting hooks,
interleaved batch by batch (:func:`profile_overhead.measure`); reported per expert-neuron mode: tokens/s of each and
the ratios in wall and CPU time
(target ≥ 0.95 for the default ``auto``: experts plus expert neurons captured from the experts' own computation).
Rows are HexaInst instructions (N per category, first in file order), formatted with the chat template.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_overhead import measure, report  # a sibling script, not a package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=8, help="HexaInst rows per category")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", default="auto,off,recompute")
    parser.add_argument("--scope", default="instruction")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--group-by", default="category", help="comma-separated --group-by values")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from sparcom.data.hexainst import load_hexainst
    from sparcom.profile.runner import Profiler, ProfileSettings
    from sparcom.zoo.catalog import load_model, resolve

    folder = resolve("smollm2-135m-moe", args.cache_dir)
    loaded = load_model(str(folder), dtype="float32")
    per_category: dict[str, int] = {}
    rows = []
    for row in load_hexainst():
        if per_category.get(row.category, 0) < args.rows:
            per_category[row.category] = per_category.get(row.category, 0) + 1
            rows.append(row)
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}; threads {torch.get_num_threads()}",
          flush=True)
    for mode in args.modes.split(","):
        for group_by in args.group_by.split(","):
            settings = ProfileSettings(scope=args.scope, batch_size=args.batch_size, expert_neurons=mode)
            profiler = Profiler(loaded, settings)
            report(f"smollm2-135m-moe [{args.scope}, expert neurons {mode}, by {group_by}]",
                   measure(profiler, rows, args.batch_size, args.repeats, group_by))
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


if __name__ == "__main__":
    main()
