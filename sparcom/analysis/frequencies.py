"""Activation frequencies of one component kind, flattened over layers (the input of every analysis).

A *kind* is one family of counted components (DESIGN §3): ``neuron`` (dense MLP neurons), ``shared_neuron``
(neurons of shared experts), ``expert`` (routed experts, ISEs) and ``expert_neuron`` (neurons inside routed
experts). For one kind, every layer's array is flattened in layer order into a single vector of N components;
a :class:`Layout` remembers how to go back. Frequencies of all categories are stacked as ``p[K, N]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.kinds import bootstrap_key, check_kind, count_key, kinds_in, layers_of, tokens_key


@dataclass
class KindFrequencies:
    """Counts and frequencies of one kind for every category: ``counts``/``p`` are [K, N], ``tokens`` is [K]."""

    kind: str
    layout: Layout
    categories: tuple[str, ...]
    counts: np.ndarray
    tokens: np.ndarray
    p: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.tokens = np.asarray(self.tokens, dtype=np.int64)
        if self.counts.shape != (len(self.categories), self.layout.size):
            raise SparcomError(f"{self.kind}: counts have shape {self.counts.shape}, expected "
                               f"({len(self.categories)}, {self.layout.size})")
        self.p = frequencies_from_counts(self.counts, self.tokens)

    def per_layer(self, category: str) -> dict[int, np.ndarray]:
        """The frequencies of one category as ``{layer: array}`` in each layer's own shape."""
        if category not in self.categories:
            raise SparcomError(f"no category {category!r}; the run has {', '.join(self.categories)}")
        return self.layout.split(self.p[self.categories.index(category)])

    @property
    def empty_categories(self) -> list[str]:
        return [c for c, t in zip(self.categories, self.tokens, strict=True) if t == 0]


def frequencies_from_counts(counts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """p = count / tokens along the leading axes (float64); where tokens are 0, p is 0."""
    counts = np.asarray(counts, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    tokens = tokens.reshape(tokens.shape + (1,) * (counts.ndim - tokens.ndim))
    return np.where(tokens > 0, counts / np.where(tokens > 0, tokens, 1.0), 0.0)


def _layout(counts: Mapping[str, np.ndarray], kind: str, categories: Sequence[str]) -> Layout:
    layers = layers_of(counts, kind)
    if not layers:
        raise SparcomError(f"the run has no {kind} counts; kinds present: {', '.join(kinds_in(counts)) or 'none'}")
    shapes = []
    for layer in layers:
        found = {tuple(counts[count_key(kind, c, layer)].shape) for c in categories
                 if count_key(kind, c, layer) in counts}
        missing = [c for c in categories if count_key(kind, c, layer) not in counts]
        if missing:
            raise SparcomError(f"the run has no {kind} counts for categor{'y' if len(missing) == 1 else 'ies'} "
                               f"{', '.join(missing)} at layer {layer}; re-profile or merge the missing categories")
        if len(found) != 1:
            raise SparcomError(f"{kind} layer {layer} has different shapes across categories: {sorted(found)}")
        shapes.append(found.pop())
    return Layout(kind, tuple(layers), tuple(shapes))


def kind_frequencies(counts: Mapping[str, np.ndarray], categories: Sequence[str], kind: str) -> KindFrequencies:
    """Gather ``{kind}/{cat}/{layer}`` counts and ``tokens/{cat}`` into a :class:`KindFrequencies`."""
    check_kind(kind)
    categories = tuple(categories)
    if not categories:
        raise SparcomError("the run has no categories")
    missing = [c for c in categories if tokens_key(c) not in counts]
    if missing:
        raise SparcomError(f"the run has no token count for categor{'y' if len(missing) == 1 else 'ies'} "
                           f"{', '.join(missing)} ({tokens_key(missing[0])}); its counts file is incomplete, re-profile")
    layout = _layout(counts, kind, categories)
    stacked = np.stack([
        layout.flatten({j: np.asarray(counts[count_key(kind, c, j)]) for j in layout.layers}) for c in categories
    ]).astype(np.int64)
    tokens = np.array([int(counts[tokens_key(c)]) for c in categories], dtype=np.int64)
    return KindFrequencies(kind, layout, categories, stacked, tokens)


def replicate_count(counts: Mapping[str, np.ndarray], categories: Sequence[str], kind: str) -> int | None:
    """Number of bootstrap replicates stored for ``kind`` (None when the run has none for every category)."""
    sizes = set()
    layers = layers_of(counts, kind)
    for category in categories:
        replicate_tokens = bootstrap_key(tokens_key(category))
        layer_keys = [bootstrap_key(count_key(kind, category, j)) for j in layers]
        layer_keys = [k for k in layer_keys if k in counts]
        if replicate_tokens not in counts or not layer_keys:
            return None
        sizes.add(int(counts[replicate_tokens].shape[0]))
        sizes.update(int(counts[k].shape[0]) for k in layer_keys)
    if len(sizes) != 1:
        raise SparcomError(f"bootstrap counters of {kind} disagree on the number of replicates: {sorted(sizes)}")
    return sizes.pop()


def replicate_frequencies(counts: Mapping[str, np.ndarray], categories: Sequence[str], layout: Layout,
                          ) -> Iterator[np.ndarray]:
    """Yield p[K, N] of each bootstrap replicate (count_r / tokens_r), one replicate at a time."""
    categories = tuple(categories)
    replicates = replicate_count(counts, categories, layout.kind)
    if replicates is None:
        raise SparcomError(f"the run has no bootstrap counters for {layout.kind}; profile with --bootstrap R")
    for category in categories:
        for layer in layout.layers:
            if bootstrap_key(count_key(layout.kind, category, layer)) not in counts:
                raise SparcomError(f"bootstrap counters of {layout.kind} miss category {category} layer {layer}")
    tokens = np.stack([counts[bootstrap_key(tokens_key(c))] for c in categories]).astype(np.int64)  # [K, R]
    arrays = {(c, j): counts[bootstrap_key(count_key(layout.kind, c, j))] for c in categories for j in layout.layers}
    for r in range(replicates):
        stacked = np.stack([layout.flatten({j: arrays[c, j][r] for j in layout.layers}) for c in categories])
        yield frequencies_from_counts(stacked, tokens[:, r])
