"""Bootstrap confidence intervals of the set statistics, over instructions.

Profiling with ``--bootstrap R`` accumulates, next to the plain counts, R replicate counters in which every
instruction carries a Poisson(1) weight (``bootstrap/tokens/{cat}`` [R], ``bootstrap/{kind}/{cat}/{layer}``
[R, ...]). Each replicate is a resample of the instructions: its frequencies are p_r = count_r / tokens_r, the
selection rule is applied to them as to the real data, and the statistics are recomputed. The interval is the
percentile interval of the replicate values (replicates where a statistic is undefined, NaN, are left out and
counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.sets import summary_statistics
from sparcom.components import Layout
from sparcom.stats import LEVEL, percentile_interval

HOW_TO_ENABLE = ("confidence intervals need bootstrap counters: profile with 'sparcom profile ... --bootstrap 200' "
                 "(Poisson bootstrap over instructions; merges and resumes like the plain counts)")


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
