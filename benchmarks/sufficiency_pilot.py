"""Sufficiency pilot: amplify each category's selected neurons on other categories' prompts (sparcom.causal.sufficiency).

Usage: python benchmarks/sufficiency_pilot.py --selection SEL [SEL ...] --data data/hexainst.jsonl --out pilot.json
                                              [--model smollm2-135m-instruct] [--dtype bfloat16] [--factors 2,4]
                                              [--seeds 9] [--control frequency] [--prompts 3] [--openings 3]
                                              [--opening-tokens 8] [--threads 1]

For each selection (an 'sparcom identify' folder made from a profile run of ``--model``) and each factor, prints
per category the pull toward the category (ΔNLL of the prompts' own openings − ΔNLL of the category's openings,
nats/token, mean over the other five categories' prompts), the random sets' mean and range, and the empirical p.
A pilot: no multiple-testing correction and no decision; the JSON says so (``"pilot": true``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sparcom.artifacts.selection import load_selection
from sparcom.causal.sufficiency import sufficiency_pilot
from sparcom.data.schema import read_rows
from sparcom.zoo.catalog import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selection", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("--control", default="frequency")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--openings", type=int, default=3)
    parser.add_argument("--opening-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, dtype=args.dtype)
    rows = read_rows(args.data, require_output=True)
    factors = tuple(float(f) for f in args.factors.split(","))
    results = {}
    for folder in args.selection:
        started, cpu = time.perf_counter(), time.process_time()
        pilot = sufficiency_pilot(loaded, load_selection(folder), rows, factors=factors, seeds=args.seeds,
                                  control=args.control, prompts=args.prompts, openings=args.openings,
                                  opening_tokens=args.opening_tokens)
        results[str(folder)] = {**pilot.to_json(), "wall_seconds": round(time.perf_counter() - started, 1),
                                "cpu_seconds": round(time.process_time() - cpu, 1)}
        print(f"\n{folder} ({pilot.dtype}, {pilot.examples} prompt × opening pairs, control {pilot.control}, "
              f"{results[str(folder)]['wall_seconds']} s)")
        print("category  factor  size   pull    toward   away    random mean [min, max]      p")
        for c in pilot.cells:
            r = np.array(c.random_pulls)
            print(f"{c.category:8s} {c.factor:6g} {c.size:5d} {c.pull:+.3f}  {c.toward:+.3f}  {c.away:+.3f}  "
                  f"{r.mean():+.3f} [{r.min():+.3f}, {r.max():+.3f}]  {c.p:.2f}")
    args.out.write_text(json.dumps({"model": args.model, "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
