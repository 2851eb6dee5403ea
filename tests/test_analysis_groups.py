"""Groups below the category: pooled counts are exact sums, per-group moments and folds against plain loops."""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np
import pytest
from validity_data import synthetic_groups

from sparcom.analysis.groups import GroupCounts, by_source, partition_sums, pool, stratified_folds
from sparcom.components import Layout
from sparcom.errors import SparcomError

LAYOUT = Layout("neuron", (0, 1), ((3,), (2,)))


def small_groups() -> GroupCounts:
    counts = np.array([[1, 0, 2, 3, 0],
                       [4, 1, 0, 0, 5],
                       [0, 0, 0, 0, 0],  # a group without counted tokens
                       [2, 2, 2, 2, 2],
                       [7, 0, 1, 0, 3]])
    return GroupCounts("neuron", LAYOUT, ("i1", "i2", "i3", "i4", "i5"), ("b", "a", "b", "a", "c"),
                       ("ai", "human", "ai", "ai", "human"), counts, np.array([10, 8, 0, 4, 9]))


def test_frequencies_divide_by_tokens_and_are_zero_without_tokens():
    g = small_groups()
    x = g.frequencies()
    for i in range(g.size):
        for n in range(LAYOUT.size):
            expected = g.counts[i, n] / g.tokens[i] if g.tokens[i] else 0.0
            assert x[i, n] == pytest.approx(expected, abs=1e-15)
    assert np.array_equal(g.frequencies(np.array([3, 0])), x[[3, 0]])


def test_category_order_is_first_seen():
    g = small_groups()
    assert g.category_order == ("b", "a", "c")
    assert g.category_index.tolist() == [0, 1, 0, 1, 2]


def test_ordered_sorts_groups_to_a_given_category_order():
    g = small_groups()
    again = g.ordered(("c", "a", "b"))
    assert again.category_order == ("c", "a", "b")
    assert again.labels == ("i5", "i2", "i4", "i1", "i3")
    assert np.array_equal(pool(again).counts, pool(g, categories=("c", "a", "b")).counts)
    with pytest.raises(SparcomError, match="not a, b"):
        g.ordered(("a", "b"))


def test_pool_is_the_exact_sum_of_the_chosen_groups():
    g = small_groups()
    freqs = pool(g)
    assert freqs.categories == ("b", "a", "c")
    for k, category in enumerate(freqs.categories):
        rows = [i for i in range(g.size) if g.categories[i] == category]
        assert freqs.counts[k].tolist() == [sum(int(g.counts[i, n]) for i in rows) for n in range(LAYOUT.size)]
        assert freqs.tokens[k] == sum(int(g.tokens[i]) for i in rows)
    # a mask keeps all categories (c gets no tokens); indices given twice count twice
    masked = pool(g, np.array([True, True, False, False, False]))
    assert masked.categories == ("b", "a", "c") and masked.tokens.tolist() == [10, 8, 0]
    twice = pool(g, [0, 0, 4])
    assert twice.counts[0].tolist() == (2 * g.counts[0]).tolist() and twice.tokens.tolist() == [20, 0, 9]
    assert pool(g, categories=("c", "a", "b")).counts[0].tolist() == g.counts[4].tolist()
    with pytest.raises(SparcomError, match="not among the requested categories"):
        pool(g, categories=("a", "b"))


def test_pool_of_synthetic_groups_equals_the_sum_per_category():
    g, _ = synthetic_groups(seed=3)
    freqs = pool(g)
    for k, category in enumerate(freqs.categories):
        rows = np.array([i for i in range(g.size) if g.categories[i] == category])
        assert np.array_equal(freqs.counts[k], g.counts[rows].sum(axis=0))
        assert freqs.tokens[k] == g.tokens[rows].sum()


def test_by_source_pools_each_half():
    g = small_groups()
    halves = by_source(g)
    assert halves["ai"].counts.tolist() == [[1, 0, 2, 3, 0], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0]]
    assert halves["human"].counts.tolist() == [[0, 0, 0, 0, 0], [4, 1, 0, 0, 5], [7, 0, 1, 0, 3]]
    assert (halves["ai"].counts + halves["human"].counts).tolist() == pool(g).counts.tolist()
    unknown = GroupCounts("neuron", LAYOUT, ("x",), ("a",), ("",), np.zeros((1, 5)), np.array([1]))
    with pytest.raises(SparcomError, match="no ai/human-written instructions"):
        by_source(unknown)


