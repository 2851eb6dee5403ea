"""The specificity scores and the `contrast` and `test` rules against direct implementations of their formulas."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats
from validity_data import synthetic_groups

from sparcom.analysis.groups import GroupCounts, GroupMoments, pool
from sparcom.analysis.selection import DEFAULT_MIN_EFFECT, SWEEP_EFFECTS, SWEEP_FRACTIONS, SelectionRule
from sparcom.analysis.sets import epsilon_sweep
from sparcom.analysis.specificity import (
    bh_adjust,
    contrast_mask,
    contrast_scores,
    entropy_specificity,
    welch_greater,
    welch_test_mask,
)
from sparcom.components import Layout
from sparcom.errors import SparcomError


def direct_contrast(p: np.ndarray, against: str) -> np.ndarray:
    k, n = p.shape
    out = np.zeros_like(p)
    for c in range(k):
        for i in range(n):
            others = [p[o, i] for o in range(k) if o != c]
            out[c, i] = p[c, i] - (max(others) if against == "max" else sum(others) / len(others))
    return out


def direct_quantile(values: list[float], q: float) -> float:
    """NumPy's default (linear, type 7) quantile written out."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def random_p(seed: int, k: int = 4, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.8, 2.0, size=(k, n))
    p[:, :5] = 0.0  # dead components
    p[:, 5:10] = p[0, 5:10]  # ties across categories
    p[1, 10:20] = 0.9  # ties within a category
    return p


