"""Intervals of the set statistics (general, unique and selected counts and shares), over instructions.

Every tracked statistic is *thresholded*: it counts components on one side of each category's cut, and the
general count is an intersection of K such sets. Resampling with replacement adds noise to every frequency, so
components near a cut cross it independently per category and the intersection shrinks: the percentile
bootstrap is centred below its own estimate (the demo once printed 42.1% with the interval [38.3%, 41.3%]) and is
not a consistent confidence interval for such statistics (statistics review §3). Hence two methods:

- **Runs with counts per instruction** (``--group-by instruction``): subsampling without replacement within
  category × source, trend-corrected (:mod:`sparcom.analysis.subsampling`; coverage shown in
  tests/test_subsampling.py). Each row carries the plug-in ``estimate``, the extrapolated ``corrected`` value
  the interval is centred on, and their difference ``bias``.
- **Poisson counters** (``sparcom profile --bootstrap R``, runs by category): R replicate counters in which every
  instruction carries a Poisson(1) weight; the rule is applied to each replicate's frequencies and the
  percentile interval of the values is given — labelled as the spread of the bootstrap, not a confidence
  interval, with the replicates' mean beside the estimate so its bias shows. A run profiled per instruction gets
  the consistent intervals instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from sparcom.analysis.groups import GroupCounts, partition_sums
from sparcom.analysis.pooling import Pool
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.sets import summary_statistics
from sparcom.analysis.subsampling import stratum_ids, subsample_intervals
from sparcom.components import Layout
from sparcom.stats import LEVEL, percentile_interval

HOW_TO_ENABLE = ("confidence intervals need counts per instruction: profile with 'sparcom profile ... --group-by "
                 "instruction' (subsampling intervals); '--bootstrap 200' counters give only a bootstrap spread, "
                 "biased for thresholded statistics")
#: Statistics whose subsampling interval does not cover the population value (benchmarks/interval_coverage.py:
#: 17% for the union's size, whose trend in m is not linear in m^(-1/2)): reported with their bias, no interval.
NO_INTERVAL = frozenset({"selected_any"})
#: How the intervals were made, by method (stored in the summary's ``bootstrap.method``).
SUBSAMPLING = ("subsampling without replacement of the instructions within category and source, trend-corrected "
               "(consistent for thresholded statistics)")
POISSON_COUNTERS = ("percentile bootstrap of Poisson counters (--bootstrap): a spread, not a confidence interval — "
                    "biased for thresholded statistics; profile with --group-by instruction for subsampling intervals")


def tracked_statistics(categories: Sequence[str]) -> list[str]:
    """The statistics given with confidence intervals."""
    names = ["general", "general_share", "unique_total", "unique_share", "selected_any"]
    for category in categories:
        names += [f"selected_{category}", f"unique_{category}", f"unique_share_{category}",
                  f"general_share_{category}"]
    return names


def replicate_statistics(replicates: Iterable[np.ndarray], layout: Layout, categories: Sequence[str],
                         rule: SelectionRule) -> dict[str, np.ndarray]:
    """Apply ``rule`` to each replicate's p[K, N] and collect every tracked statistic as an array [R]."""
    return mask_statistics((rule.apply(p, layout) for p in replicates), categories)


def mask_statistics(masks: Iterable[np.ndarray], categories: Sequence[str]) -> dict[str, np.ndarray]:
    """Every tracked statistic of each replicate's selection mask [K, N], as an array [R]."""
    names = tracked_statistics(categories)
    values: dict[str, list[float]] = {name: [] for name in names}
    for mask in masks:
        stats = summary_statistics(mask, categories)
        for name in names:
            values[name].append(float(stats[name]))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def interval_rows(kind: str, estimates: dict[str, float], samples: dict[str, np.ndarray],
                  level: float = LEVEL) -> list[dict]:
    """One row per statistic: the estimate on all data, the interval, and the replicates' mean and spread."""
    rows = []
    for name, values in samples.items():
        finite = values[np.isfinite(values)]
        low, high = (float(x) for x in percentile_interval(values, level))
        rows.append({"kind": kind, "statistic": name, "estimate": float(estimates[name]), "level": level,
                     "low": low, "high": high,
                     "replicate_mean": float(finite.mean()) if finite.size else float("nan"),
                     "replicate_std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                     "replicates": int(values.size), "defined_replicates": int(finite.size)})
    return rows


def subsampling_rows(groups: GroupCounts, rule: SelectionRule, level: float = LEVEL, seed: int = 0,
                     **subsampling) -> list[dict]:
    """One row per tracked statistic of ``rule``'s selection on ``groups`` (one group per instruction): the plug-in
    estimate, the trend-corrected value, its bias and the subsampling interval (see the module)."""
    categories = groups.category_order
    names = tracked_statistics(categories)
    select = _selector(groups, rule)

    def statistic(keep: np.ndarray) -> np.ndarray:
        values = summary_statistics(select(keep), categories)
        return np.array([float(values[name]) for name in names])

    estimates = subsample_intervals(statistic, names, stratum_ids(groups.categories, groups.sources), level=level,
                                    seed=seed, bounds=(0.0, float(groups.layout.size)), **subsampling)
    rows = []
    for name in names:
        e = estimates[name]
        top = 1.0 if "share" in name else float(groups.layout.size)  # shares lie in [0, 1], counts in [0, N]
        corrected = min(e.corrected, top)
        low, high = (float("nan"),) * 2 if name in NO_INTERVAL else (min(e.low, top), min(e.high, top))
        rows.append({"kind": groups.kind, "statistic": name, "estimate": e.estimate,
                     "corrected": corrected, "bias": e.estimate - corrected,
                     "bias_large": e.bias_large, "se": e.se, "level": level, "low": low, "high": high,
                     "method": "subsampling"})
    return rows


def _selector(groups: GroupCounts, rule: SelectionRule):
    """keep [G] bool → the rule's [K, N] selection on the kept groups (pooled fast unless the rule needs the
    groups' moments, as ``test`` does)."""
    layout = groups.layout
    if not rule.needs_groups:
        pool = Pool(groups)
        return lambda keep: rule.apply(pool.frequencies(keep), layout)
    nowhere = np.zeros(groups.size, dtype=np.int64)

    def select(keep: np.ndarray) -> np.ndarray:
        sums = partition_sums(groups, nowhere, 1, np.asarray(keep, dtype=np.int64))
        return rule.apply(sums.frequencies(groups.kind, layout, [0]).p, layout, sums.moments[0])

    return select
