"""Category frequencies of a weighted subset of groups, fast enough to be recomputed hundreds of times.

Subsampling (:mod:`sparcom.analysis.subsampling`) pools the groups of every subsample: with 1,200 instructions ×
46,080 neurons, :func:`~sparcom.analysis.groups.partition_sums` (float64, and the per-group moments the ``test``
rule needs) costs about a second each time. Rules that read only p[K, N] need one product of a [K, G] weight
matrix with the counts; in float32 that is exact while every pooled sum stays below 2**24 (checked: float32
represents every integer up to 2**24, so each partial sum of integer counts is exact), and float64 otherwise.
"""

from __future__ import annotations

import itertools

import numpy as np

from sparcom.analysis.groups import GroupCounts

#: float32 holds every integer up to this exactly.
FLOAT32_EXACT = 1 << 24


class Pool:
    """The groups' counts, kept once in the narrowest exact float type and sorted by category, pooled per category
    on demand: each category is one [1, G_c] × [G_c, N] product over its own groups (a [K, G] one-hot product
    would multiply K − 1 zero blocks too)."""

    def __init__(self, groups: GroupCounts) -> None:
        self.groups = groups
        exact = int(groups.tokens.sum()) < FLOAT32_EXACT
        self.dtype = np.float32 if exact else np.float64
        self.k = len(groups.category_order)
        index = groups.category_index
        self.order = np.argsort(index, kind="stable")
        self.counts = groups.counts[self.order].astype(self.dtype)
        self.tokens = groups.tokens[self.order].astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=self.k))])
        self.slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(starts)]

    def frequencies(self, weights: np.ndarray) -> np.ndarray:
        """[K, N] Σ w_g counts_g / Σ w_g tokens_g per category (0 where a category has no weighted tokens);
        ``weights`` [G] are integer multiplicities or a boolean mask."""
        weights = np.asarray(weights, dtype=np.float64)[self.order]
        out = np.zeros((self.k, self.counts.shape[1]))
        for c, part in enumerate(self.slices):
            w = weights[part]
            tokens = float(w @ self.tokens[part])
            if tokens > 0:
                out[c] = np.rint(w.astype(self.dtype) @ self.counts[part]).astype(np.float64) / tokens
        return out

    def pooled(self, weights: np.ndarray) -> np.ndarray:
        """[N] Σ w_g counts_g / Σ w_g tokens_g over every group, whatever its category (0 without weighted tokens
        is avoided: the token sum is floored at 1)."""
        weights = np.asarray(weights, dtype=np.float64)[self.order]
        counts = np.rint(weights.astype(self.dtype) @ self.counts).astype(np.float64)
        return counts / max(float(weights @ self.tokens), 1.0)