@pytest.mark.parametrize("against", ["max", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_contrast_scores_match_direct_formula(against, seed):
    p = random_p(seed)
    assert np.allclose(contrast_scores(p, against), direct_contrast(p, against), atol=1e-15)


def test_contrast_max_with_a_tie_at_the_top_is_zero_for_both():
    p = np.array([[0.5, 0.2], [0.5, 0.1], [0.1, 0.3]])
    assert np.allclose(contrast_scores(p, "max"), [[0.0, -0.1], [0.0, -0.2], [-0.4, 0.1]])


@pytest.mark.parametrize("against", ["max", "mean"])
@pytest.mark.parametrize(("seed", "epsilon"), [(0, 0.01), (1, 0.05), (2, 0.2), (3, 0.6)])
def test_contrast_rule_matches_direct_implementation(against, seed, epsilon):
    p = random_p(seed)
    scores = direct_contrast(p, against)
    expected = np.zeros(p.shape, dtype=bool)
    for c in range(p.shape[0]):
        cut = direct_quantile(list(scores[c]), 1 - epsilon)
        for i in range(p.shape[1]):
            expected[c, i] = scores[c, i] >= cut and scores[c, i] > 0 and p[c, i] > 0
    got = SelectionRule("contrast", epsilon, against=against).apply(p, Layout("neuron", (0,), ((200,),)))
    assert np.array_equal(got, expected)
    if against == "max":  # positive max-contrast is unique: at most one category per component
        assert got.sum(axis=0).max() <= 1


def test_contrast_keeps_ties_at_the_cut_and_never_selects_non_positive_scores():
    p = np.array([[0.9, 0.6, 0.6, 0.1, 0.0], [0.1, 0.1, 0.1, 0.1, 0.0]])
    # contrasts of row 0: .8 .5 .5 0 0; quantile(0.6) of (0 0 .5 .5 .8) = .5 -> the tied .5s both kept
    assert contrast_mask(p, 0.4).tolist() == [[True, True, True, False, False], [False] * 5]
    # ε = 1: cut at the minimum, but scores ≤ 0 are never kept
    assert contrast_mask(p, 1.0).tolist() == [[True, True, True, False, False], [False] * 5]


def test_entropy_specificity_matches_direct_formula():
    p = random_p(4)
    k = p.shape[0]
    got = entropy_specificity(p)
    for i in range(p.shape[1]):
        total = sum(p[:, i])
        if total == 0:
            assert math.isnan(got[i])
            continue
        h = -sum((v / total) * math.log(v / total) for v in p[:, i] if v > 0)
        assert got[i] == pytest.approx(1 - h / math.log(k), abs=1e-12)
    assert entropy_specificity(np.array([[0.3], [0.0]]))[0] == pytest.approx(1.0)
    assert entropy_specificity(np.array([[0.3], [0.3]]))[0] == pytest.approx(0.0)


def direct_bh(pvalues: list[float], q: float) -> list[bool]:
    """The step-up procedure: reject the k smallest, k the largest rank with p_(k) ≤ k q / m."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    largest = 0
    for rank, i in enumerate(order, start=1):
        if pvalues[i] <= rank * q / m:
            largest = rank
    reject = [False] * m
    for i in order[:largest]:
        reject[i] = True
    return reject


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bh_adjusted_values_reject_exactly_like_the_step_up_procedure(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 150), rng.uniform(0, 0.01, 50)])
    adjusted = bh_adjust(p)
    for q in (0.01, 0.05, 0.2):
        assert (adjusted <= q).tolist() == direct_bh(p.tolist(), q)
    assert np.allclose(adjusted, stats.false_discovery_control(p, method="bh"))


def direct_welch(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """Effect, t, df and one-sided p (H1: mean a > mean b) from the textbook formulas."""
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / len(a) + vb / len(b)
    effect = statistics.fmean(a) - statistics.fmean(b)
    t = effect / math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return effect, t, df, float(stats.t.sf(t, df))


def test_welch_matches_direct_formula_and_scipy():
    g, _ = synthetic_groups(layers=2, width=15, specific=2, seed=5)
    x = g.frequencies()
    result = welch_greater(g.moments)
    for k, category in enumerate(g.category_order):
        for n in range(g.layout.size):
            a = [float(x[i, n]) for i in range(g.size) if g.categories[i] == category]
            b = [float(x[i, n]) for i in range(g.size) if g.categories[i] != category]
            effect, t, df, p = direct_welch(a, b)
            assert result.effect[k, n] == pytest.approx(effect, abs=1e-12)
            assert result.t[k, n] == pytest.approx(t, rel=1e-8, abs=1e-10)
            assert result.df[k, n] == pytest.approx(df, rel=1e-8)
            assert result.pvalue[k, n] == pytest.approx(p, rel=1e-6, abs=1e-14)
            reference = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
            assert result.pvalue[k, n] == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-14)


def test_welch_leaves_out_groups_without_tokens_and_handles_zero_variance():
    layout = Layout("neuron", (0,), ((3,),))
    # component 0: a constant 1, b constant 0 (perfect separation); 1: everything 0; 2: a constant 0, b constant 1
    counts = np.array([[4, 0, 0], [2, 0, 0], [0, 0, 5], [0, 0, 3], [9, 9, 9]])
    tokens = np.array([4, 2, 5, 3, 0])  # the last group has no counted tokens and must not count
    g = GroupCounts("neuron", layout, tuple("vwxyz"), ("a", "a", "b", "b", "b"), ("ai",) * 5, counts, tokens)
    assert g.moments.n.tolist() == [2, 2]
    result = welch_greater(g.moments)
    assert result.pvalue[0].tolist() == [0.0, 1.0, 1.0]
    assert result.effect[0].tolist() == [1.0, 0.0, -1.0]
    assert math.isnan(result.t[0, 1]) and result.t[0, 0] == math.inf
    assert welch_test_mask(g.moments, 0.05, 0.5)[0].tolist() == [True, False, False]


def direct_test_rule(g: GroupCounts, fdr: float, delta: float) -> np.ndarray:
    x = g.frequencies()
    mask = np.zeros((len(g.category_order), g.layout.size), dtype=bool)
    for k, category in enumerate(g.category_order):
        effects, pvalues = [], []
        for n in range(g.layout.size):
            a = [float(x[i, n]) for i in range(g.size) if g.categories[i] == category and g.tokens[i] > 0]
            b = [float(x[i, n]) for i in range(g.size) if g.categories[i] != category and g.tokens[i] > 0]
            effect, _, _, p = direct_welch(a, b)
            effects.append(effect)
            pvalues.append(p)
        reject = direct_bh(pvalues, fdr)
        mask[k] = [reject[n] and effects[n] >= delta for n in range(g.layout.size)]
    return mask


@pytest.mark.parametrize(("seed", "fdr", "delta"), [(0, 0.05, 0.05), (1, 0.01, 0.02), (2, 0.2, 0.1)])
def test_test_rule_matches_direct_implementation(seed, fdr, delta):
    g, _ = synthetic_groups(layers=3, width=20, specific=2, boost=0.6, seed=seed)
    expected = direct_test_rule(g, fdr, delta)
    rule = SelectionRule("test", delta, fdr=fdr)
    got = rule.apply(pool(g).p, g.layout, g)
    assert np.array_equal(got, expected)
    assert np.array_equal(rule.apply(pool(g).p, g.layout, g.moments), expected)
    assert got.any()


def test_test_rule_recovers_specific_components_and_selects_nothing_without_signal():
    g, truth = synthetic_groups(seed=7)
    mask = SelectionRule("test").apply(pool(g).p, g.layout, g)
    assert (mask & truth).sum() / mask.sum() >= 0.9 and (mask & truth).sum() / truth.sum() >= 0.9
    null, _ = synthetic_groups(seed=7, signal_sources=())
    assert SelectionRule("test").apply(pool(null).p, null.layout, null).sum() <= 2


def test_contrast_recovers_specific_components():
    g, truth = synthetic_groups(seed=8)
    mask = SelectionRule("contrast", truth[0].mean()).apply(pool(g).p, g.layout)
    assert (mask & truth).sum() / mask.sum() >= 0.9
    # the paper's rule picks the most frequent components instead: far fewer of the true ones
    top = SelectionRule("percentile", truth[0].mean()).apply(pool(g).p, g.layout)
    assert (top & truth).sum() < 0.7 * (mask & truth).sum()


def test_test_rule_needs_groups_and_matching_shapes():
    g, _ = synthetic_groups(layers=1, width=20, specific=2, seed=0)
    rule = SelectionRule("test")
    with pytest.raises(SparcomError, match="--group-by instruction"):
        rule.apply(pool(g).p, g.layout)
    with pytest.raises(SparcomError, match="pass the groups pooled into p"):
        rule.apply(pool(g).p[:2], g.layout, g)
    one = GroupMoments(("a",), np.array([5]), np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(SparcomError, match="only one category"):
        welch_greater(one)
    few = GroupMoments(("a", "b"), np.array([1, 5]), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(SparcomError, match=r"at least 2 instructions .* too few in: a"):
        welch_greater(few)


def test_rule_parameters_labels_and_grids_of_the_new_rules():
    test = SelectionRule("test")
    assert test.epsilon == DEFAULT_MIN_EFFECT and test.needs_groups
    assert test.parameters == {"rule": "test", "epsilon": 0.05, "test": "welch, one-sided", "min_effect": 0.05,
                               "fdr": 0.05}
    assert test.sweep_grid == SWEEP_EFFECTS
    assert test.with_epsilon(0.1).fdr == 0.05 and SelectionRule("test", fdr=0.01).with_epsilon(0.2).fdr == 0.01
    assert "FDR 0.05" in test.describe() and test.short() == "test δ ≥ 0.05, FDR 0.05"
    contrast = SelectionRule("contrast", against="mean")
    assert contrast.epsilon == 0.01 and not contrast.needs_groups and contrast.sweep_grid == SWEEP_FRACTIONS
    assert contrast.parameters == {"rule": "contrast", "epsilon": 0.01, "against": "mean"}
    assert contrast.with_epsilon(0.05).against == "mean"
    assert "mean p of the other" in contrast.describe() and contrast.short() == "contrast (mean) 1%"
    assert SelectionRule("contrast").short() == "contrast 1%"
    with pytest.raises(SparcomError, match="unknown contrast 'median'"):
        SelectionRule("contrast", against="median")
    with pytest.raises(SparcomError, match="FDR must be in"):
        SelectionRule("test", fdr=0.0)
    # the existing positional construction and the old rules are unchanged
    assert SelectionRule("lape", 0.05, 0.9, 0.8).parameters == {"rule": "lape", "epsilon": 0.05, "top_rate": 0.05,
                                                                "filter_rate": 0.9, "activation_bar_ratio": 0.8}


def test_epsilon_sweep_of_the_contrast_rule_grows_with_epsilon():
    p = random_p(9)
    layout = Layout("neuron", (0,), ((200,),))
    rows = epsilon_sweep(p, layout, ("a", "b", "c", "d"), SelectionRule("contrast"), [0.01, 0.05, 0.2])
    sizes = [r["selected_any"] for r in rows]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert all(r["general"] == 0 for r in rows)  # max-contrast sets are disjoint