def test_group_counts_validate_their_shapes():
    with pytest.raises(SparcomError, match="2 labels but 1 categories"):
        GroupCounts("neuron", LAYOUT, ("x", "y"), ("a",), ("ai", "ai"), np.zeros((2, 5)), np.ones(2))
    with pytest.raises(SparcomError, match="do not match 1 groups of 5 components"):
        GroupCounts("neuron", LAYOUT, ("x",), ("a",), ("ai",), np.zeros((1, 4)), np.ones(1))
    with pytest.raises(SparcomError, match="not unique"):
        GroupCounts("neuron", LAYOUT, ("x", "x"), ("a", "a"), ("ai", "ai"), np.zeros((2, 5)), np.ones(2))


def test_partition_sums_match_loops_and_leave_out_groups_without_tokens():
    g = small_groups()
    part = np.array([0, 1, 1, 0, -1])
    weights = np.array([1, 2, 5, 3, 1])
    sums = partition_sums(g, part, 2, weights, chunk=2)  # chunk < N exercises the column blocks
    x = g.frequencies()
    for p in range(2):
        for k, category in enumerate(g.category_order):
            rows = [i for i in range(g.size) if part[i] == p and g.categories[i] == category]
            counted = [i for i in rows if g.tokens[i] > 0]
            assert sums.counts[p, k].tolist() == [sum(weights[i] * int(g.counts[i, n]) for i in rows)
                                                  for n in range(5)]
            assert sums.tokens[p, k] == sum(weights[i] * int(g.tokens[i]) for i in rows)
            m = sums.moments[p]
            assert m.n[k] == sum(weights[i] for i in counted)
            for n in range(5):
                assert m.total[k, n] == pytest.approx(sum(weights[i] * x[i, n] for i in counted))
                assert m.squares[k, n] == pytest.approx(sum(weights[i] * x[i, n] ** 2 for i in counted))
    resampled = np.repeat(np.arange(4), weights[:4])  # the same multiplicities as explicit repeats
    assert sums.frequencies("neuron", LAYOUT, [0, 1]).counts.tolist() == pool(g, resampled).counts.tolist()


def test_moments_mean_and_pooled_std_match_statistics_module():
    g, _ = synthetic_groups(seed=4, layers=2, width=10, specific=2)
    m = g.moments
    x = g.frequencies()
    n, mean, std = m.pooled()
    assert n == g.size
    for column in (0, 7, 19):
        values = [float(x[i, column]) for i in range(g.size)]
        assert mean[column] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert std[column] == pytest.approx(statistics.stdev(values), rel=1e-9)
        for k, category in enumerate(g.category_order):
            own = [float(x[i, column]) for i in range(g.size) if g.categories[i] == category]
            assert m.mean()[k, column] == pytest.approx(statistics.fmean(own), abs=1e-12)


def test_stratified_folds_balance_every_stratum_and_ignore_row_order():
    g, _ = synthetic_groups(categories=("a", "b", "c"), per_source=7, layers=1, width=8, specific=2, seed=1)
    folds = stratified_folds(g, 5, seed=11)
    assert sorted(Counter(folds.tolist()).values()) == [8, 8, 8, 9, 9]  # 42 groups
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for category in ("a", "b", "c"):
        for source in ("ai", "human"):
            per_fold = np.bincount(folds[[i for i in range(g.size) if g.categories[i] == category
                                          and g.sources[i] == source]], minlength=5)
            assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(folds, stratified_folds(g, 5, seed=11))
    assert not np.array_equal(folds, stratified_folds(g, 5, seed=12))
    order = np.random.default_rng(0).permutation(g.size)
    shuffled = g.subset(order)
    again = stratified_folds(shuffled, 5, seed=11)
    assert {shuffled.labels[i]: int(again[i]) for i in range(g.size)} == {g.labels[i]: int(folds[i])
                                                                         for i in range(g.size)}
    with pytest.raises(SparcomError, match="folds must be between 2"):
        stratified_folds(g, 1)
