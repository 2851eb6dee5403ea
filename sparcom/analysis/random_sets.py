"""Random component sets with the shape of a selected set, as index arrays (the null of held-out decoding).

A random set has the selected set's size in every block of the layout — every layer, and for expert neurons
every expert of every layer, like the causal control sets (:mod:`sparcom.causal.baseline`) — drawn uniformly
without replacement from the block's components, the selected ones included (:func:`uniform_subsets`). Each block of each draw has its own
generator seeded from (label..., block) by :func:`~sparcom.seeding.stream_seed`, so a set does not depend on the
order in which folds, categories or blocks are visited. Pure numpy (no torch): R sets at once, as [R, m] indices.
"""

from __future__ import annotations

import numpy as np

from sparcom.components import Layout
from sparcom.seeding import stream_seed


def blocks(layout: Layout) -> list[slice]:
    """The blocks whose sizes a random set keeps: layers, or (layer, expert) pairs for expert neurons."""
    return [part for _, part in layout.groups("expert")]


def block_counts(mask: np.ndarray, layout: Layout) -> np.ndarray:
    """[B] selected components of ``mask[N]`` in each block."""
    mask = np.asarray(mask, dtype=bool)
    return np.array([int(mask[part].sum()) for part in blocks(layout)], dtype=np.int64)


def uniform_subsets(rng: np.random.Generator, size: int, count: int, replicates: int) -> np.ndarray:
    """[R, count] rows of uniform random ``count``-subsets of range(size): the positions of the ``count`` smallest
    of ``size`` uniform random keys per row (every subset equally likely; ties have probability 0).

    One vectorised draw and one partition per block, whatever the count (a partial Fisher–Yates shuffle needs a
    Python step per drawn element, which dominated held-out decoding at large ε).
    """
    if count == 0:
        return np.zeros((replicates, 0), dtype=np.int64)
    keys = rng.random((replicates, size))
    if count == size:
        return np.argsort(keys, axis=1).astype(np.int64)
    return np.argpartition(keys, count - 1, axis=1)[:, :count].astype(np.int64)


def draw_like(mask: np.ndarray, layout: Layout, replicates: int, *label: object) -> np.ndarray:
    """[R, m] flat indices of ``replicates`` random sets with ``mask``'s per-block counts (each row sorted).

    ``label`` (e.g. seed, fold, category) names the stream; the same label gives the same sets.
    """
    counts = block_counts(mask, layout)
    parts = []
    for position, (part, count) in enumerate(zip(blocks(layout), counts, strict=True)):
        if count == 0:
            continue
        rng = np.random.default_rng(stream_seed(*label, position))
        parts.append(uniform_subsets(rng, part.stop - part.start, int(count), replicates) + part.start)
    if not parts:
        return np.zeros((replicates, 0), dtype=np.int64)
    return np.sort(np.concatenate(parts, axis=1), axis=1)
