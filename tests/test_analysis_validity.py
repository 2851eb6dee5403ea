"""Validity measures against direct implementations, and synthetic cases with and without category signal."""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest
from validity_data import synthetic_groups

from sparcom.analysis import decoding as dec
from sparcom.analysis.groups import GroupCounts, pool
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.validity import (
    bootstrap_stability,
    jaccard_matrix,
    mean_pairwise_jaccard,
    validity,
    validity_sweep,
)
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.random_sets import block_counts, draw_like, frequency_matched, uniform_subsets
from sparcom.seeding import stream_seed
from sparcom.stats import empirical_p, wilson_interval


def plain_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else math.nan


def members(row: np.ndarray) -> set:
    return {int(i) for i in np.flatnonzero(row)}


# -- small statistics ---------------------------------------------------------------------------------------------

def test_jaccard_matrix_and_pairwise_mean_match_set_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 30)) < 0.3, rng.random((4, 30)) < 0.3
    b[3] = False
    a[2] = False
    matrix = jaccard_matrix(a, b)
    for i in range(3):
        for j in range(4):
            expected = plain_jaccard(members(a[i]), members(b[j]))
            assert (math.isnan(matrix[i, j]) and math.isnan(expected)) or matrix[i, j] == pytest.approx(expected)
    rows = np.vstack([a, b])
    pairs = [plain_jaccard(members(rows[i]), members(rows[j])) for i, j in combinations(range(len(rows)), 2)]
    defined = [v for v in pairs if not math.isnan(v)]
    assert mean_pairwise_jaccard(rows) == pytest.approx(sum(defined) / len(defined))
    assert math.isnan(mean_pairwise_jaccard(np.zeros((3, 5), dtype=bool)))


def test_wilson_interval_by_formula_and_known_value():
    low, high = wilson_interval(8, 10, 0.95)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # the textbook 8/10 example
    z = 1.959963984540054
    for correct, total in ((0, 20), (13, 40), (40, 40)):
        p = correct / total
        centre = (p + z * z / (2 * total)) / (1 + z * z / total)
        half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
        assert wilson_interval(correct, total) == pytest.approx((max(0, centre - half), min(1, centre + half)))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_empirical_p_counts_ties_as_at_least_as_good():
    assert empirical_p(0.5, np.array([0.1, 0.5, 0.7, 0.2])) == pytest.approx((1 + 2) / 5)
    assert empirical_p(0.9, np.array([0.1] * 99)) == pytest.approx(1 / 100)


# -- random sets ------------------------------------------------------------------------------------------------

def test_random_sets_keep_the_per_layer_and_per_expert_shape():
    layout = Layout("expert_neuron", (0, 2), ((3, 5), (3, 5)))
    mask = np.zeros(30, dtype=bool)
    mask[[0, 1, 7, 14, 15, 16, 17, 18]] = True  # layer 0: expert 0 (2), expert 1 (1), expert 2 (1); layer 2: all of expert 0
    sets = draw_like(mask, layout, 50, 3, "x")
    assert sets.shape == (50, 8)
    for row in sets:
        chosen = np.zeros(30, dtype=bool)
        chosen[row] = True
        assert chosen.sum() == 8  # no repeats
        assert np.array_equal(block_counts(chosen, layout), block_counts(mask, layout))
    assert np.array_equal(sets, draw_like(mask, layout, 50, 3, "x"))
    assert not np.array_equal(sets, draw_like(mask, layout, 50, 3, "y"))
    assert draw_like(np.zeros(30, dtype=bool), layout, 4, 0).shape == (4, 0)


@pytest.mark.parametrize(("size", "count"), [(10, 3), (10, 8), (7, 7), (6, 1)])
def test_uniform_subsets_include_every_element_and_pair_at_the_right_rate(size, count):
    replicates = 20_000
    rows = uniform_subsets(np.random.default_rng(1), size, count, replicates)
    assert rows.shape == (replicates, count)
    assert all(len(set(r)) == count for r in rows[:200].tolist())
    inclusion = np.zeros((size, size))
    for r in rows:
        indicator = np.zeros(size)
        indicator[r] = 1
        inclusion += np.outer(indicator, indicator)
    single = count / size
    assert np.all(np.abs(np.diag(inclusion) / replicates - single) <= 5 * math.sqrt(single * (1 - single) / replicates))
    if count > 1:
        pair = count * (count - 1) / (size * (size - 1))
        off = inclusion[~np.eye(size, dtype=bool)] / replicates
        assert np.all(np.abs(off - pair) <= 5 * math.sqrt(pair * (1 - pair) / replicates) + 1e-12)


