"""Coverage of intervals for thresholded set statistics: percentile bootstrap vs subsampling (review §3).

The setup of the statistics review: many neurons, 6 categories, a few dozen instructions each, instruction
heterogeneity (each instruction moves every neuron's firing probability), top-ε selection per category. The
population value of a statistic is the one of the selection on the population frequencies (the expectation over
instructions, by Gauss–Hermite quadrature). For each simulated data set, both intervals are computed and we count
how often they contain the population value and the plug-in estimate.

    python benchmarks/interval_coverage.py            # 200 data sets, 20,000 neurons (minutes)
    python benchmarks/interval_coverage.py --quick    # what tests/test_subsampling.py runs (seconds)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from sparcom.analysis.sets import summary_statistics
from sparcom.analysis.subsampling import stratum_ids, subsample_intervals

#: The tracked set statistics (sparcom.analysis.bootstrap.tracked_statistics); per-category ones for category 0
#: (the world's categories are exchangeable).
NAMES = ("general_share", "unique_share", "selected_any", "general", "unique_total", "selected_0", "unique_0",
         "unique_share_0", "general_share_0")


@dataclass(frozen=True)
class World:
    """A population: per-neuron base logit and per-category shift; instruction heterogeneity ``tau``."""

    base: np.ndarray  # [N]
    shift: np.ndarray  # [K, N]
    tau: float
    tokens: int
    epsilon: float

    def population(self) -> np.ndarray:
        """[K, N] E over instructions of the firing probability sigmoid(base + shift + u), u ~ N(0, tau²)."""
        x, w = np.polynomial.hermite_e.hermegauss(40)
        w = w / w.sum()
        logits = (self.base + self.shift)[None] + self.tau * x[:, None, None]
        return np.tensordot(w, 1.0 / (1.0 + np.exp(-logits)), axes=1)

    def sample(self, per_category: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """[G, N] active-token counts of G = K · per_category instructions and their [G] categories."""
        k, n = self.shift.shape
        u = rng.normal(0.0, self.tau, (k, per_category, n))
        p = 1.0 / (1.0 + np.exp(-((self.base + self.shift)[:, None, :] + u)))
        counts = rng.binomial(self.tokens, p).reshape(k * per_category, n)
        return counts, np.repeat(np.arange(k), per_category)


def world(neurons: int, categories: int = 6, tau: float = 0.8, tokens: int = 30, epsilon: float = 0.01,
          seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    return World(rng.normal(0.0, 1.5, neurons), rng.normal(0.0, 0.3, (categories, neurons)), tau, tokens, epsilon)


def top(p: np.ndarray, epsilon: float) -> np.ndarray:
    """The paper's rule: the top-ε fraction of each row (linear quantile, ties kept, never p = 0)."""
    return (p >= np.quantile(p, 1 - epsilon, axis=1, keepdims=True)) & (p > 0)


def statistics(mask: np.ndarray) -> np.ndarray:
    """[S] the statistics of NAMES, counted by sparcom's own set code (sparcom.analysis.sets.summary_statistics)."""
    values = summary_statistics(mask, [str(c) for c in range(mask.shape[0])])
    return np.array([float(values[name]) for name in NAMES])


def pooled(counts: np.ndarray, category: np.ndarray, weights: np.ndarray, k: int, tokens: int) -> np.ndarray:
    """[K, N] pooled frequencies of the groups with integer ``weights`` (0 leaves a group out)."""
    onehot = np.zeros((k, counts.shape[0]))
    onehot[category, np.arange(counts.shape[0])] = weights
    return (onehot @ counts) / (onehot.sum(axis=1, keepdims=True) * tokens)


def one_data_set(w: World, per_category: int, rng: np.random.Generator, boot: int, seed: int, **subsampling):
    """(plug-in [S], percentile low/high [2, S], subsampling low/high [2, S], corrected [S]) of one sample."""
    counts, category = w.sample(per_category, rng)
    k = w.shift.shape[0]

    def statistic(keep: np.ndarray) -> np.ndarray:
        return statistics(top(pooled(counts, category, keep.astype(float), k, w.tokens), w.epsilon))

    plug = statistic(np.ones(category.size, dtype=bool))
    replicates = []
    for _ in range(boot):  # resample instructions with replacement within category (the old method)
        weights = np.zeros(category.size)
        for c in range(k):
            members = np.flatnonzero(category == c)
            np.add.at(weights, rng.choice(members, members.size), 1.0)
        replicates.append(statistics(top(pooled(counts, category, weights, k, w.tokens), w.epsilon)))
    percentile = np.nanquantile(np.array(replicates), [0.025, 0.975], axis=0)
    estimates = subsample_intervals(statistic, NAMES, stratum_ids([str(c) for c in category]), seed=seed,
                                    **subsampling)
    new = np.array([[estimates[n].low for n in NAMES], [estimates[n].high for n in NAMES]])
    return plug, percentile, new, np.array([estimates[n].corrected for n in NAMES])


def coverage(data_sets: int = 200, neurons: int = 20_000, per_category: int = 24, boot: int = 100, seed: int = 0,
             **subsampling) -> list[dict]:
    """One row per statistic and method: how often the interval holds the population value and the plug-in."""
    w = world(neurons, seed=seed)
    truth = statistics(top(w.population(), w.epsilon))
    rng = np.random.default_rng(seed + 1)
    hits = {m: {"truth": np.zeros(len(NAMES)), "estimate": np.zeros(len(NAMES))} for m in ("percentile bootstrap", "subsampling")}
    plugs, corrected = [], []
    for d in range(data_sets):
        plug, percentile, new, fixed = one_data_set(w, per_category, rng, boot, seed + d, **subsampling)
        plugs.append(plug)
        corrected.append(fixed)
        for method, (low, high) in (("percentile bootstrap", percentile), ("subsampling", new)):
            hits[method]["truth"] += (low <= truth) & (truth <= high)
            hits[method]["estimate"] += (low <= plug) & (plug <= high)
    rows = []
    for s, name in enumerate(NAMES):
        for method, h in hits.items():
            rows.append({"statistic": name, "method": method, "population": float(truth[s]),
                         "mean_plug_in": float(np.mean([p[s] for p in plugs])),
                         "mean_corrected": float(np.mean([c[s] for c in corrected])),
                         "covers_population": float(h["truth"][s] / data_sets),
                         "covers_estimate": float(h["estimate"][s] / data_sets), "data_sets": data_sets})
    return rows


def quick() -> list[dict]:
    """The small version a test runs (seconds)."""
    return coverage(data_sets=30, neurons=3000, per_category=24, boot=40, replicates=8, halves=10, inner=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-sets", type=int, default=200)
    parser.add_argument("--neurons", type=int, default=20_000)
    parser.add_argument("--json", help="write the rows as JSON to this path")
    args = parser.parse_args()
    rows = quick() if args.quick else coverage(args.data_sets, args.neurons)
    for row in rows:
        print(f"{row['statistic']:14} {row['method']:21} population {row['population']:.4f} plug-in "
              f"{row['mean_plug_in']:.4f} corrected {row['mean_corrected']:.4f} covers population "
              f"{row['covers_population']:.2f} covers estimate {row['covers_estimate']:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
