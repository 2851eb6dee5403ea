"""How often the set claims' decisions say "holds" when they should not: generality and uniqueness on simulated counts.

    python benchmarks/claim_calibration.py [--datasets 200] [--seed 0] [--out claims_calibration.json]

Runs the real decision code — :func:`sparcom.analysis.uniqueness.uniqueness` and
:func:`sparcom.analysis.generality.generality_null`, the functions ``identify`` stores in the claims table — on
datasets of per-instruction counts generated under scenarios where the claim is false (nulls) and where it is true
(power). Six categories, 12 AI-written and 12 human-written instructions each, 20–80 counted tokens an instruction,
4 layers × 80 neurons; an instruction's firing rate of neuron n is logistic(logit(base_n) + 0.5 ξ + shift), with
ξ ~ N(0, 1) per instruction and neuron (instruction-level noise) and base_n ~ Beta(2, 4).

Uniqueness ("each category has components of its own that carry it"), rules ``percentile`` (the paper's) and
``contrast`` at ε = 0.05:

- null ``no signal``: no category shifts anything;
- null ``one source``: each category's own 4 neurons a layer fire more (+1.5), in AI-written instructions only;
- null ``shared``: the same 4 neurons a layer fire more (+1.5) for every category: signal, none of it unique;
- null ``activity``: each category shifts every neuron by its own constant (N(0, 0.5)): categories differ in
  overall activity, not in components;
- power ``specific``: each category's own 4 neurons a layer fire more (+1.5) in both sources.

Generality ("general components are general for instructions, not just frequent on any text"), paper's rule at
ε = 0.05, against a reference corpus of 24 passages:

- null ``same text``: the reference fires like the instructions (base rates, no category shifts);
- power ``instruction-general``: 6 neurons fire on every instruction (rate 0.93) and rarely on the reference (0.1).

Printed per scenario and rule: the share of datasets decided "holds", "does not hold", "not enough evidence".
A null's "holds" share is the false-positive rate (α = 0.05 is the level the decisions are built for).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sparcom.analysis.generality import generality_null
from sparcom.analysis.groups import GroupCounts
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.uniqueness import uniqueness
from sparcom.components import Layout

CATEGORIES = ("cls", "code", "qa", "gen", "math", "sum")
LAYERS, WIDTH, OWN, PER_SOURCE, BOOST = 4, 80, 4, 12, 1.5
LAYOUT = Layout("neuron", tuple(range(LAYERS)), tuple((WIDTH,) for _ in range(LAYERS)))
RULES = (SelectionRule("percentile", 0.05), SelectionRule("contrast", 0.05))
UNIQUENESS = {"no signal": False, "one source": False, "shared": False, "activity": False, "specific": True}
GENERALITY = {"same text": False, "instruction-general": True}


def _own(rng: np.random.Generator) -> np.ndarray:
    """[K, N]: OWN neurons a layer for each category, disjoint."""
    own = np.zeros((len(CATEGORIES), LAYOUT.size), dtype=bool)
    for j in range(LAYERS):
        chosen = rng.choice(WIDTH, len(CATEGORIES) * OWN, replace=False) + j * WIDTH
        for c in range(len(CATEGORIES)):
            own[c, chosen[c * OWN:(c + 1) * OWN]] = True
    return own


def shifts(rng: np.random.Generator, scenario: str) -> np.ndarray:
    """[K, 2, N] the logit shift of each category's AI-written (0) and human-written (1) instructions."""
    k = len(CATEGORIES)
    shift = np.zeros((k, 2, LAYOUT.size))
    if scenario in ("one source", "specific"):
        own = _own(rng) * BOOST
        shift[:, 0] = own
        if scenario == "specific":
            shift[:, 1] = own
    elif scenario == "shared":
        shift[:, :, _own(rng)[0]] = BOOST
    elif scenario == "activity":
        shift += rng.normal(0.0, 0.5, (k, 1, 1))
    return shift