# -- decoders ---------------------------------------------------------------------------------------------------

def test_sums_and_decoders_match_loops():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((7, 40))
    centroids = rng.standard_normal((3, 40))
    sets = [np.sort(np.stack([rng.choice(40, m, replace=False) for _ in range(6)]), axis=1) for m in (5, 1, 12)]
    sums = dec.sums_over_sets(z, sets[0])
    for g in range(7):
        for r in range(6):
            assert sums[g, r] == pytest.approx(sum(z[g, n] for n in sets[0][r]))
    predicted = dec.set_score_predict(np.asfortranarray(z), sets)
    for g in range(7):
        for r in range(6):
            scores = [sum(z[g, n] for n in s[r]) / len(s[r]) for s in sets]
            assert predicted[g, r] == scores.index(max(scores))
    union = sets[2]
    nearest = dec.centroid_predict(z, centroids, union)
    for g in range(7):
        for r in range(6):
            distances = [sum((z[g, n] - centroids[c, n]) ** 2 for n in union[r]) for c in range(3)]
            assert nearest[g, r] == distances.index(min(distances))
    everything = np.arange(40)[None, :]
    assert np.array_equal(dec.centroid_predict_all(z, centroids), dec.centroid_predict(z, centroids, everything)[:, 0])


def test_decoders_with_empty_sets_are_undecided_or_skip_the_category():
    z = np.array([[1.0, -1.0, 0.5]])
    empty = np.zeros((2, 0), dtype=np.int64)
    assert dec.set_score_predict(z, [empty, empty]).tolist() == [[-1, -1]]
    assert dec.set_score_predict(z, [empty, np.array([[1], [2]])]).tolist() == [[1, 1]]
    assert dec.centroid_predict(z, np.zeros((2, 3)), empty).tolist() == [[-1, -1]]
    assert dec.confusion(np.array([0, 1, 1]), np.array([0, -1, 0]), 2).tolist() == [[1, 0], [1, 0]]


def test_standardise_is_zero_where_the_spread_is_zero():
    z = dec.standardise(np.array([[1.0, 2.0, 3.0]]), np.array([0.0, 2.0, 1.0]), np.array([2.0, 0.0, 4.0]), "F")
    assert z.tolist() == [[0.5, 0.0, 0.5]] and z.flags.f_contiguous


# -- held-out decoding, cross-source agreement, stability against a direct implementation -----------------------

