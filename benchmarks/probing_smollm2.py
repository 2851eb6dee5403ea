"""Sparse-probing curves and the lexical baseline on a real run profiled with ``--group-by instruction`` (issue 23).

Usage: OMP_NUM_THREADS=1 python benchmarks/probing_smollm2.py RUN --out probing.json [--random-sets 20]
       [--rules percentile,layer-percentile,lape,contrast,test]

On RUN's neurons (the validity's 5 folds, seed 0): every rule's ranking, the supervised baselines, random and
frequency-matched random sets, and the bag of the run's counted tokens (its scope). Then the bag of tokens of the
``instruction-only`` scope (the instruction without its input; no neuron counts needed), on all rows and on the
AI half alone (the human half's instructions are one fixed sentence per source). Prints the numbers at k = 8 and
64 and writes every curve (``ProbingCurves.summary()``) to ``--out``, with the seconds and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from sparcom.analysis.evidence import run_groups
from sparcom.analysis.probing import DEFAULT_RULES, SIX_WAY, FeatureTable, lexical_table, probing_curves
from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import load_run
from sparcom.data.formatting import FormatSettings
from sparcom.data.lexical import run_token_bags, token_bags
from sparcom.data.schema import read_rows
from sparcom.models.loading import load_run_tokenizer

SHOWN = ("percentile", "contrast", "test", "mean-difference", "l1-probe", "lexical")


def _print(result, ks=(8, 64)) -> None:
    for method in [m for m in result.methods if m in SHOWN or m.startswith("lexical")]:
        m = result.methods.index(method)
        for k in ks:
            i = result.ks.index(k)
            six = result.at(method, k)
            ovr = float(np.mean(result.accuracy[m, 1:, i]))
            ovr_random = float(np.mean(result.random[m, 1:, i]))
            ovr_matched = float(np.mean(result.matched[m, 1:, i]))
            print(f"{method:16s} k={k:3d} six-way {six['accuracy']:.3f} (random {six['random_mean']:.3f}, matched "
                  f"{six['matched_mean']:.3f}, size {six['size']:.0f}) | one-vs-rest mean {ovr:.3f} (random "
                  f"{ovr_random:.3f}, matched {ovr_matched:.3f})")
    for source, values in result.all_features.items():
        print(f"all {source}: six-way {values[0]:.3f}, one-vs-rest " +
              ", ".join(f"{c} {v:.3f}" for c, v in zip(result.categories, values[1:], strict=True)))
    print("chance", result.chance(SIX_WAY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--random-sets", type=int, default=20)
    parser.add_argument("--rules", default=",".join(DEFAULT_RULES), help="rules whose rankings are compared")
    args = parser.parse_args()
    rules = [SelectionRule(name) for name in args.rules.split(",")]
    run = load_run(args.run)
    groups = run_groups(run, "neuron")
    tokenizer = load_run_tokenizer(run.manifest["model"], run.manifest.get("tokenizer_hash"))
    start = time.perf_counter()
    result = probing_curves(groups, rules, random_sets=args.random_sets,
                            tables=[lexical_table(run_token_bags(run.manifest, tokenizer), groups)])
    seconds = time.perf_counter() - start
    print(f"neurons and lexical ({run.manifest['scope']} scope): {seconds:.0f} s, load {os.getloadavg()[0]:.1f}")
    _print(result)
    output = {"run": str(run.path), "seconds": seconds, "load": os.getloadavg()[0], "curves": result.summary(),
              "rows": result.rows()}
    bags = token_bags(read_rows(run.manifest["dataset"]["path"]), tokenizer, run.manifest["template"],
                      FormatSettings("instruction-only", system_prompt=run.manifest.get("system_prompt")))
    rows = bags.rows_for(groups.labels)
    own = FeatureTable("lexical (instruction-only)", bags.counts[rows], bags.counts[rows].sum(axis=1))
    for name, keep in (("all rows", np.ones(groups.size, dtype=bool)),
                       ("AI half", np.asarray(groups.sources) == "ai")):
        subset = groups.subset(keep)
        table = FeatureTable(own.name, own.counts[keep], own.tokens[keep])
        curves = probing_curves(subset, tables=[table], components=False)
        print(f"instruction-only bag of tokens, {name} ({subset.size} instructions):")
        _print(curves)
        output[f"instruction_only_{name.replace(' ', '_')}"] = curves.summary()
    subset = groups.subset(np.asarray(groups.sources) == "ai")  # the run's own scope on the AI half, to compare
    curves = probing_curves(subset, tables=[lexical_table(run_token_bags(run.manifest, tokenizer), subset)],
                            components=False)
    print(f"{run.manifest['scope']}-scope bag of tokens, AI half:")
    _print(curves)
    output["run_scope_AI_half"] = curves.summary()
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
