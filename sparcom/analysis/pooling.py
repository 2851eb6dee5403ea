"""Category frequencies of a weighted subset of groups, fast enough to be recomputed hundreds of times.

Subsampling (:mod:`sparcom.analysis.subsampling`) pools the groups of every subsample: with 1,200 instructions ×
46,080 neurons, :func:`~sparcom.analysis.groups.partition_sums` (float64, and the per-group moments the ``test``
rule needs) costs about a second each time. Rules that read only p[K, N] need one product of a [K, G] weight
matrix with the counts; in float32 that is exact while every pooled sum stays below 2**24 (checked: float32
represents every integer up to 2**24, so each partial sum of integer counts is exact), and float64 otherwise.
"""

from __future__ import annotations

import numpy as np

from sparcom.analysis.groups import GroupCounts

#: float32 holds every integer up to this exactly.
FLOAT32_EXACT = 1 << 24


class Pool:
    """The groups' counts, kept once in the narrowest exact float type, pooled per category on demand."""

    def __init__(self, groups: GroupCounts) -> None:
        self.groups = groups
        exact = int(groups.tokens.sum()) < FLOAT32_EXACT
        self.dtype = np.float32 if exact else np.float64
        self.counts = groups.counts.astype(self.dtype)
        self.tokens = groups.tokens.astype(np.float64)
        self.k = len(groups.category_order)

    def frequencies(self, weights: np.ndarray) -> np.ndarray:
        """[K, N] Σ w_g counts_g / Σ w_g tokens_g per category (0 where a category has no weighted tokens);
        ``weights`` [G] are integer multiplicities or a boolean mask."""
        weights = np.asarray(weights, dtype=np.float64)
        onehot = np.zeros((self.k, self.groups.size))
        onehot[self.groups.category_index, np.arange(self.groups.size)] = weights
        counts = np.rint(onehot.astype(self.dtype) @ self.counts).astype(np.float64)
        tokens = onehot @ self.tokens
        return np.where(tokens[:, None] > 0, counts / np.where(tokens > 0, tokens, 1.0)[:, None], 0.0)
