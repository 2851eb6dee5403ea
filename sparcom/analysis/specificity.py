"""How specific is each component to a category: scores, and the two rules that select on them.

Scores from the category frequencies p[K, N] (K categories, N components):

- **contrast** s_c = p_c − max_{c'≠c} p_c' (``against="max"``, the default), or s_c = p_c − mean_{c'≠c} p_c'
  (``against="mean"``). With "max", s_c > 0 means c fires the component more than every other category, so a
  component has a positive score for at most one category (ties at the top give 0 to both).
- **entropy specificity** 1 − H(q) / ln K with q_c = p_c / Σ_c' p_c' and H(q) = −Σ q_c ln q_c: 1 when only one
  category fires the component, 0 when all fire it equally; NaN when no category fires it or K < 2.

Rules (used by :class:`~sparcom.analysis.selection.SelectionRule`):

- ``contrast``: per category, the top-ε fraction of s_c over all N components, ties kept as in ``percentile``
  (s_c ≥ quantile(s_c, 1 − ε), linear quantile), and never a component with s_c ≤ 0 or p_c = 0.
- ``test``: per component and category, a one-sided Welch t-test of the per-instruction frequencies
  x_g = counts_g / tokens_g of the instructions of c against those of all other categories (H1: mean_c > mean_rest),
  Benjamini–Hochberg over the N components of the kind within each category at level ``fdr``, and a minimum
  effect d = mean_c − mean_rest ≥ δ (δ is the rule's ε). Groups without counted tokens are left out.
  Means are over instructions (each instruction weighs the same), unlike p_c, which pools tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparcom.analysis.groups import GroupMoments
from sparcom.errors import SparcomError

CONTRASTS: tuple[str, ...] = ("max", "mean")


def contrast_scores(p: np.ndarray, against: str = "max") -> np.ndarray:
    """s[K, N]: p_c minus the largest (or the mean) frequency of the other categories; NaN when K < 2."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if against not in CONTRASTS:
        raise SparcomError(f"unknown contrast {against!r}; choose from {', '.join(CONTRASTS)}")
    k = p.shape[0]
    if k < 2:
        return np.full(p.shape, np.nan)
    if against == "mean":
        return p - (p.sum(axis=0, keepdims=True) - p) / (k - 1)
    top = np.argmax(p, axis=0)
    columns = np.arange(p.shape[1])
    first = p[top, columns]
    rest = p.copy()
    rest[top, columns] = -np.inf
    second = rest.max(axis=0)
    others = np.broadcast_to(first, p.shape).copy()
    others[top, columns] = second  # for the top category the largest other is the runner-up
    return p - others


def entropy_specificity(p: np.ndarray) -> np.ndarray:
    """[N] 1 − H(q)/ln K of each component's frequencies normalised over categories (NaN if never active)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    k = p.shape[0]
    total = p.sum(axis=0)
    if k < 2:
        return np.full(p.shape[1], np.nan)
    q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    entropy = -(q * np.log(q, out=np.zeros_like(q), where=q > 0)).sum(axis=0)
    return np.where(total > 0, 1.0 - entropy / np.log(k), np.nan)


def contrast_mask(p: np.ndarray, epsilon: float, against: str = "max") -> np.ndarray:
    """The ``contrast`` rule: per row, s ≥ quantile(s, 1 − ε) and s > 0 and p > 0."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if p.shape[1] == 0 or p.shape[0] < 2:
        return np.zeros(p.shape, dtype=bool)
    scores = contrast_scores(p, against)
    cut = np.quantile(scores, 1.0 - epsilon, axis=1)
    return (scores >= cut[:, None]) & (scores > 0) & (p > 0)


def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values along the last axis: min_{j ≥ i} m·p_(j)/j, capped at 1.

    Rejecting where the adjusted value is ≤ q is the step-up procedure: reject the k smallest p, k the largest
    index with p_(k) ≤ k·q/m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.shape[-1]
    if m == 0:
        return p.copy()
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, np.minimum(ranked, 1.0), axis=-1)
    return adjusted


@dataclass
class WelchResult:
    """One-sided Welch tests of each category's instructions against all others', per component ([K, N])."""

    effect: np.ndarray  # mean_c − mean_rest of the per-instruction frequencies
    t: np.ndarray  # Welch t (±inf where both variances are 0 and the means differ; NaN where all are equal)
    df: np.ndarray  # Welch–Satterthwaite degrees of freedom
    pvalue: np.ndarray  # one-sided, H1: mean_c > mean_rest
    qvalue: np.ndarray  # Benjamini–Hochberg adjusted within each category (row)


def welch_greater(moments: GroupMoments) -> WelchResult:
    """One-sided Welch t-tests from per-category sums of x and x² (vectorised over categories and components).

    For category c: a = its groups, b = all other groups; m = Σx/n, v = (Σx² − n m²)/(n − 1) (clipped at 0),
    se² = v_a/n_a + v_b/n_b, t = (m_a − m_b)/se, df = se⁴ / ((v_a/n_a)²/(n_a − 1) + (v_b/n_b)²/(n_b − 1)),
    p = P(T_df ≥ t). When se = 0 (both sides constant) p is 0 if m_a > m_b (perfect separation), else 1.
    """
    from scipy.special import stdtr

    n = moments.n.astype(np.float64)
    if n.size < 2:
        raise SparcomError("rule 'test' compares categories with each other; the groups have only one category")
    short = [c for c, size in zip(moments.categories, moments.n, strict=True) if size < 2]
    if short or n.sum() - n.max() < 2:
        raise SparcomError(f"rule 'test' needs at least 2 instructions with counted tokens in every category "
                           f"(and among the others); too few in: {', '.join(short) or 'the other categories'}")
    n_a = n[:, None]
    n_b = n.sum() - n_a
    total_b = moments.total.sum(axis=0, keepdims=True) - moments.total
    squares_b = moments.squares.sum(axis=0, keepdims=True) - moments.squares
    mean_a, mean_b = moments.total / n_a, total_b / n_b
    var_a = np.maximum(moments.squares - n_a * mean_a * mean_a, 0.0) / (n_a - 1)
    var_b = np.maximum(squares_b - n_b * mean_b * mean_b, 0.0) / (n_b - 1)
    part_a, part_b = var_a / n_a, var_b / n_b
    se2 = part_a + part_b
    effect = mean_a - mean_b
    positive = se2 > 0
    safe = np.where(positive, se2, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(positive, effect / np.sqrt(safe), np.sign(effect) * np.inf)
        t = np.where(~positive & (effect == 0), np.nan, t)
        df = np.where(positive, safe * safe / (part_a**2 / (n_a - 1) + part_b**2 / (n_b - 1)), np.nan)
    pvalue = np.where(positive, stdtr(np.where(positive, df, 1.0), -np.where(positive, t, 0.0)),
                      np.where(effect > 0, 0.0, 1.0))
    return WelchResult(effect, t, df, pvalue, bh_adjust(pvalue))


def welch_test_mask(moments: GroupMoments, fdr: float, min_effect: float) -> np.ndarray:
    """The ``test`` rule: BH-adjusted one-sided Welch p ≤ fdr and effect ≥ min_effect (> 0), per category."""
    result = moments.welch
    return (result.qvalue <= fdr) & (result.effect >= min_effect) & (result.effect > 0)