def sample(rng: np.random.Generator, logit: np.ndarray, shift: np.ndarray, categories: tuple[str, ...],
           prefix: str = "") -> GroupCounts:
    """Counts of PER_SOURCE instructions per category and source."""
    labels, cats, sources, rows, tokens = [], [], [], [], []
    for c, category in enumerate(categories):
        for s, source in enumerate(("ai", "human")):
            for i in range(PER_SOURCE):
                rate = 1.0 / (1.0 + np.exp(-(logit + 0.5 * rng.standard_normal(logit.size) + shift[c, s])))
                t = int(rng.integers(20, 80))
                labels.append(f"{prefix}{category}-{source}-{i}")
                cats.append(category)
                sources.append(source)
                tokens.append(t)
                rows.append(rng.binomial(t, rate))
    return GroupCounts("neuron", LAYOUT, tuple(labels), tuple(cats), tuple(sources), np.array(rows),
                       np.array(tokens))


def _base(rng: np.random.Generator) -> np.ndarray:
    base = rng.beta(2.0, 4.0, LAYOUT.size)
    return np.log(base / (1.0 - base))


def uniqueness_decisions(scenario: str, datasets: int, seed: int, random_sets: int) -> dict[str, Counter]:
    found = {rule.name: Counter() for rule in RULES}
    for d in range(datasets):
        rng = np.random.default_rng([seed, d, list(UNIQUENESS).index(scenario)])
        groups = sample(rng, _base(rng), shifts(rng, scenario), CATEGORIES)
        for rule in RULES:
            found[rule.name][uniqueness(groups, rule, random_sets=random_sets, seed=d).decision] += 1
    return found


def generality_decisions(scenario: str, datasets: int, seed: int) -> Counter:
    found: Counter = Counter()
    for d in range(datasets):
        rng = np.random.default_rng([seed, d, 100 + list(GENERALITY).index(scenario)])
        logit = _base(rng)
        reference = logit.copy()
        if scenario == "instruction-general":
            chosen = rng.choice(LAYOUT.size, 6, replace=False)
            logit[chosen], reference[chosen] = np.log(0.93 / 0.07), np.log(0.1 / 0.9)
        groups = sample(rng, logit, np.zeros((len(CATEGORIES), 2, LAYOUT.size)), CATEGORIES)
        ref = sample(rng, reference, np.zeros((1, 2, LAYOUT.size)), ("reference",), "r")
        found[generality_null(groups, ref, epsilon=0.05, seed=d).decision] += 1
    return found


def calibrate(datasets: int, seed: int = 0, random_sets: int = 100) -> list[dict]:
    """One row per claim, scenario and rule: the decisions' shares over ``datasets`` simulated datasets."""
    rows = []
    for scenario, true in UNIQUENESS.items():
        for rule, counts in uniqueness_decisions(scenario, datasets, seed, random_sets).items():
            rows.append(_row("uniqueness", scenario, true, rule, counts, datasets))
    for scenario, true in GENERALITY.items():
        rows.append(_row("generality", scenario, true, "percentile", generality_decisions(scenario, datasets, seed),
                         datasets))
    return rows


def _row(claim: str, scenario: str, true: bool, rule: str, counts: Counter, datasets: int) -> dict:
    return {"claim": claim, "scenario": scenario, "claim_true": true, "rule": rule, "datasets": datasets,
            **{k: counts.get(k, 0) / datasets for k in ("holds", "does not hold", "not enough evidence")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-sets", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = calibrate(args.datasets, args.seed, args.random_sets)
    print(f"{'claim':11s} {'scenario':20s} {'rule':11s} {'holds':>6s} {'fails':>6s} {'undecided':>9s}")
    for r in rows:
        kind = "power" if r["claim_true"] else "FP"
        print(f"{r['claim']:11s} {r['scenario']:20s} {r['rule']:11s} {r['holds']:6.3f} {r['does not hold']:6.3f} "
              f"{r['not enough evidence']:9.3f}  ({kind})")
    print(f"{args.datasets} datasets per scenario, {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"datasets": args.datasets, "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