def direct_held_out(g: GroupCounts, rule: SelectionRule, folds: np.ndarray, replicates: int, seed: int):
    """Per-fold selection, standardisation and both decoders, written out with loops over groups and components."""
    cats = g.category_order
    k, n = len(cats), g.layout.size
    x = [[g.counts[i, j] / g.tokens[i] if g.tokens[i] else 0.0 for j in range(n)] for i in range(g.size)]
    correct = {"set_score": [0] * (1 + 2 * replicates), "centroid": [0] * (1 + 2 * replicates), "all": 0}
    confusion = {"set_score": np.zeros((k, k), dtype=int), "centroid": np.zeros((k, k), dtype=int)}
    masks = []
    for f in range(int(folds.max()) + 1):
        train = [i for i in range(g.size) if folds[i] != f]
        pooled = np.zeros((k, n), dtype=np.int64)
        tokens = np.zeros(k, dtype=np.int64)
        for i in train:
            pooled[cats.index(g.categories[i])] += g.counts[i]
            tokens[cats.index(g.categories[i])] += g.tokens[i]
        p = pooled / tokens[:, None]
        mask = rule.apply(p, g.layout)
        masks.append(mask)
        counted = [i for i in train if g.tokens[i] > 0]
        mean = [sum(x[i][j] for i in counted) / len(counted) for j in range(n)]
        std = [math.sqrt(sum((x[i][j] - mean[j]) ** 2 for i in counted) / (len(counted) - 1)) for j in range(n)]

        def zed(i, j, mean=mean, std=std):
            return (x[i][j] - mean[j]) / std[j] if std[j] > 0 else 0.0

        centroids = [[sum(zed(i, j) for i in counted if g.categories[i] == c)
                      / sum(1 for i in counted if g.categories[i] == c) for j in range(n)] for c in cats]
        label = (seed, "validity", g.kind, f)
        frequency = pooled.sum(axis=0) / tokens.sum()  # the training folds' pooled frequency
        category_sets = [[list(np.flatnonzero(mask[c])), *draw_like(mask[c], g.layout, replicates, *label, cats[c]),
                          *frequency_matched(mask[c], g.layout, replicates, frequency, *label, cats[c])] for c in range(k)]
        union = mask.any(axis=0)
        union_sets = [list(np.flatnonzero(union)), *draw_like(union, g.layout, replicates, *label, "union"),
                      *frequency_matched(union, g.layout, replicates, frequency, *label, "union")]
        for i in (i for i in range(g.size) if folds[i] == f and g.tokens[i] > 0):
            truth = cats.index(g.categories[i])
            for r in range(1 + 2 * replicates):
                scores = [sum(zed(i, j) for j in category_sets[c][r]) / len(category_sets[c][r])
                          if len(category_sets[c][r]) else -math.inf for c in range(k)]
                guess = scores.index(max(scores))
                correct["set_score"][r] += guess == truth
                distances = [sum((zed(i, j) - centroids[c][j]) ** 2 for j in union_sets[r]) for c in range(k)]
                nearest = distances.index(min(distances))
                correct["centroid"][r] += nearest == truth
                if r == 0:
                    confusion["set_score"][truth, guess] += 1
                    confusion["centroid"][truth, nearest] += 1
            distances = [sum((zed(i, j) - centroids[c][j]) ** 2 for j in range(n)) for c in range(k)]
            correct["all"] += distances.index(min(distances)) == truth
    return correct, confusion, masks


@pytest.mark.parametrize("rule", [SelectionRule("percentile", 0.1), SelectionRule("contrast", 0.1)])
def test_held_out_decoding_matches_direct_implementation(rule):
    g, _ = synthetic_groups(categories=("a", "b", "c"), layers=2, width=15, specific=2, per_source=5, boost=0.8,
                            seed=11)
    result = validity(g, rule, folds=4, seed=5, random_sets=6)
    correct, confusion, masks = direct_held_out(g, rule, result.decoding.assignment, 6, 5)
    decoders = result.decoding.decoders
    for name in ("set_score", "centroid"):
        assert decoders[name].correct == correct[name][0]
        assert decoders[name].random_correct.tolist() == correct[name][1:7]
        assert decoders[name].matched_correct.tolist() == correct[name][7:]
        assert decoders[name].matched_p_value == pytest.approx((1 + sum(v >= correct[name][0]
                                                                        for v in correct[name][7:])) / 7)
        assert np.array_equal(decoders[name].confusion, confusion[name])
        assert decoders[name].evaluated == g.size
    assert result.decoding.all_components.correct == correct["all"]
    assert np.array_equal(result.decoding.fold_masks, np.stack(masks))
    for c in range(3):
        pairs = [plain_jaccard(members(a[c]), members(b[c])) for a, b in combinations(masks, 2)]
        defined = [v for v in pairs if not math.isnan(v)]
        assert result.stability.jaccard[c] == pytest.approx(sum(defined) / len(defined))


