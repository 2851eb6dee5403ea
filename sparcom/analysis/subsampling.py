"""Intervals for thresholded set statistics by subsampling instructions without replacement.

The general share is an intersection of K top-ε sets; resampling instructions *with* replacement adds noise to
every frequency, components near each cut cross it independently per category, and the intersection shrinks:
the percentile bootstrap is centred below its own estimate (the demo printed 42.1% with [38.3%, 41.3%]) and
below the population value, which the plug-in itself underestimates for the same reason (statistics review §3).
The standard bootstrap is inconsistent for such non-smooth statistics; subsampling is not.

Method (all sampling within strata, e.g. category × source, without replacement):

1. **Trend in n.** θ̂_m, the statistic on a subsample of a fraction f of every stratum, for f ∈ ``fractions``
   (default n/4, n/2, 3n/4), averaged over ``replicates`` subsamples, and θ̂_n on all data. The bias of a
   thresholded statistic comes from components within the noise of the cut, a band whose width shrinks as
   m^(-1/2); so E θ̂_m ≈ θ + b·m^(-1/2). A least-squares line in m^(-1/2) through the means gives the intercept
   θ̃ (the extrapolation to m → ∞), the estimate of the population value, and the plug-in's bias θ̂_n − θ̃.
2. **Its uncertainty.** The whole extrapolation is repeated on ``halves`` half-samples (n/2 of every stratum,
   ``inner`` subsamples per fraction); a half-sample drawn without replacement reproduces the variance of a
   full-sample estimate (finite-population correction 1/m − 1/n = 1/n at m = n/2), so the standard deviation
   of the half-sample extrapolations is the standard error of θ̃. The Monte-Carlo noise of the inner subsample
   means (their spread / ``inner``, through the intercept's weights) is subtracted from that variance, and the
   Monte-Carlo noise of θ̃'s own subsample means is added. The interval is θ̃ ± z·SE.

The bias is reported and flagged when |bias| > SE/2. Coverage is shown by simulation (tests/test_subsampling.py
and ``docs/analysis.md``): on the review's setup the percentile bootstrap never covers the population share,
this interval mostly does (not at the nominal level: the extrapolation is approximate).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from sparcom.errors import SparcomError
from sparcom.seeding import stream_seed

DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEFAULT_REPLICATES = 20
DEFAULT_HALVES = 16
DEFAULT_INNER = 4
DEFAULT_LEVEL = 0.95
#: Differences below this are floating-point rounding of the extrapolation, not bias.
ROUNDING = 1e-9

#: A statistic of a subsample: [G] bool (which groups are in it) → [S] values.
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SubsampleEstimate:
    """One statistic: plug-in, trend in n, extrapolated (bias-corrected) value, its SE and interval, the bias."""

    statistic: str
    estimate: float  # θ̂_n on all groups
    fractions: tuple[float, ...]  # subsample fractions of the trend, then 1.0
    trend: tuple[float, ...]  # mean θ̂_m at each fraction, then θ̂_n
    corrected: float  # θ̃, the extrapolation to m → ∞
    se: float
    low: float
    high: float
    level: float

    @property
    def bias(self) -> float:
        """θ̂_n − θ̃: how far the plug-in sits from the extrapolated population value."""
        return self.estimate - self.corrected

    @property
    def bias_large(self) -> bool:
        """|bias| > SE/2: the plug-in alone would misplace an interval."""
        return bool(np.isfinite(self.bias) and abs(self.bias) > max(self.se / 2, ROUNDING))

    def summary(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "estimate": self.estimate, "corrected": self.corrected,
                "bias": self.bias, "bias_large": self.bias_large, "se": self.se, "low": self.low,
                "high": self.high, "level": self.level, "method": "subsampling without replacement, trend in n",
                "trend": dict(zip([str(f) for f in self.fractions], self.trend, strict=True))}


def stratum_ids(*labels: Sequence[str]) -> np.ndarray:
    """[G] integer stratum of each group from parallel label sequences (e.g. categories, sources), in sorted
    order of the label tuples."""
    keys = list(zip(*labels, strict=True))
    order = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([order[key] for key in keys], dtype=np.int64)


def subsample(strata: np.ndarray, fraction: float, rng: np.random.Generator,
              base: np.ndarray | None = None) -> np.ndarray:
    """[G] bool: round(fraction · s) of the s ``base`` members of every stratum, uniformly without replacement
    (at least one per stratum)."""
    strata = np.asarray(strata)
    base = np.ones(strata.size, dtype=bool) if base is None else np.asarray(base, dtype=bool)
    keep = np.zeros(strata.size, dtype=bool)
    for stratum in np.unique(strata[base]):
        members = np.flatnonzero(base & (strata == stratum))
        take = max(1, round(fraction * members.size))
        keep[rng.choice(members, size=take, replace=False)] = True
    return keep


def intercept_weights(fractions: Sequence[float]) -> np.ndarray:
    """[F] weights w with intercept = w · means: the first row of the least-squares solution in fraction^(-1/2)."""
    x = np.asarray(fractions, dtype=np.float64) ** -0.5
    design = np.column_stack([np.ones_like(x), x])
    return np.linalg.pinv(design)[0]


def extrapolate(fractions: Sequence[float], means: np.ndarray) -> np.ndarray:
    """[S] intercepts of the least-squares lines of ``means[F, S]`` against fraction^(-1/2) (m → ∞)."""
    return intercept_weights(fractions) @ np.asarray(means, dtype=np.float64)


def _trend(statistic: Statistic, strata: np.ndarray, base: np.ndarray, fractions: Sequence[float],
           replicates: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[F + 1, S] means of the statistic at each fraction of ``base`` and on ``base`` itself; [S] extrapolation;
    [S] its Monte-Carlo variance (from the spread of the subsamples at each fraction)."""
    rows, noise = [], []
    for fraction in fractions:
        values = np.array([statistic(subsample(strata, fraction, rng, base)) for _ in range(replicates)])
        rows.append(np.nanmean(values, axis=0))
        noise.append(np.nanvar(values, axis=0, ddof=1) / replicates if replicates > 1 else np.zeros(values.shape[1]))
    rows.append(np.asarray(statistic(base), dtype=np.float64))
    noise.append(np.zeros_like(rows[-1]))
    weights = intercept_weights([*fractions, 1.0])
    means = np.vstack(rows)
    return means, weights @ means, (weights ** 2) @ np.vstack(noise)


