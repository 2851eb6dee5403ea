"""Random component sets with a selected set's shape: the one drawer of validity's baselines and the causal controls.

A random set keeps the selected set's count in every *block*: every layer, and for expert neurons every expert of
every layer (so a control sits in the same experts and has the same routing exposure). Within a block it is drawn
uniformly without replacement from the block's candidates — by default all its components, the selected ones
included: the null is "any set of this shape", not "any set avoiding the selection". Two parameters refine the
blocks for matched controls without another drawer: ``strata`` ([N] integer labels, e.g. frequency or magnitude
bins) splits every block by label, so the set keeps the selected count in every (layer, expert, bin); ``exclude``
([N] bool, e.g. the selected components themselves) removes candidates; :func:`merge_short_strata` merges a
block's strata that lack candidates with their lower neighbours first (the matched controls of
:mod:`sparcom.causal.controls`).

Each block of each draw has its own generator, seeded by :func:`~sparcom.seeding.stream_seed` from a stream label
and the block's name, so a set does not depend on the order in which folds, categories or blocks are visited, nor
on numpy's global state. Two strategies draw within a block. Both are uniform; they stay two because each one's
numbers are pinned by recorded results (the causal check's ΔNLL pins, validity's decoding tests), and they differ
in what a stream is:

- :func:`per_set` (the causal controls): one set per seed; set r's block generators are seeded by
  (seed + r, label, kind, layer[, expert]) and draw with numpy's ``Generator.choice`` — a set is fixed by its own
  seed, whatever else is drawn;
- :func:`batched` (validity's baselines): R sets at once; each block's one generator is seeded by (label...,
  block position) and draws the R sets as the smallest of uniform keys (:func:`uniform_subsets`), one vectorised
  partition per block — held-out decoding draws hundreds of sets per fold and category.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sparcom.components import ComponentSet, Layout
from sparcom.errors import SparcomError
from sparcom.seeding import stream_seed

#: The smallest top bin, in components of a kind pooled over its layers: the quantile levels halve until here.
MIN_TOP_BIN = 32


def quantile_levels(size: int, min_top: int = MIN_TOP_BIN) -> tuple[float, ...]:
    """Levels 1 − 2^−k, k = 1..K, with K the largest that leaves ``min_top`` of ``size`` components in the top bin
    (none when ``size < 2 · min_top``: one bin)."""
    levels = []
    k = 1
    while size * 0.5 ** k >= min_top:
        levels.append(1.0 - 0.5 ** k)
        k += 1
    return tuple(levels)


def quantile_strata(values: np.ndarray, min_top: int = MIN_TOP_BIN) -> np.ndarray:
    """[N] bin labels 0..K of ``values`` (higher label, higher value): cut at the values' quantiles
    :func:`quantile_levels` — bins fine at the top, where the rules select; equal values share a bin."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.quantile(values, quantile_levels(values.size, min_top)) if values.size else np.zeros(0)
    return np.searchsorted(edges, values, side="right").astype(np.int64)


@dataclass(frozen=True)
class Block:
    """Where one part of a random set is drawn: ``count`` of the flat positions ``candidates``."""

    name: tuple[object, ...]  # (kind, layer[, expert][, stratum]): per_set's stream names it so
    position: tuple[int, ...]  # (index among the layout's blocks[, stratum]): batched's stream names it so
    candidates: np.ndarray  # sorted flat positions it may draw
    count: int


class TooFewCandidates(SparcomError):
    """A block with fewer candidates than the set has components there; ``block`` says which and how many, so a
    caller can say what the user can change (the message alone gives the drawer's own way out)."""

    def __init__(self, block: str) -> None:
        super().__init__(f"{block}; use coarser strata or exclude less")
        self.block = block


