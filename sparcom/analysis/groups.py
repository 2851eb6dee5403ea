"""Counts below the category: one count vector per group (an instruction, or the AI / human half of a category).

A profile made with ``--group-by instruction`` (or ``source``) keeps, for one component kind, a row of counts per
group g: ``counts[g, n]`` active tokens of component n and ``tokens[g]`` counted tokens. The category counts of
DESIGN §1 are exactly the sums of their groups (:func:`pool`), so every category-level analysis works on grouped
runs, and the groups add what the category totals cannot give: per-instruction frequencies for tests and held-out
decoding (:mod:`sparcom.analysis.validity`), and per-source halves for cross-source agreement.

Conventions used by every function here:

- category order is the *first-seen* order of the groups' categories (``GroupCounts.category_order``);
- a group's frequency is x_g = counts_g / tokens_g, and 0 when it has no counted tokens (as for categories);
- groups without counted tokens are left out of per-group statistics (:class:`GroupMoments`): their frequency is
  undefined, and counting it as 0 would invent instructions on which nothing fires. They still add (nothing) to
  pooled counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sparcom.analysis.frequencies import KindFrequencies
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.kinds import GROUP_TOKENS_KEY, group_key, kinds_in, layers_of
from sparcom.seeding import stream_seed

#: The two halves of every HexaInst category.
SOURCES: tuple[str, ...] = ("ai", "human")
#: Components per block of the column-chunked passes over [G, N] counts (bounds the float64 temporaries).
CHUNK = 8192


@dataclass
class GroupCounts:
    """Counts below the category for one component kind: one row per group (treat as immutable)."""

    kind: str
    layout: Layout  # how the N components map to layers
    labels: tuple[str, ...]  # [G] group label: an instruction id (group-by instruction) or "cls/ai" (source)
    categories: tuple[str, ...]  # [G] category of each group
    sources: tuple[str, ...]  # [G] "ai" / "human" (or "" when unknown)
    counts: np.ndarray  # [G, N] int, active-token counts of each group
    tokens: np.ndarray  # [G] int, counted tokens of each group

    def __post_init__(self) -> None:
        self.labels, self.categories, self.sources = tuple(self.labels), tuple(self.categories), tuple(self.sources)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.tokens = np.asarray(self.tokens, dtype=np.int64).reshape(-1)
        g = len(self.labels)
        if len(self.categories) != g or len(self.sources) != g:
            raise SparcomError(f"{self.kind} groups: {g} labels but {len(self.categories)} categories and "
                               f"{len(self.sources)} sources; every group needs one of each")
        if self.counts.shape != (g, self.layout.size) or self.tokens.shape != (g,):
            raise SparcomError(f"{self.kind} groups: counts {self.counts.shape} and tokens {self.tokens.shape} do not "
                               f"match {g} groups of {self.layout.size} components")
        if len(set(self.labels)) != g:
            raise SparcomError(f"{self.kind} groups: labels are not unique; each instruction or half needs its own")

    @property
    def size(self) -> int:
        """Number of groups G."""
        return len(self.labels)

    @cached_property
    def category_order(self) -> tuple[str, ...]:
        """The distinct categories in first-seen order."""
        return tuple(dict.fromkeys(self.categories))

    @cached_property
    def category_index(self) -> np.ndarray:
        """[G] position of each group's category in :attr:`category_order`."""
        lookup = {c: i for i, c in enumerate(self.category_order)}
        return np.array([lookup[c] for c in self.categories], dtype=np.int64)

    def frequencies(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Per-group frequencies x = counts / tokens [G, N] (0 where tokens = 0), of all or the given rows."""
        rows = slice(None) if rows is None else rows
        tokens = self.tokens[rows]
        values = self.counts[rows].astype(np.float64)
        values *= np.where(tokens > 0, 1.0 / np.where(tokens > 0, tokens, 1), 0.0)[:, None]
        return values

    def subset(self, select: np.ndarray) -> GroupCounts:
        """The chosen groups (boolean mask over groups or indices), in the order given."""
        index = _indices(select, self.size)
        return GroupCounts(self.kind, self.layout, tuple(self.labels[i] for i in index),
                           tuple(self.categories[i] for i in index), tuple(self.sources[i] for i in index),
                           self.counts[index], self.tokens[index])

    def ordered(self, categories: Sequence[str]) -> GroupCounts:
        """The same groups, stably sorted so that :attr:`category_order` is ``categories`` (e.g. a run's order).

        Category-level arrays built elsewhere (a run's ``p[K, N]``) and these groups' pools and moments then have
        their rows in the same order, which the ``test`` rule relies on.
        """
        categories = tuple(categories)
        if sorted(categories) != sorted(self.category_order):
            raise SparcomError(f"the groups have categories {', '.join(self.category_order)}, not "
                               f"{', '.join(categories)}")
        rank = {c: i for i, c in enumerate(categories)}
        return self.subset(np.array(sorted(range(self.size), key=lambda i: rank[self.categories[i]]), dtype=np.int64))

    @cached_property
    def moments(self) -> GroupMoments:
        """Per-category sums of the groups' frequencies and of their squares (see :class:`GroupMoments`)."""
        return partition_sums(self, np.zeros(self.size, dtype=np.int64), 1).moments[0]


@dataclass
class GroupMoments:
    """Sufficient statistics of the per-group frequencies, per category: what tests and decoders need.

    Over the groups g of category c with tokens_g > 0: n[c] = their number, total[c] = Σ x_g, squares[c] = Σ x_g²
    (x_g = counts_g / tokens_g). Moments of disjoint sets of groups add, so training folds are sums of folds.
    """

    categories: tuple[str, ...]
    n: np.ndarray  # [K] int
    total: np.ndarray  # [K, N]
    squares: np.ndarray  # [K, N]

    def __add__(self, other: GroupMoments) -> GroupMoments:
        if other.categories != self.categories:
            raise SparcomError("cannot add group moments of different categories")
        return GroupMoments(self.categories, self.n + other.n, self.total + other.total, self.squares + other.squares)

    def mean(self) -> np.ndarray:
        """[K, N] mean per-group frequency of each category (NaN where a category has no group)."""
        n = self.n.astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, self.total / np.where(n > 0, n, 1.0), np.nan)

    def pooled(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(n, mean [N], sample standard deviation [N], ddof = 1) over all groups of all categories."""
        n = int(self.n.sum())
        if n < 2:
            raise SparcomError(f"{n} group(s) with counted tokens; per-group statistics need at least 2")
        total, squares = self.total.sum(axis=0), self.squares.sum(axis=0)
        mean = total / n
        variance = np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
        return n, mean, np.sqrt(variance)


def _indices(select: np.ndarray | Sequence[int] | None, size: int) -> np.ndarray:
    if select is None:
        return np.arange(size, dtype=np.int64)
    select = np.asarray(select)
    if select.dtype == bool:
        if select.shape != (size,):
            raise SparcomError(f"group mask has shape {select.shape}, expected ({size},)")
        return np.flatnonzero(select)
    index = select.astype(np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() >= size):
        raise SparcomError(f"group index out of range 0..{size - 1}")
    return index


def pool(groups: GroupCounts, select: np.ndarray | Sequence[int] | None = None,
         categories: Sequence[str] | None = None) -> KindFrequencies:
    """Category-level counts of the chosen groups: exact integer sums of their counts and tokens.

    ``select`` is a boolean mask over groups or group indices (an index given twice counts twice, as in a
    bootstrap resample); all groups by default. The categories are ``categories`` if given, else all of the
    groups' categories in first-seen order — also those with no chosen group, which get 0 tokens (p = 0), so
    pools of different subsets have the same rows.
    """
    index = _indices(select, groups.size)
    order = tuple(categories) if categories is not None else groups.category_order
    lookup = {c: i for i, c in enumerate(order)}
    unknown = sorted({groups.categories[i] for i in index} - set(order))
    if unknown:
        raise SparcomError(f"groups of categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} are not "
                           f"among the requested categories {', '.join(order)}")
    counts = np.zeros((len(order), groups.layout.size), dtype=np.int64)
    tokens = np.zeros(len(order), dtype=np.int64)
    target = np.array([lookup[groups.categories[i]] for i in index], dtype=np.int64)
    for k in range(len(order)):
        rows = index[target == k]
        if rows.size:
            counts[k] = groups.counts[rows].sum(axis=0)
            tokens[k] = groups.tokens[rows].sum()
    return KindFrequencies(groups.kind, groups.layout, order, counts, tokens)


def by_source(groups: GroupCounts, sources: Sequence[str] = SOURCES) -> dict[str, KindFrequencies]:
    """Category counts pooled separately over each source's groups (all categories in every pool)."""
    present = set(groups.sources)
    missing = [s for s in sources if s not in present]
    if missing:
        raise SparcomError(f"the {groups.kind} groups have no {'/'.join(missing)}-written instructions (sources "
                           f"present: {', '.join(sorted(present - {''})) or 'none'}); cross-source agreement "
                           "needs a run profiled with --group-by source or --group-by instruction on HexaInst")
    source = np.asarray(groups.sources)
    return {s: pool(groups, source == s) for s in sources}


def stratified_folds(groups: GroupCounts, k: int = 5, seed: int = 0) -> np.ndarray:
    """Assign each group to one of ``k`` folds, stratified by category and source; returns fold ids [G].

    Strata are the (category, source) pairs, taken in sorted order. Within a stratum the groups are sorted by
    label and shuffled with a generator seeded from (seed, category, source) (:func:`~sparcom.seeding.stream_seed`);
    the i-th shuffled group goes to fold (start + i) mod k, where start is the number of groups in the earlier
    strata. So every stratum is spread over the folds as evenly as possible (counts differ by at most one), fold
    sizes differ by at most one, and the assignment depends on the seed and the labels only, not on row order.
    """
    if not 2 <= k <= groups.size:
        raise SparcomError(f"folds must be between 2 and the number of groups ({groups.size}), got {k}")
    folds = np.empty(groups.size, dtype=np.int64)
    start = 0
    for category, source in sorted(set(zip(groups.categories, groups.sources, strict=True))):
        members = [i for i in range(groups.size) if groups.categories[i] == category and groups.sources[i] == source]
        members.sort(key=lambda i: groups.labels[i])
        order = np.random.default_rng(stream_seed(seed, "folds", category, source)).permutation(len(members))
        for rank, position in enumerate(order):
            folds[members[position]] = (start + rank) % k
        start += len(members)
    return folds


def resample_weights(groups: GroupCounts, replicate: int, seed: int = 0) -> np.ndarray:
    """[G] multiplicities of one bootstrap resample of the groups within each (category, source) stratum.

    In a stratum of s groups (sorted by label), s draws uniformly with replacement from a generator seeded from
    (seed, "bootstrap", replicate, category, source); a group drawn w times gets weight w. So the resample keeps
    every stratum's size and depends on the seed and the labels only, not on row order.
    """
    strata: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(groups.categories, groups.sources, strict=True)):
        strata.setdefault(key, []).append(i)
    weights = np.zeros(groups.size, dtype=np.int64)
    for key in sorted(strata):
        members = np.array(sorted(strata[key], key=lambda i: groups.labels[i]), dtype=np.int64)
        rng = np.random.default_rng(stream_seed(seed, "bootstrap", replicate, *key))
        np.add.at(weights, members[rng.integers(0, members.size, members.size)], 1)
    return weights


@dataclass
class PartitionSums:
    """Counts pooled per (part, category) and the per-group moments per part (one pass over the counts)."""

    categories: tuple[str, ...]
    counts: np.ndarray  # [P, K, N] int64, exact sums
    tokens: np.ndarray  # [P, K] int64
    moments: list[GroupMoments] = field(default_factory=list)  # [P]

    def frequencies(self, kind: str, layout: Layout, parts: Sequence[int]) -> KindFrequencies:
        """The category frequencies of the union of ``parts``."""
        parts = list(parts)
        return KindFrequencies(kind, layout, self.categories, self.counts[parts].sum(axis=0),
                               self.tokens[parts].sum(axis=0))

    def moments_of(self, parts: Sequence[int]) -> GroupMoments:
        parts = list(parts)
        result = self.moments[parts[0]]
        for part in parts[1:]:
            result = result + self.moments[part]
        return result


def partition_sums(groups: GroupCounts, part: np.ndarray, parts: int, weights: np.ndarray | None = None,
                   chunk: int = CHUNK) -> PartitionSums:
    """Pooled counts and :class:`GroupMoments` of each part (``part[g]`` in 0..parts-1, −1 leaves g out).

    ``weights`` are integer multiplicities of the groups (a bootstrap resample; 1 by default): a group of weight w
    counts as w copies. Sums run as float64 matrix products over column blocks: exact for the counts, as integers
    below 2**53 are represented exactly and every partial sum is such an integer.
    """
    part = np.asarray(part, dtype=np.int64)
    if part.shape != (groups.size,) or part.max(initial=-1) >= parts:
        raise SparcomError(f"part ids must be [G] = ({groups.size},) values below {parts}")
    k = len(groups.category_order)
    n_components = groups.layout.size
    rows = np.flatnonzero(part >= 0)
    cell = part[rows] * k + groups.category_index[rows]  # (part, category) of each kept group
    onehot = np.zeros((parts * k, rows.size))
    onehot[cell, np.arange(rows.size)] = 1.0 if weights is None else np.asarray(weights, dtype=np.float64)[rows]
    tokens = groups.tokens[rows]
    counted = tokens > 0
    weights = onehot * counted[None, :]  # moments leave out groups without counted tokens
    inverse = np.where(counted, 1.0 / np.where(counted, tokens, 1), 0.0)
    pooled = np.zeros((parts * k, n_components), dtype=np.int64)
    total = np.zeros((parts * k, n_components))
    squares = np.zeros((parts * k, n_components))
    for start in range(0, n_components, chunk):
        block = slice(start, min(start + chunk, n_components))
        values = groups.counts[rows, block].astype(np.float64)
        pooled[:, block] = np.rint(onehot @ values).astype(np.int64)
        values *= inverse[:, None]
        total[:, block] = weights @ values
        values *= values
        squares[:, block] = weights @ values
    pooled_tokens = np.rint(onehot @ tokens.astype(np.float64)).astype(np.int64).reshape(parts, k)
    n = np.rint(weights.sum(axis=1)).astype(np.int64).reshape(parts, k)
    moments = [GroupMoments(groups.category_order, n[p], total.reshape(parts, k, -1)[p],
                            squares.reshape(parts, k, -1)[p]) for p in range(parts)]
    return PartitionSums(groups.category_order, pooled.reshape(parts, k, n_components), pooled_tokens, moments)


def load_groups(counts: Mapping[str, np.ndarray], groups: Mapping[str, Sequence[str]] | None, kind: str,
                categories: Sequence[str] | None = None) -> GroupCounts | None:
    """The groups of one kind of a run (its counts and the manifest's ``groups``); None when it keeps none.

    The layout is the run's category-level layout of ``kind``; with ``categories`` the groups are ordered like
    them (:meth:`GroupCounts.ordered`).
    """
    if not groups:
        return None
    layers = layers_of(counts, kind)
    if not layers:
        raise SparcomError(f"the run has no {kind} counts; kinds present: {', '.join(kinds_in(counts)) or 'none'}")
    missing = [j for j in layers if group_key(kind, j) not in counts]
    if GROUP_TOKENS_KEY not in counts or missing:
        raise SparcomError(f"the run lists groups but has no group counts of {kind}"
                           f"{f' at layer {missing[0]}' if missing else ''}; its counts file is incomplete, re-profile")
    arrays = {j: counts[group_key(kind, j)] for j in layers}
    size = len(groups["labels"])
    layout = Layout(kind, tuple(layers), tuple(tuple(a.shape[1:]) for a in arrays.values()))
    stacked = np.concatenate([arrays[j].reshape(size, -1) for j in layers], axis=1)
    result = GroupCounts(kind, layout, tuple(groups["labels"]), tuple(groups["categories"]),
                         tuple(groups["sources"]), stacked, counts[GROUP_TOKENS_KEY])
    return result.ordered(categories) if categories is not None else result