def test_cross_source_matches_selection_on_each_half():
    g, _ = synthetic_groups(seed=12)
    rule = SelectionRule("contrast", 0.05)
    result = validity(g, rule, random_sets=2)
    halves = {}
    for source in ("ai", "human"):
        rows = [i for i in range(g.size) if g.sources[i] == source]
        halves[source] = rule.apply(pool(g, rows).p, g.layout)
    cross = result.cross_source
    for a in range(4):
        for h in range(4):
            assert cross.jaccard[a, h] == pytest.approx(plain_jaccard(members(halves["ai"][a]),
                                                                      members(halves["human"][h])))
    assert cross.within_mean == pytest.approx(np.mean([cross.jaccard[c, c] for c in range(4)]))
    assert cross.across_mean == pytest.approx(np.mean([cross.jaccard[a, h] for a in range(4) for h in range(4) if a != h]))


def test_bootstrap_stability_resamples_within_category_and_source():
    g, _ = synthetic_groups(categories=("a", "b", "c"), layers=2, width=15, specific=2, per_source=5, seed=13)
    rule = SelectionRule("percentile", 0.1)
    result = bootstrap_stability(g, rule, 4, seed=9)
    for r in range(4):
        resample = []
        for key in sorted(set(zip(g.categories, g.sources, strict=True))):
            stratum = sorted((i for i in range(g.size) if (g.categories[i], g.sources[i]) == key),
                             key=lambda i: g.labels[i])
            draws = np.random.default_rng(stream_seed(9, "bootstrap", r, *key)).integers(0, len(stratum), len(stratum))
            resample += [stratum[d] for d in draws]
        assert np.array_equal(result.masks[r], rule.apply(pool(g, resample).p, g.layout))
    assert result.jaccard[0] == pytest.approx(mean_pairwise_jaccard(result.masks[:, 0]))
    with pytest.raises(SparcomError, match="at least 2 replicates"):
        bootstrap_stability(g, rule, 1)


# -- synthetic signal and null --------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [SelectionRule("contrast", 0.05), SelectionRule("test")])
def test_specific_rules_decode_far_better_than_random_sets_when_there_is_signal(rule):
    g, truth = synthetic_groups(seed=21, boost=0.8, per_source=20)
    result = validity(g, rule, random_sets=100, seed=1, bootstrap=3)
    precision = (result.mask & truth).sum() / result.mask.sum()
    assert precision >= 0.9
    for decoder in result.decoding.decoders.values():
        assert decoder.p_value == pytest.approx(1 / 101)  # no random set does as well
        assert decoder.interval[0] > 0.25 + 0.2  # chance is 1/4
        assert decoder.accuracy > decoder.random_accuracy.mean() + 4 * decoder.random_accuracy.std()
    assert result.stability.mean > 0.7 and result.bootstrap.mean > 0.5
    cross = result.cross_source
    assert cross.within_mean > cross.across_mean + 0.5 and all(cross.within_exceeds_across)


def test_frequent_components_decode_no_better_than_random_sets_of_their_shape():
    # the paper's rule on a model whose specific components fire rarely: it picks frequent, general components
    g, truth = synthetic_groups(seed=22, boost=1.0, specific_rate=0.05)
    frequent = validity(g, SelectionRule("percentile", 0.05), random_sets=100, seed=1)
    assert not (frequent.mask & truth).any()
    set_score = frequent.decoding.decoders["set_score"]
    assert set_score.p_value > 0.05 and set_score.interval[0] < 0.25 < set_score.interval[1]
    assert frequent.decoding.all_components.accuracy > 0.9  # the information is there, in other components
    contrast = validity(g, SelectionRule("contrast", 0.05), random_sets=100, seed=1)
    assert contrast.decoding.decoders["set_score"].p_value == pytest.approx(1 / 101)
    assert contrast.decoding.decoders["set_score"].accuracy > 0.9


def test_without_category_signal_decoding_is_at_chance():
    p_values, accuracies = [], []
    for seed in range(6):
        g, _ = synthetic_groups(seed=100 + seed, signal_sources=(), per_source=15)
        result = validity(g, SelectionRule("contrast", 0.05), random_sets=50, seed=seed)
        d = result.decoding.decoders["set_score"]
        p_values.append(d.p_value)
        accuracies.append(d.accuracy)
        assert result.decoding.chance == 0.25
    assert abs(np.mean(accuracies) - 0.25) < 0.05
    assert sum(p < 0.05 for p in p_values) <= 1 and np.median(p_values) > 0.1