def subsample_intervals(statistic: Statistic, names: Sequence[str], strata: np.ndarray,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, replicates: int = DEFAULT_REPLICATES,
                        halves: int = DEFAULT_HALVES, inner: int = DEFAULT_INNER, level: float = DEFAULT_LEVEL,
                        seed: int = 0, bounds: tuple[float, float] | None = None) -> dict[str, SubsampleEstimate]:
    """The trend-extrapolated estimate and interval (see the module) of every statistic ``statistic`` returns.

    ``bounds`` (e.g. (0, 1) for shares): the range of the statistics; the extrapolation and the interval are
    clipped to it (a straight line in m^(-1/2) knows no bounds). Undefined subsamples (NaN) are left out.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, which is the answer
        return _intervals(statistic, names, np.asarray(strata), fractions, replicates, halves, inner, level, seed,
                          bounds)


def _intervals(statistic: Statistic, names: Sequence[str], strata: np.ndarray, fractions: Sequence[float],
               replicates: int, halves: int, inner: int, level: float, seed: int,
               bounds: tuple[float, float] | None) -> dict[str, SubsampleEstimate]:
    if not 0 < level < 1:
        raise SparcomError(f"confidence level must be in (0, 1), got {level}")
    if replicates < 1 or halves < 2 or inner < 1:
        raise SparcomError("subsampling needs replicates ≥ 1, halves ≥ 2 and inner ≥ 1")
    if any(not 0 < f < 1 for f in fractions):
        raise SparcomError(f"subsample fractions must be in (0, 1), got {list(fractions)}")
    rng = np.random.default_rng(stream_seed(seed, "subsampling"))
    everything = np.ones(strata.size, dtype=bool)
    means, corrected, own_noise = _trend(statistic, strata, everything, fractions, replicates, rng)
    half = [_trend(statistic, strata, subsample(strata, 0.5, rng), fractions, inner, rng) for _ in range(halves)]
    spread = np.nanvar(np.array([h[1] for h in half]), axis=0, ddof=1)
    inner_noise = np.nanmean(np.array([h[2] for h in half]), axis=0)
    se = np.sqrt(np.maximum(spread - inner_noise, 0.0) + own_noise)
    z = NormalDist().inv_cdf((1 + level) / 2)
    low, high = corrected - z * se, corrected + z * se
    if bounds is not None:
        corrected, low, high = (np.clip(v, *bounds) for v in (corrected, low, high))
    result = {}
    for s, name in enumerate(names):
        result[name] = SubsampleEstimate(name, float(means[-1, s]), (*map(float, fractions), 1.0),
                                         tuple(float(v) for v in means[:, s]), float(corrected[s]), float(se[s]),
                                         float(low[s]), float(high[s]), level)
    return result
