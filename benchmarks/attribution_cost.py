"""Cost of the attribution pass against a bare forward over the same batches.

Usage: python benchmarks/attribution_cost.py [--model smollm2-135m-instruct|llama-shaped] [--per-category 4]
                                             [--batch-size 8] [--repeats 2] [--threads N]

The *attribution pass* is what ``sparcom attribute`` runs per batch (:func:`sparcom.attribution.estimate.batch_effects`):
one forward with the LM head at the scored positions, the summed NLL, one backward with the parameters frozen (only
activation gradients) and, inside the backward, Σ_t grad · (r − A) per row for every MLP neuron. The *bare forward* is
the same model on the same prebuilt batches with the LM head at the same positions, no hooks, no loss, no gradient.
Both run interleaved batch by batch ``--repeats`` times, so machine noise hits both alike. Reported: wall and process
CPU seconds of each and their ratio attribution / bare (target ≤ 3.5), with the machine's load average.
Rows: the first N AI-written HexaInst rows per category (shipped with sparcom).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ablation_cost import load  # the same model loader (built-in, or a random Llama of SmolLM2's shape)

from sparcom.attribution.estimate import Replacement, attributed_sites, batch_effects
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import ScoringPlan
from sparcom.data.batching import length_batches
from sparcom.data.formatting import pad_token_id, resolve_template
from sparcom.data.hexainst import load_ai_rows
from sparcom.data.schema import first_rows_per_category
from sparcom.models.logits import logits_at
from sparcom.models.sites import model_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or 'llama-shaped'")
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    rows, _ = first_rows_per_category(load_ai_rows(), args.per_category)
    examples = encode_scored(rows, tokenizer, resolve_template(tokenizer, "auto"))
    plan = length_batches([len(e) for e in examples], args.batch_size)
    scoring = ScoringPlan.build(examples, plan, pad_token_id(tokenizer))
    sites = attributed_sites(model_sites(model))
    wall = {"bare": 0.0, "attribution": 0.0}
    cpu = {"bare": 0.0, "attribution": 0.0}

    def timed(work, name: str) -> None:
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        wall[name] += time.perf_counter() - start
        cpu[name] += time.process_time() - start_cpu

    def bare(batch) -> None:
        with torch.no_grad():
            logits_at(model, batch.input_ids, batch.attention, batch.keep)

    def attribution(batch) -> None:
        batch_effects(model, sites, batch, Replacement())

    bare(scoring.batches[-1])  # warm-up (the shortest batch)
    attribution(scoring.batches[-1])
    for _ in range(args.repeats):
        for batch in scoring.batches:
            timed(lambda b=batch: bare(b), "bare")
            timed(lambda b=batch: attribution(b), "attribution")
    tokens = scoring.tokens
    print(f"model {args.model}; {len(rows)} rows ({args.per_category} per category), {tokens:,} forward tokens, "
          f"{int(scoring.counts.sum()):,} scored; batch size {args.batch_size}; {len(sites)} attributed sites; "
          f"threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} (2 cores)")
    for name in ("bare", "attribution"):
        print(f"{name:<12} {wall[name] / args.repeats:7.2f} s per pass ({tokens * args.repeats / wall[name]:7.0f} "
              f"tok/s)  CPU {cpu[name] / args.repeats:7.2f} s")
    print(f"ratio attribution / bare: wall {wall['attribution'] / wall['bare']:.2f}, "
          f"CPU {cpu['attribution'] / cpu['bare']:.2f} (target ≤ 3.5)")


if __name__ == "__main__":
    main()
