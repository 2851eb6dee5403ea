"""Uniqueness with a margin and uncertainty, and decoding by the unique members alone.

The paper's uniqueness claim ("each category has components of its own that carry it") was judged by
within > across cross-source Jaccard with no margin and no uncertainty (0.80 vs 0.72 for SmolLM2's paper-rule
sets) and by decoding with whole sets, not the unique members the claim is about (statistics review §4).

- **margin**: d = mean within-category − mean across-category Jaccard of the sets selected on the AI-written vs
  the human-written half of every category (:class:`~sparcom.analysis.validity.CrossSource`), with a
  subsampling interval over instructions (:mod:`sparcom.analysis.subsampling`: Jaccard of noisy selections
  depends on n, so the estimate is trend-corrected). The margin :data:`MARGIN` is fixed in advance.
- **unique decoding**: held-out set-score decoding of the category from each set's *unique* members (selected for
  that category only, on the training folds), against random sets of the unique members' per-layer shape and
  against frequency-matched ones (the same count in every layer and bin of pooled frequency, what the rules
  select on, the members included). Its p is the larger of the two empirical p-values: the members must beat both baselines
  (an intersection–union test, so its false-positive rate stays ≤ α).

**Decision**: uniqueness *holds* when the interval of d lies above :data:`MARGIN` and the unique-member decoding
beats its random sets at p ≤ α; it *does not hold* when the interval of d lies at or below the margin, or the
decoding p > α with enough random sets to reach α (or there are no unique members); otherwise *not enough
evidence*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.analysis.groups import SOURCES, GroupCounts, partition_sums
from sparcom.analysis.pooling import Pool
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.sets import membership
from sparcom.analysis.subsampling import SubsampleEstimate, stratum_ids, subsample_intervals
from sparcom.analysis.validity import DecoderResult, held_out_select, jaccard_matrix
from sparcom.stats import ALPHA

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not enough evidence"
#: Within − across Jaccard the sets must exceed: a tenth of the Jaccard scale, fixed before any data were seen
#: (sets that share one member in ten more within a category than across are barely "their own").
MARGIN = 0.10


def unique_members(mask: np.ndarray) -> np.ndarray:
    """[K, N]: each category's selected components that no other category selected."""
    mask = np.asarray(mask, dtype=bool)
    return mask & (membership(mask) == 1)[None, :]


def select_parts(groups: GroupCounts, rule: SelectionRule, part: np.ndarray, parts: int,
                 pool: Pool | None = None) -> list[np.ndarray] | None:
    """The rule's [K, N] selection on each part of the groups (``part[g]`` in 0..parts-1, −1 left out); None when
    a category has no tokens in some part. Rules that read only p pool through ``pool`` (fast); ``test`` needs
    the per-group moments of :func:`~sparcom.analysis.groups.partition_sums`."""
    if rule.name == "test" or pool is None:
        sums = partition_sums(groups, part, parts)
        if (sums.tokens == 0).any():
            return None
        return [rule.apply(sums.frequencies(groups.kind, groups.layout, [i]).p, groups.layout, sums.moments[i])
                for i in range(parts)]
    masks = []
    for i in range(parts):
        in_part = part == i
        if (np.bincount(groups.category_index[in_part], weights=groups.tokens[in_part],
                        minlength=pool.k) == 0).any():
            return None
        masks.append(rule.apply(pool.frequencies(in_part), groups.layout))
    return masks


def within_minus_across(groups: GroupCounts, rule: SelectionRule, keep: np.ndarray, pool: Pool | None = None,
                        ) -> float:
    """d = mean diagonal − mean off-diagonal of the AI × human Jaccard matrix on the kept groups (NaN if a half
    of some category is empty)."""
    source = np.asarray(groups.sources)
    part = np.where(keep, np.select([source == s for s in SOURCES], [0, 1], default=-1), -1)
    masks = select_parts(groups, rule, part, 2, pool)
    if masks is None:
        return float("nan")
    jaccard = jaccard_matrix(masks[0], masks[1])
    off = ~np.eye(jaccard.shape[0], dtype=bool)
    return float(np.nanmean(np.diag(jaccard)) - np.nanmean(jaccard[off]))