def blocks(layout: Layout, mask: np.ndarray, strata: np.ndarray | None = None,
           exclude: np.ndarray | None = None) -> list[Block]:
    """The blocks of a same-shape draw of ``mask`` [N] over ``layout``: per layer, or per (layer, expert) for a 2-D
    kind; with ``strata`` ([N] ints) also per stratum; ``exclude`` ([N] bool) removes candidates."""
    mask = np.asarray(mask, dtype=bool)
    found = []
    for index, (where, part) in enumerate(layout.groups("expert")):
        name = (layout.kind, where["layer"], *([where["expert"]] if "expert" in where else []))
        positions = np.arange(part.start, part.stop, dtype=np.int64)
        labels = [None] if strata is None else np.unique(np.asarray(strata)[part])
        for label in labels:
            inside = positions if label is None else positions[np.asarray(strata)[part] == label]
            extra = () if label is None else (int(label),)
            candidates = inside if exclude is None else inside[~np.asarray(exclude, dtype=bool)[inside]]
            count = int(mask[inside].sum())
            if count > len(candidates):
                raise TooFewCandidates(f"{layout.kind} {', '.join(f'{k} {v}' for k, v in where.items())}"
                                       f"{'' if label is None else f', stratum {label}'}: {count} components to draw "
                                       f"but only {len(candidates)} candidates")
            found.append(Block((*name, *extra), (index, *extra), candidates, count))
    return found


@dataclass(frozen=True)
class Widening:
    """Strata of one block merged because the highest of them lacked candidates for its selected count."""

    block: tuple[object, ...]  # (kind, layer[, expert])
    strata: tuple[int, ...]  # the merged labels, highest first; the merged stratum takes the lowest label
    selected: int  # selected components in the merged strata
    candidates: int  # candidates of the merged strata


