"""The nulls that can fail, measured on real runs (the numbers in docs/analysis.md, "Nulls that can fail").

    python benchmarks/validity_nulls.py --run runs/smol-hexa --reference runs/smol-ref --out nulls.json

RUN: HexaInst profiled with ``--group-by instruction``; REFERENCE: reference passages
(:func:`sparcom.data.reference.reference_rows`, one category per corpus) profiled raw (``--template raw``) with
the same model, also grouped by instruction. Steps (each written to --out as soon as it is done):

1. generality against each reference corpus (paper's rule, ε = 0.01);
2. intervals of the general share, unique share and selected-any: percentile bootstrap (old) vs subsampling;
3. uniqueness: within − across margin with its interval, unique-member decoding (paper's rule and contrast);
4. the rule chosen on a development split, validity on the rest (``--skip-study`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sparcom.analysis.bootstrap import mask_statistics, percentile_interval
from sparcom.analysis.evidence import resample_masks, run_groups
from sparcom.analysis.generality import generality_null
from sparcom.analysis.held_out_study import held_out_study
from sparcom.analysis.pooling import Pool
from sparcom.analysis.rule_study import study_rules
from sparcom.analysis.selection import PAPER_RULE, RECOMMENDED_RULE
from sparcom.analysis.sets import summary_statistics
from sparcom.analysis.subsampling import stratum_ids, subsample_intervals
from sparcom.analysis.uniqueness import uniqueness
from sparcom.artifacts.run import load_run
from sparcom.data.split import development_split

NAMES = ("general_share", "unique_share", "selected_any")
STUDY = ("percentile", "layer-percentile", "lape", "contrast", "contrast-mean")
GRID = (0.005, 0.01, 0.02, 0.05)


def intervals(groups, rule, settings: dict, resamples: int) -> dict:
    pool = Pool(groups)
    categories = list(groups.category_order)

    def statistic(keep: np.ndarray) -> np.ndarray:
        stats = summary_statistics(rule.apply(pool.frequencies(keep), groups.layout), categories)
        return np.array([stats[n] for n in NAMES], dtype=np.float64)

    new = subsample_intervals(statistic, NAMES, stratum_ids(groups.categories, groups.sources), **settings)
    old = mask_statistics(resample_masks(groups, rule, resamples), categories)
    result = {}
    for name in NAMES:
        low, high = percentile_interval(old[name])
        result[name] = {"subsampling": new[name].summary(),
                        "percentile_bootstrap": {"low": low, "high": high, "replicates": resamples,
                                                 "replicate_mean": float(np.nanmean(old[name]))}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", default="neuron")
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--halves", type=int, default=10)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=50)
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args()
    settings = {"replicates": args.replicates, "halves": args.halves, "inner": args.inner}
    run, ref = load_run(args.run), load_run(args.reference)
    groups = run_groups(run, args.kind)
    out: dict = {"run": str(run.path), "reference": str(ref.path), "dtype": run.manifest.get("dtype"),
                 "subsampling": settings, "steps": {}}

    def save(step: str, value, started: float) -> None:
        out["steps"][step] = value
        out.setdefault("seconds", {})[step] = round(time.time() - started, 1)
        Path(args.out).write_text(json.dumps(out, indent=1, default=float), encoding="utf-8")
        print(step, json.dumps(value, default=float)[:1500], flush=True)

    for category in ref.categories:
        started = time.time()
        reference = run_groups(ref, args.kind, [category])
        save(f"generality_{category}", generality_null(groups, reference, 0.01, **settings).summary(), started)
    for rule in (PAPER_RULE, RECOMMENDED_RULE):
        started = time.time()
        save(f"uniqueness_{rule.name}", uniqueness(groups, rule, **settings).summary(), started)
    for rule in (PAPER_RULE, RECOMMENDED_RULE):
        started = time.time()
        save(f"intervals_{rule.name}", intervals(groups, rule, settings, args.resamples), started)
    if not args.skip_study:
        started = time.time()
        split = development_split(groups.labels, groups.categories, groups.sources)
        study = held_out_study(groups, split, study_rules(STUDY), dict.fromkeys(("percentile", "layer-percentile",
                                                                                "lape", "contrast"), GRID))
        save("held_out_study", study.summary() | {"development_rows": study.development_rows,
                                                  "split_record": split.record()}, started)


if __name__ == "__main__":
    main()