@dataclass(frozen=True)
class Uniqueness:
    """The margin test and the unique-member decoding of one rule, and the decision."""

    rule: SelectionRule
    margin: float
    difference: SubsampleEstimate  # within − across
    unique_decoding: DecoderResult
    unique_sizes: dict[str, float]  # mean unique members per category over the training folds
    alpha: float
    decision: str
    reason: str

    def summary(self) -> dict[str, Any]:
        d = self.unique_decoding
        random = d.random_accuracy
        return {"rule": self.rule.variant, "epsilon": self.rule.epsilon, "margin": self.margin,
                "within_minus_across": self.difference.summary(),
                "unique_decoding": {"accuracy": d.accuracy, "ci": list(d.interval),
                                    "random_mean": float(random.mean()) if random.size else float("nan"),
                                    "p_value": d.p_value, "random_sets": int(random.size),
                                    "matched_random_mean": (float(d.matched_accuracy.mean())
                                                            if d.matched_accuracy.size else float("nan")),
                                    "matched_p_value": d.matched_p_value,
                                    "decision_p_value": decoding_p(d)},
                "unique_sizes": self.unique_sizes, "alpha": self.alpha, "decision": self.decision,
                "reason": self.reason}


def decide(difference: SubsampleEstimate, decoding: DecoderResult, margin: float = MARGIN,
           alpha: float = ALPHA) -> tuple[str, str]:
    """(decision, reason) of the uniqueness claim (see the module)."""
    p = decoding_p(decoding)
    matched = (f", frequency-matched p = {decoding.matched_p_value:.3g}" if decoding.matched_correct is not None
               else "")
    text = (f"within − across {difference.corrected:.3f} [{difference.low:.3f}, {difference.high:.3f}] vs margin "
            f"{margin:.2f}; unique-member decoding {100 * decoding.accuracy:.1f}% p = {decoding.p_value:.3g} against "
            f"random sets of its shape{matched}")
    reachable = decoding.random_correct is not None and 1 / (1 + decoding.random_correct.size) <= alpha
    if not np.isfinite(difference.low):
        return UNDECIDED, f"{text}: the margin interval is undefined"
    if difference.high <= margin or (reachable and not p <= alpha):
        return FAILS, text
    if difference.low > margin and p <= alpha:
        return HOLDS, text
    return UNDECIDED, text


def decoding_p(decoding: DecoderResult) -> float:
    """The decoding's p against both baselines: the larger of the shape-matched and the frequency-matched p (the
    shape-matched one alone for a result without matched sets)."""
    if decoding.matched_correct is None:
        return decoding.p_value
    return max(decoding.p_value, decoding.matched_p_value)


def uniqueness(groups: GroupCounts, rule: SelectionRule, margin: float = MARGIN, alpha: float = ALPHA,
               folds: int = 5, random_sets: int = 100, seed: int = 0, **subsampling: Any) -> Uniqueness:
    """The margin with its interval and the unique-member decoding of ``rule`` on ``groups``."""
    strata = stratum_ids(groups.categories, groups.sources)
    pool = Pool(groups)

    def statistic(keep: np.ndarray) -> np.ndarray:
        return np.array([within_minus_across(groups, rule, keep, pool)])

    difference = subsample_intervals(statistic, ["within_minus_across"], strata, seed=seed, bounds=(-1.0, 1.0),
                                     **subsampling)["within_minus_across"]
    sizes: list[np.ndarray] = []

    def select(freqs, moments) -> np.ndarray:
        unique = unique_members(rule.apply(freqs.p, freqs.layout, moments))
        sizes.append(unique.sum(axis=1))
        return unique

    decoding = held_out_select(groups, select, folds, seed, random_sets)
    unique = decoding.decoders["set_score"]
    mean_sizes = np.mean(sizes, axis=0) if sizes else np.zeros(len(groups.category_order))
    decision, reason = decide(difference, unique, margin, alpha)
    return Uniqueness(rule, margin, difference, unique,
                      dict(zip(groups.category_order, map(float, mean_sizes), strict=True)), alpha, decision, reason)
