"""Sparse-probing curves: every ranking, decoder and tally against a direct implementation on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from validity_data import synthetic_groups

from sparcom.analysis.groups import pool, stratified_folds
from sparcom.analysis.probing import (
    L1_STEPS,
    SIX_WAY,
    FeatureTable,
    balanced_accuracy,
    frequency_bins,
    l1_logistic,
    l1_path_order,
    mean_difference,
    one_vs_rest_predict,
    probing_curves,
    top_k,
)
from sparcom.analysis.rule_rankings import rule_ranking
from sparcom.analysis.selection import SelectionRule
from sparcom.errors import SparcomError
from sparcom.random_sets import batched, draw


def test_top_k_is_a_sort_by_score_then_tiebreak_then_position():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 4, 40).astype(float)
    score[[3, 9]] = -np.inf
    tiebreak = rng.integers(0, 3, 40).astype(float)
    for k in (1, 5, 17, 40):
        ranked = sorted((i for i in range(40) if np.isfinite(score[i])), key=lambda i: (-score[i], -tiebreak[i], i))
        assert top_k(score, k, tiebreak).tolist() == sorted(ranked[:k])
    assert top_k(score, 40).size == 38  # never a component the ranking excludes


@pytest.mark.parametrize("rule", [SelectionRule("percentile", 0.05), SelectionRule("contrast", 0.05),
                                  SelectionRule("contrast", 0.05, against="mean"),
                                  SelectionRule("layer-percentile", 0.1), SelectionRule("test", 0.02),
                                  SelectionRule("lape", 0.1), SelectionRule("attribution", 0.05),
                                  SelectionRule("attribution", 0.05, against="mean")])
def test_the_top_of_each_rule_ranking_is_the_rule_selection(rule):
    groups, _ = synthetic_groups(seed=2)
    freqs = pool(groups)
    p = freqs.p + np.random.default_rng(1).uniform(0, 1e-9, freqs.p.shape) * (freqs.p > 0)  # no ties
    effects = np.random.default_rng(4).normal(size=p.shape)  # estimated effects, either sign
    mask = rule.apply(p, groups.layout, groups.moments, effects)
    score, tiebreak = rule_ranking(rule, p, groups.layout, groups.moments, effects)
    assert mask.any()
    for c in range(mask.shape[0]):
        size = int(mask[c].sum())
        assert top_k(score[c], size, None if tiebreak is None else tiebreak[c]).tolist() == \
            np.flatnonzero(mask[c]).tolist()


def test_an_unknown_rule_ranking_is_one_clear_error():
    groups, _ = synthetic_groups()
    rule = SelectionRule("percentile")
    object.__setattr__(rule, "name", "bogus")
    with pytest.raises(SparcomError, match="rule 'bogus' has no ranking"):
        rule_ranking(rule, pool(groups).p, groups.layout, groups.moments)
    with pytest.raises(SparcomError, match="needs the estimated effects"):
        rule_ranking(SelectionRule("attribution"), pool(groups).p, groups.layout, groups.moments)
    with pytest.raises(SparcomError, match="needs per-instruction counts"):
        rule_ranking(SelectionRule("test"), pool(groups).p, groups.layout)


def test_mean_difference_is_the_standardised_difference_of_means():
    groups, _ = synthetic_groups(seed=3)
    x = groups.frequencies()
    _, mean, std = groups.moments.pooled()
    for c in range(len(groups.category_order)):
        own = groups.category_index == c
        expected = np.abs(x[own].mean(axis=0) - x[~own].mean(axis=0)) / np.where(std > 0, std, np.inf)
        np.testing.assert_allclose(mean_difference(groups.moments, mean, std)[c], expected, atol=1e-12)


def test_one_vs_rest_is_the_nearer_of_two_centroids():
    rng = np.random.default_rng(4)
    z, own, rest = rng.normal(size=(30, 12)), rng.normal(size=12), rng.normal(size=12)
    sets = np.stack([rng.choice(12, 5, replace=False) for _ in range(7)])
    predicted = one_vs_rest_predict(np.ascontiguousarray(z.T), own, rest, sets)
    for g in range(30):
        for r, chosen in enumerate(sets):
            nearer = ((z[g, chosen] - own[chosen]) ** 2).sum() < ((z[g, chosen] - rest[chosen]) ** 2).sum()
            assert predicted[g, r] == nearer
    assert not one_vs_rest_predict(np.ascontiguousarray(z.T), own, rest, np.zeros((2, 0), dtype=np.int64)).any()


def test_balanced_accuracy_formula():
    assert balanced_accuracy(np.array([3]), 4, np.array([10]), 20)[0] == pytest.approx((3 / 4 + 10 / 20) / 2)
    assert np.isnan(balanced_accuracy(np.array([0]), 0, np.array([3]), 3)[0])


def test_frequency_bins_are_quantiles_of_the_pooled_frequency():
    rng = np.random.default_rng(5)
    counts, tokens = rng.integers(0, 50, (3, 200)), np.array([60, 70, 80])
    bins = frequency_bins(counts, tokens, 4)
    pooled = counts.sum(axis=0) / tokens.sum()
    for b in range(1, bins.max() + 1):
        assert pooled[bins == b].min() >= pooled[bins == b - 1].max()
    assert np.bincount(bins).min() >= 40  # four bins of about 50


def _kkt_gap(x, y, beta, penalty):
    weights = np.where(y > 0, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    gradient = x.T @ (weights * (1 / (1 + np.exp(-(beta[0] + x @ beta[1:]))) - y))
    zero = beta[1:] == 0
    return max(np.max(np.abs(gradient[zero]), initial=0.0) - penalty,
               np.max(np.abs(gradient[~zero] + penalty * np.sign(beta[1:][~zero])), initial=0.0))


def test_l1_logistic_meets_the_optimality_conditions():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 15))
    y = (x[:, 0] - 0.5 * x[:, 3] + 0.3 * rng.normal(size=120) > 0).astype(float)
    beta = l1_logistic(x, y, 0.02, iterations=5000, tolerance=1e-12)
    assert 0 < (beta[1:] != 0).sum() < 15
    assert _kkt_gap(x, y, beta, 0.02) < 1e-5


def test_l1_path_enters_the_informative_features_first():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 20))
    y = (2 * x[:, 4] - x[:, 11] + 0.3 * rng.normal(size=200) > 0).astype(float)
    entry, size = l1_path_order(x, y)
    first = np.argsort(entry, kind="stable")[:2]
    assert set(first.tolist()) == {4, 11}
    assert entry[4] <= entry[11]
    weights = np.where(y > 0, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    assert np.argmax(np.abs(x.T @ (weights * (0.5 - y)))) == 4  # the first to enter has the largest gradient at 0
    assert (size[entry < L1_STEPS] > 0).all() and (size[entry == L1_STEPS] == 0).all()


def _direct_curve(groups, rule, k, folds=5, seed=0, effects=None):
    """Six-way accuracy and one-vs-rest balanced accuracy with loops: select top k per category by the rule's
    score on the training folds, standardise with training mean / sd, nearest centroid."""
    assignment = stratified_folds(groups, folds, seed)
    x = groups.frequencies()
    truth = groups.category_index
    kk = len(groups.category_order)
    correct, tp, tn = 0, np.zeros(kk), np.zeros(kk)
    for f in range(folds):
        train, held = assignment != f, assignment == f
        freqs = pool(groups, train)
        moments = groups.subset(train).moments
        score, tiebreak = rule_ranking(rule, freqs.p, groups.layout, moments, None if effects is None else effects[f])
        mean, std = x[train].mean(axis=0), x[train].std(axis=0, ddof=1)
        z = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0.0)
        chosen = []
        for c in range(kk):
            order = sorted((n for n in range(x.shape[1]) if np.isfinite(score[c, n])),
                           key=lambda n, c=c: (-score[c, n], -(0 if tiebreak is None else tiebreak[c, n]), n))
            chosen.append(order[:k])
        union = sorted(set().union(*chosen))
        centroids = [z[train & (truth == c)].mean(axis=0) for c in range(kk)]
        for g in np.flatnonzero(held):
            distances = [((z[g, union] - centroids[c][union]) ** 2).sum() for c in range(kk)]
            correct += int(np.argmin(distances) == truth[g])
            for c in range(kk):
                rest = z[train & (truth != c)].mean(axis=0)
                s = chosen[c]
                positive = ((z[g, s] - centroids[c][s]) ** 2).sum() < ((z[g, s] - rest[s]) ** 2).sum()
                tp[c] += positive and truth[g] == c
                tn[c] += (not positive) and truth[g] != c
    positives = np.bincount(truth, minlength=kk)
    return correct / groups.size, (tp / positives + tn / (groups.size - positives)) / 2


@pytest.fixture(scope="module")
def curves():
    groups, _ = synthetic_groups(boost=1.0, specific_rate=0.05, seed=8)
    bag = np.random.default_rng(9).poisson(2.0, (groups.size, 25))
    bag[:, 0] += 3 * (groups.category_index == 0)  # a word that marks the first category
    table = FeatureTable("lexical", bag, bag.sum(axis=1))
    return groups, table, probing_curves(groups, ks=(1, 4, 16), random_sets=8, tables=[table])


@pytest.mark.parametrize("rule", ["percentile", "contrast", "test"])
def test_curves_equal_a_direct_loop(curves, rule):
    groups, _, result = curves
    m = result.methods.index(rule)
    for i, k in enumerate(result.ks):
        six, ovr = _direct_curve(groups, SelectionRule(rule), k)
        assert result.accuracy[m, 0, i] == pytest.approx(six)
        np.testing.assert_allclose(result.accuracy[m, 1:, i], ovr)


def test_the_attribution_ranking_reads_each_folds_training_effects():
    groups, _ = synthetic_groups(boost=1.0, specific_rate=0.05, seed=8)
    shape = (len(groups.category_order), groups.layout.size)
    seen = []

    def effects_by_fold(assignment, folds):
        seen.append((assignment.copy(), folds))
        return [np.random.default_rng(100 + f).normal(size=shape) for f in range(folds)]

    result = probing_curves(groups, [SelectionRule("contrast")], ks=(1, 4), random_sets=4,
                            effects_by_fold=effects_by_fold)
    assert result.methods[:2] == ("contrast", "attribution") and result.families["attribution"] == "rule"
    np.testing.assert_array_equal(seen[0][0], stratified_folds(groups, 5, 0))
    effects = effects_by_fold(seen[0][0], 5)
    m = result.methods.index("attribution")
    for i, k in enumerate(result.ks):
        six, ovr = _direct_curve(groups, SelectionRule("attribution"), k, effects=effects)
        assert result.accuracy[m, 0, i] == pytest.approx(six)
        np.testing.assert_allclose(result.accuracy[m, 1:, i], ovr)
    with pytest.raises(SparcomError, match="needs its effects per fold"):
        probing_curves(groups, [SelectionRule("attribution")], ks=(1,), random_sets=2)


def test_the_feature_table_is_decoded_on_its_own_tokens(curves):
    _, _, result = curves
    m = result.methods.index("lexical")
    assert result.families["lexical"] == "lexical"
    assert np.isnan(result.random[m]).all()
    assert result.accuracy[m, 1, 0] > 0.8  # the marker word alone finds the first category
    assert result.accuracy[m, 2:, 0].mean() < 0.65  # and nothing else
    assert result.all_features["lexical"][1] > 0.7


def test_random_controls_are_drawn_like_the_chosen_sets(curves):
    groups, _, result = curves
    mask = np.zeros(groups.layout.size, dtype=bool)
    mask[[0, 1, 70, 150]] = True
    strata = frequency_bins(pool(groups).counts, pool(groups).tokens, 5)
    drawn = draw(groups.layout, mask, 6, ("t",), batched, strata=strata)
    for row in drawn:
        for layer, part in groups.layout.groups("layer"):
            inside = np.zeros(groups.layout.size, dtype=bool)
            inside[row] = True
            assert np.bincount(strata[part][inside[part]], minlength=5).tolist() == \
                np.bincount(strata[part][mask[part]], minlength=5).tolist(), layer
    assert result.random.shape[-1] == result.matched.shape[-1] == 8


def test_specific_rare_components_beat_random_only_for_rules_that_rank_by_specificity(curves):
    _, _, result = curves
    contrast = result.at("contrast", 1)
    assert contrast["accuracy"] > contrast["random_mean"] + 0.2
    # all true components share one base rate here, so the frequency-matched control draws mostly among them
    assert contrast["matched_mean"] > contrast["random_mean"]
    percentile = result.at("percentile", 4)
    assert percentile["accuracy"] < result.at("contrast", 4)["accuracy"] - 0.3  # top frequency misses them (issue 10)
    assert result.at("mean-difference", 16)["accuracy"] > 0.8
    rows = result.rows()
    assert {r["target"] for r in rows} == {SIX_WAY, *result.categories}
    assert any(r["method"] == "all components" for r in rows)
    summary = result.summary()
    assert summary["methods"]["contrast"]["six_way"] == result.accuracy[result.methods.index("contrast"), 0].tolist()


def test_without_signal_every_curve_stays_near_chance():
    groups, _ = synthetic_groups(signal_sources=(), seed=10)
    result = probing_curves(groups, rules=[SelectionRule("contrast")], ks=(4,), random_sets=4)
    assert np.all(np.abs(result.accuracy[:, 0] - 0.25) < 0.2)
    assert np.all(np.abs(result.accuracy[:, 1:] - 0.5) < 0.2)


def test_bad_settings_are_refused():
    groups, _ = synthetic_groups()
    with pytest.raises(SparcomError, match="k values"):
        probing_curves(groups, ks=(0, 2))
    with pytest.raises(SparcomError, match="random sets"):
        probing_curves(groups, random_sets=1)
