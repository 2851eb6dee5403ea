"""Alterations from a base model to a tuned one (DESIGN §1): set changes, frequency correlation, routing shift.

Both sides are arrays over the same components (same layout, same categories in the same order): masks
``[K, N]`` from the same selection rule and frequencies ``p[K, N]``. Nothing here loads a model or a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparcom.analysis.sets import CLASSES, classify, ratio, set_counts
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.provenance import COMPARE_ASPECTS, mismatches


def incompatibilities(base: dict, tuned: dict) -> list[str]:
    """Every identifying manifest field on which the runs differ, beyond their weights (overridable with --force):
    the compare aspects of :data:`sparcom.provenance.MEASUREMENT`. Empty when comparable."""
    return mismatches(base, tuned, COMPARE_ASPECTS, names=("base", "tuned"))


def check_layouts(base: Layout, tuned: Layout) -> None:
    """Refuse to compare component by component when the layers or their shapes differ (even with --force)."""
    if base.layers != tuned.layers or base.shapes != tuned.shapes:
        raise SparcomError(f"{base.kind} components differ between the runs (base layers {len(base.layers)} with shapes "
                           f"{sorted(set(base.shapes))}, tuned {len(tuned.layers)} with {sorted(set(tuned.shapes))}); "
                           "they cannot be compared component by component")


def _change(base: np.ndarray, tuned: np.ndarray) -> dict:
    retained = int((base & tuned).sum())
    b, t = int(base.sum()), int(tuned.sum())
    return {"base": b, "tuned": t, "retained": retained, "gained": t - retained, "lost": b - retained,
            "jaccard": ratio(retained, b + t - retained), "retained_share": ratio(retained, b)}


def set_changes(base_mask: np.ndarray, tuned_mask: np.ndarray, categories: Sequence[str]) -> list[dict]:
    """Per category: sizes before and after, retained (in both), gained (tuned only), lost (base only), Jaccard."""
    return [{"category": c, **_change(base_mask[i], tuned_mask[i])} for i, c in enumerate(categories)]


def set_changes_per_group(base_mask: np.ndarray, tuned_mask: np.ndarray, layout: Layout, categories: Sequence[str],
                          by: str = "layer") -> list[dict]:
    """:func:`set_changes` within each layer (or expert)."""
    rows = []
    for labels, part in layout.groups(by):
        for i, category in enumerate(categories):
            rows.append({"category": category, **labels, **_change(base_mask[i, part], tuned_mask[i, part])})
    return rows


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN when either side is constant or empty."""
    from scipy.stats import rankdata

    if len(x) < 2:
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when either side is constant or empty."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x) if len(x) else np.zeros(0)
    y = np.asarray(y, dtype=np.float64) - np.mean(y) if len(y) else np.zeros(0)
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def frequency_correlation(p_base: np.ndarray, p_tuned: np.ndarray, categories: Sequence[str]) -> list[dict]:
    """Per category: Spearman and Pearson correlation of the frequencies, and their mean absolute change."""
    rows = []
    for i, category in enumerate(categories):
        a, b = p_base[i], p_tuned[i]
        rows.append({"category": category, "spearman": rank_correlation(a, b), "pearson": pearson(a, b),
                     "mean_p_base": float(a.mean()) if a.size else float("nan"),
                     "mean_p_tuned": float(b.mean()) if b.size else float("nan"),
                     "mean_abs_change": float(np.abs(b - a).mean()) if a.size else float("nan")})
    return rows


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (in [0, 1]) of two non-negative vectors, each normalised to sum 1.

    NaN when either vector sums to 0 (no routed tokens: no distribution to compare).
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def routing_shift(f_base: np.ndarray, f_tuned: np.ndarray, layout: Layout, categories: Sequence[str]) -> list[dict]:
    """Per category and layer: JS divergence between the base and tuned routing distributions over experts.

    ``f`` are expert frequencies [K, N] of kind ``expert``; each layer's slice is normalised to a distribution
    (the share of routed token slots that went to each expert).
    """
    rows = []
    for labels, part in layout.groups("layer"):
        for i, category in enumerate(categories):
            a, b = f_base[i, part], f_tuned[i, part]
            rows.append({"category": category, **labels, "js_divergence_bits": jensen_shannon(a, b),
                         "top_expert_base": int(np.argmax(a)) if a.size else -1,
                         "top_expert_tuned": int(np.argmax(b)) if b.size else -1})
    return rows


def class_transitions(base_mask: np.ndarray, tuned_mask: np.ndarray) -> np.ndarray:
    """[4, 4] counts of components moving from a class in the base (rows) to one in the tuned model (columns).

    Classes are :data:`sparcom.analysis.sets.CLASSES` (never, unique, shared, general).
    """
    base, tuned = classify(base_mask), classify(tuned_mask)
    size = len(CLASSES)
    return np.bincount(base.astype(np.int64) * size + tuned, minlength=size * size).reshape(size, size)


def transition_rows(matrix: np.ndarray) -> list[dict]:
    return [{"base_class": a, "tuned_class": b, "components": int(matrix[i, j])}
            for i, a in enumerate(CLASSES) for j, b in enumerate(CLASSES)]


def structure_change(base_mask: np.ndarray, tuned_mask: np.ndarray, categories: Sequence[str]) -> list[dict]:
    """Every set count (general, shared-by-m, unique per category, ...) before and after."""
    before, after = set_counts(base_mask, categories), set_counts(tuned_mask, categories)
    return [{"statistic": name, "base": before[name], "tuned": after[name], "change": after[name] - before[name]}
            for name in before if name != "components"]