def merge_short_strata(layout: Layout, mask: np.ndarray, strata: np.ndarray, exclude: np.ndarray | None = None
                       ) -> tuple[np.ndarray, list[Widening]]:
    """``strata`` [N] with, in every block, each stratum that has fewer candidates than selected components merged
    with the strata below it until it has enough; a short lowest group joins the group above it.

    Deterministic (strata are ordered labels, e.g. frequency bins, low to high): from the top of each block down,
    a stratum is kept alone when it can be drawn, otherwise it absorbs the next lower one. A matched control
    whose top bins hold mostly the selected components themselves (excluded) thus draws from the nearest lower
    bins of the same block — the "near misses". Every merge is returned, so the control can say how it widened.
    """
    mask = np.asarray(mask, dtype=bool)
    merged = np.asarray(strata).astype(np.int64).copy()
    allowed = np.ones(mask.size, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    widened: list[Widening] = []
    for where, part in layout.groups("expert"):
        labels = merged[part]
        chosen, free = mask[part], allowed[part]
        need = {int(v): int(chosen[labels == v].sum()) for v in np.unique(labels)}
        have = {int(v): int(free[labels == v].sum()) for v in need}
        groups: list[list[int]] = []
        current: list[int] = []
        for label in sorted(need, reverse=True):
            current.append(label)
            if sum(have[v] for v in current) >= sum(need[v] for v in current):
                groups.append(current)
                current = []
        if current:
            while groups and sum(have[v] for v in current) < sum(need[v] for v in current):
                current = groups.pop() + current
            groups.append(current)
        name = (layout.kind, where["layer"], *([where["expert"]] if "expert" in where else []))
        for group in groups:
            if len(group) > 1:
                labels[np.isin(labels, group)] = min(group)
                if any(need[v] for v in group):
                    widened.append(Widening(name, tuple(group), sum(need[v] for v in group),
                                            sum(have[v] for v in group)))
        merged[part] = labels
    return merged, widened


def block_counts(mask: np.ndarray, layout: Layout) -> np.ndarray:
    """[B] selected components of ``mask[N]`` in each block of a same-shape draw."""
    return np.array([b.count for b in blocks(layout, mask)], dtype=np.int64)


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


#: How a strategy draws: (blocks, sets, stream) → [sets, m] flat positions.
Strategy = Callable[[Sequence[Block], int, Sequence[object]], np.ndarray]


def per_set(found: Sequence[Block], replicates: int, stream: Sequence[object]) -> np.ndarray:
    """Set r from block generators seeded by (seed + r, label..., block name), ``stream`` = (seed, label...)."""
    seed, *label = stream
    rows = []
    for r in range(replicates):
        parts = [b.candidates[np.sort(np.random.default_rng(stream_seed(seed + r, *label, *b.name)).choice(
            len(b.candidates), size=b.count, replace=False))] for b in found if b.count]
        rows.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    return np.stack(rows) if rows else np.zeros((0, sum(b.count for b in found)), dtype=np.int64)


def batched(found: Sequence[Block], replicates: int, stream: Sequence[object]) -> np.ndarray:
    """All sets from one generator per block, seeded by (stream..., block position)."""
    parts = [b.candidates[uniform_subsets(np.random.default_rng(stream_seed(*stream, *b.position)), len(b.candidates),
                                          b.count, replicates)] for b in found if b.count]
    return np.concatenate(parts, axis=1) if parts else np.zeros((replicates, 0), dtype=np.int64)


def draw(layout: Layout, mask: np.ndarray, replicates: int, stream: Sequence[object], strategy: Strategy = batched,
         strata: np.ndarray | None = None, exclude: np.ndarray | None = None) -> np.ndarray:
    """[R, m] flat positions of ``replicates`` random sets with ``mask``'s per-block counts (each row sorted)."""
    return np.sort(strategy(blocks(layout, mask, strata, exclude), replicates, stream), axis=1)


def draw_like(mask: np.ndarray, layout: Layout, replicates: int, *label: object) -> np.ndarray:
    """Validity's baseline: [R, m] flat indices of ``replicates`` random sets of ``mask``'s shape, drawn together.

    ``label`` (e.g. seed, fold, category) names the stream; the same label gives the same sets.
    """
    return draw(layout, mask, replicates, label, batched)


def frequency_matched(mask: np.ndarray, layout: Layout, replicates: int, values: np.ndarray,
                      *label: object) -> np.ndarray:
    """Validity's matched baseline: [R, m] random sets with ``mask``'s count in every block and quantile bin of
    ``values`` (:func:`quantile_strata`, e.g. the pooled activation frequency the rules select on), drawn from
    every component of the (block, bin), the set's own members included.

    Members are *not* excluded here, unlike the causal ``frequency`` control's near misses: components outside a
    category's top-p_c set but in the same bin of pooled frequency are, by that very selection, the ones less
    active on the category, so a decoder reading near misses is pushed below chance (SmolLM2: 3% set-score
    accuracy against 17% chance) and any set would beat them. Drawing from the whole bin is the null "any set with
    this layer × frequency profile"."""
    return draw(layout, np.asarray(mask, dtype=bool), replicates, (*label, "frequency-matched"), batched,
                quantile_strata(values))


def random_like(selected: ComponentSet, seed: int, label: str | None = None, *,
                strata: dict[str, np.ndarray] | None = None,
                exclude: ComponentSet | None = None) -> ComponentSet:
    """A causal control: one random set with ``selected``'s per-layer (and per-expert) counts.

    ``label`` names the stream (e.g. ``"neurons/math"``); with the same ``seed`` and ``label`` the set is identical.
    ``strata`` (per kind, [N] labels over the kind's layout) and ``exclude`` refine the blocks (module docstring).
    """
    name = selected.label if label is None else label
    masks = {}
    for kind in selected.shapes:
        layout = selected.layout(kind)
        chosen = draw(layout, selected.flat(kind), 1, (seed, name), per_set, (strata or {}).get(kind),
                      exclude.flat(kind) if exclude is not None and kind in exclude.shapes else None)[0]
        flat = np.zeros(layout.size, dtype=bool)
        flat[chosen] = True
        masks[kind] = layout.split(flat)
    return ComponentSet.from_layer_masks(masks, f"random:{name}:{seed}")


def random_sets(selected: ComponentSet, seeds: int, base_seed: int = 0, label: str | None = None) -> list[ComponentSet]:
    """``seeds`` random sets for seeds ``base_seed, base_seed + 1, …``."""
    return [random_like(selected, base_seed + s, label) for s in range(seeds)]