def test_sets_that_depend_on_the_source_do_not_survive_a_change_of_source():
    g, _ = synthetic_groups(seed=23, boost=0.8, signal_sources=("ai",))
    cross = validity(g, SelectionRule("test"), random_sets=2).cross_source
    assert cross.within_mean < 0.2 and not any(cross.within_exceeds_across)
    assert cross.masks["ai"].sum() > 20 and cross.masks["human"].sum() <= 2


# -- results, tables and the sweep ----------------------------------------------------------------------------

def test_summary_is_json_ready_and_tables_list_selected_components_with_scores():
    g, _ = synthetic_groups(seed=24, boost=0.8)
    result = validity(g, SelectionRule("test"), random_sets=10)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["rule"]["rule"] == "test" and set(summary["held_out_decoding"]["decoders"]) == {"set_score",
                                                                                                  "centroid"}
    assert summary["held_out_decoding"]["decoders"]["centroid"]["random_sets"] == 10
    tables = result.tables()
    assert set(tables) == {"validity_decoding", "validity_confusion", "validity_stability", "validity_cross_source",
                           "specificity"}
    rows = tables["specificity"]
    assert len(rows) == int(result.mask.sum())
    p = result.freqs.p
    for row in rows[:20]:
        c = result.categories.index(row["category"])
        flat = g.layout.offsets[row["layer"]] + row["index"]
        others = [p[o, flat] for o in range(4) if o != c]
        assert row["p"] == p[c, flat] and row["contrast"] == pytest.approx(p[c, flat] - max(others))
        assert row["contrast_mean"] == pytest.approx(p[c, flat] - sum(others) / 3)
        assert row["effect"] >= 0.05 and row["q_value"] <= 0.05
    assert len(tables["validity_confusion"]) == 3 * 16
    for c, category in enumerate(result.categories):
        chosen = np.flatnonzero(result.mask[c])
        own = summary["set_specificity"][category]
        assert own["size"] == len(chosen)
        assert own["mean_contrast"] == pytest.approx(sum(p[c, n] - max(p[o, n] for o in range(4) if o != c)
                                                         for n in chosen) / len(chosen))
        assert own["top_category_share"] == pytest.approx(sum(int(np.argmax(p[:, n]) == c) for n in chosen)
                                                          / len(chosen))


def test_validity_needs_enough_groups_per_category():
    g, _ = synthetic_groups(categories=("a", "b"), layers=1, width=20, specific=2, per_source=3, seed=0)
    lonely = g.subset(np.array([i for i in range(g.size) if g.categories[i] == "a" or g.labels[i] == "b-ai-0"]))
    with pytest.raises(SparcomError, match="category b has too few groups for 2-fold"):
        validity(lonely, SelectionRule("percentile", 0.1), folds=2)
    with pytest.raises(SparcomError, match="random sets must be at least 1"):
        validity(g, SelectionRule(), random_sets=0)


def test_sweep_rows_agree_with_single_evaluations():
    g, _ = synthetic_groups(seed=25, boost=0.8, layers=3, width=40)
    rules = [SelectionRule("contrast", 0.05), SelectionRule("test")]
    rows = validity_sweep(g, rules, {"contrast": [0.02, 0.1], "test": [0.1]}, random_sets=20)
    assert [(r["rule"], r["epsilon"], r["is_default"]) for r in rows] == [
        ("contrast", 0.02, False), ("contrast", 0.05, True), ("contrast", 0.1, False),
        ("test", 0.05, True), ("test", 0.1, False)]
    single = validity(g, SelectionRule("contrast", 0.1), random_sets=20)
    row = rows[2]
    assert row["set_score_accuracy"] == single.decoding.decoders["set_score"].accuracy
    assert row["centroid_p"] == single.decoding.decoders["centroid"].p_value
    assert row["stability"] == single.stability.mean
    assert row["cross_source_within"] == single.cross_source.within_mean
    assert row["selected_a"] == int(single.mask[0].sum())
    assert row["chance"] == 0.25 and row["general_share"] == 0.0
