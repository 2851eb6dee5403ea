"""The statistics every part of sparcom uses, written once: the significance level, empirical p-values, Holm's
correction, percentile and Wilson intervals, and "is this p significant?".

Analysis (decoding against random sets, bootstrap intervals of set statistics) and the causal check (damage and
specificity against random sets) both call these, so a formula or the level changes in one place. Everything is
pure numpy on arrays; scipy is imported only inside the function that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

import numpy as np

from sparcom.errors import SparcomError

#: The one significance level: a p-value (after its correction) at or below it is significant.
ALPHA = 0.05
#: The one confidence level of every interval sparcom reports.
LEVEL = 0.95
#: Relative slack when comparing a p-value with α: p-values are rationals k / (1 + R) times integers, and the
#: boundary case (e.g. 6 × 1/120 against 0.05) must not fail by one unit in the last place.
P_SLACK = 1e-9


def significant(p: float | None, alpha: float = ALPHA) -> bool:
    """p ≤ alpha (with a hair of slack for the rational boundary case); False for None and NaN."""
    return p is not None and bool(np.isfinite(p) and p <= alpha * (1 + P_SLACK))


def empirical_p(observed: np.ndarray | float, random: np.ndarray) -> np.ndarray:
    """One-sided empirical p of ``observed`` [...] against ``random`` [..., R]: (1 + #{random ≥ observed}) / (1 + R).

    Ties count against the observed value. NaN where the observed value is NaN or there are no random values.
    """
    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    r = random.shape[-1]
    if r == 0:
        return np.full(observed.shape, np.nan)
    p = (1 + (random >= observed[..., None]).sum(axis=-1)) / (1 + r)
    return np.where(np.isnan(observed), np.nan, p)


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries are not tests and stay NaN.

    Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) · p_(j)) with m the number of tests.
    """
    p = np.asarray(p, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def random_sets_needed(tests: int, alpha: float = ALPHA) -> int:
    """The fewest random sets R for which the best empirical p, 1 / (1 + R), survives Holm (or Bonferroni) over
    ``tests`` tests at level ``alpha``: tests / (1 + R) ≤ alpha, i.e. R ≥ tests / alpha − 1 (exact arithmetic)."""
    if tests < 1 or not 0 < alpha < 1:
        raise SparcomError(f"random_sets_needed: need tests ≥ 1 and 0 < alpha < 1, got {tests} and {alpha}")
    bound = Fraction(tests) / Fraction(str(alpha)) - 1
    return max(0, -(-bound.numerator // bound.denominator))


def min_holm_p(random_sets: int, tests: int) -> float:
    """The smallest Holm-adjusted empirical p any test can reach with ``random_sets`` random sets and ``tests``
    tests (NaN when there is no test or no random set)."""
    if random_sets < 1 or tests < 1:
        return float("nan")
    return min(1.0, tests / (1 + random_sets))


def check_level(level: float) -> float:
    """``level`` when it is a confidence level in (0, 1); a one-line error otherwise."""
    if not 0 < level < 1:
        raise SparcomError(f"confidence level must be in (0, 1), got {level}")
    return level


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval over axis 0 of ``samples`` [B, ...], ignoring NaN and infinite
    replicates (NaN where none is finite). A 1-D input gives 0-d arrays (``float()`` them)."""
    check_level(level)
    tail = round((1 - level) / 2, 12)  # 0.05 for level 0.9, not 0.04999…
    samples = np.asarray(samples, dtype=np.float64)
    samples = np.where(np.isfinite(samples), samples, np.nan)
    defined = np.isfinite(samples).any(axis=0)
    safe = np.where(defined[None], samples, 0.0)
    low, high = np.nanquantile(safe, [tail, 1 - tail], axis=0)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def wilson_interval(correct: int, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN when total = 0).

    With p̂ = correct/total and z the (1 + level)/2 normal quantile: (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
    """
    if total == 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf((1 + check_level(level)) / 2)
    phat = correct / total
    denominator = 1 + z * z / total
    centre = (phat + z * z / (2 * total)) / denominator
    half = z * np.sqrt(phat * (1 - phat) / total + z * z / (4 * total * total)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


__all__ = ["ALPHA", "LEVEL", "P_SLACK", "check_level", "empirical_p", "holm", "min_holm_p", "percentile_interval",
           "random_sets_needed", "significant", "wilson_interval"]
