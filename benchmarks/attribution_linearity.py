"""How good is the attribution pass's linear estimate of a set's deactivation, by set size?

Usage: python benchmarks/attribution_linearity.py [--model smollm2-135m-instruct] [--per-category 2]
                                                  [--sets 12] [--sizes 1,10,100,461] [--max-scored-tokens 48]
                                                  [--shortest]

On a few HexaInst rows per category, one attribution pass gives every MLP neuron's estimated change of each row's
summed response NLL under zero ablation. For each set size k, ``--sets`` random sets of k neurons (uniform over all
neurons) and as many "strong" sets (k neurons drawn from the 2% with the largest |estimate| summed over the rows)
are deactivated exactly (:func:`sparcom.causal.interventions.ablate`, the causal check's intervention), and the
exact change of each category's summed NLL is compared with the estimate Σ_{i ∈ set} Δ_i for that category.
Reported per size: Pearson correlation and the OLS slope of exact on estimate over (set, category) points, and the
median ratio exact / estimate. 461 is 1% of SmolLM2-135M's 46,080 MLP neurons: the size of the paper's sets.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ablation_cost import load

from sparcom.attribution.estimate import Replacement, attributed_sites, batch_effects
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import ScoringPlan
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.formatting import pad_token_id, resolve_template
from sparcom.data.hexainst import load_ai_rows
from sparcom.data.schema import first_rows_per_category
from sparcom.models.sites import model_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--sets", type=int, default=12, help="random and strong sets per size (each)")
    parser.add_argument("--sizes", default="1,10,100,461")
    parser.add_argument("--max-scored-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortest", action="store_true", help="take each category's shortest rows, not its first")
    args = parser.parse_args()
    started = time.perf_counter()
    model, tokenizer = load(args.model)
    rows = load_ai_rows()
    if args.shortest:  # the per-category rows with the shortest text: cheaper passes on a busy machine
        rows = sorted(rows, key=lambda r: (len(r.instruction) + len(r.input) + len(r.output), r.id))
    rows, categories = first_rows_per_category(rows, args.per_category)
    examples = encode_scored(rows, tokenizer, resolve_template(tokenizer, "auto"), max_scored=args.max_scored_tokens)
    scoring = ScoringPlan.build(examples, length_batches([len(e) for e in examples], args.batch_size),
                                pad_token_id(tokenizer))
    full_sites = model_sites(model)
    sites = attributed_sites(full_sites, ("neuron",))
    keys = list(sites)
    offsets = np.cumsum([0] + [sites[k].width for k in keys])
    per_row = np.zeros((len(examples), offsets[-1]))
    for batch in scoring.batches:
        found = batch_effects(model, sites, batch, Replacement())
        for position, key in enumerate(keys):
            per_row[list(batch.rows), offsets[position]:offsets[position + 1]] = found.effects[key].numpy()
    category_of = np.array([categories.index(e.category) for e in examples])
    per_category = np.stack([per_row[category_of == c].sum(0) for c in range(len(categories))])  # [K, N]
    clean = scoring.run(model)
    clean_per_category = np.array([clean[category_of == c].sum() for c in range(len(categories))])
    strong_pool = np.argsort(-np.abs(per_category.sum(0)))[: max(1, per_row.shape[1] // 50)]
    rng = np.random.default_rng(args.seed)
    print(f"model {args.model}; {len(rows)} rows ({args.per_category} per category"
          f"{', the shortest' if args.shortest else ''}), {int(scoring.counts.sum())} "
          f"scored tokens (≤ {args.max_scored_tokens} per row); {per_row.shape[1]:,} neurons; load average "
          f"{os.getloadavg()[0]:.1f} (2 cores)")
    print("size  sets  kind    corr   slope  median exact/estimate  mean |exact| (nats)")
    for size in (int(s) for s in args.sizes.split(",")):
        points = {"random": ([], []), "strong": ([], [])}
        for kind, pool in (("random", np.arange(per_row.shape[1])), ("strong", strong_pool)):
            for _ in range(args.sets):
                members = rng.choice(pool, size=min(size, pool.size), replace=False)
                indices = {keys[p][1]: np.sort(members[(members >= offsets[p]) & (members < offsets[p + 1])]
                                               - offsets[p]) for p in range(len(keys))}
                chosen = ComponentSet.from_indices({"neuron": indices}, full_sites, f"{kind}-{size}")
                with ablate(model, chosen, sites=full_sites):
                    ablated = scoring.run(model)
                exact = np.array([ablated[category_of == c].sum() for c in range(len(categories))]) - clean_per_category
                points[kind][0].extend(per_category[:, members].sum(1))
                points[kind][1].extend(exact)
        for kind in ("random", "strong", "both"):
            estimate, exact = (np.array(points["random"][i] + points["strong"][i]) if kind == "both"
                               else np.array(points[kind][i]) for i in (0, 1))
            corr = float(np.corrcoef(estimate, exact)[0, 1]) if estimate.std() and exact.std() else float("nan")
            slope = float(np.polyfit(estimate, exact, 1)[0]) if estimate.std() else float("nan")
            ratio = float(np.median(exact / np.where(estimate != 0, estimate, np.nan)))
            print(f"{size:4d}  {args.sets if kind != 'both' else 2 * args.sets:4d}  {kind:<6} {corr:6.3f} {slope:7.3f}"
                  f"  {ratio:21.3f}  {np.abs(exact).mean():.4f}")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
