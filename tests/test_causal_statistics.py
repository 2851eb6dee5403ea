"""The causal check's paired statistics against plain loop implementations of their formulas, and synthetic
cases where the answer is known: a truly specific set, a set that is critical but not specific, a null set."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from sparcom import stats
from sparcom.artifacts.causal import Outcome
from sparcom.causal import decisions
from sparcom.causal import statistics as st
from sparcom.errors import SparcomError
from sparcom.report.verdicts import verdict_text

# ------------------------------------------------------------------------------------------- plain oracles


def plain_cells(cond: list[float], base: list[float], tokens: list[int], labels: list[str],
                evaluated: list[str]) -> list[float]:
    """Pooled ΔNLL per evaluated category, by loops: Σ (cond − base) / Σ tokens over the category's rows."""
    cells = []
    for category in evaluated:
        num, den = 0.0, 0
        for i in range(len(labels)):
            if labels[i] == category:
                num += cond[i] - base[i]
                den += tokens[i]
        cells.append(num / den)
    return cells


def plain_statistics(base, selected, random, tokens, labels, ablated, evaluated, rows=None):
    """Every per-category statistic by loops, on the rows ``rows`` (a resample: row index per slot)."""
    rows = list(range(len(labels))) if rows is None else [int(r) for r in rows]
    b = [float(base[i]) for i in rows]
    t = [int(tokens[i]) for i in rows]
    lab = [labels[i] for i in rows]
    k = len(evaluated)
    out = {"delta": [], "excess": [], "damage": [], "damage_excess": [], "specificity": [],
           "specificity_excess": [], "scaled_specificity": [], "damage_random": [], "specificity_random": []}
    for a, category in enumerate(ablated):
        delta = plain_cells([float(selected[a][i]) for i in rows], b, t, lab, evaluated)
        randoms = [plain_cells([float(random[a][r][i]) for i in rows], b, t, lab, evaluated)
                   for r in range(len(random[a]))]
        means = [sum(rc[j] for rc in randoms) / len(randoms) for j in range(k)]
        out["delta"].append(delta)
        out["excess"].append([delta[j] - means[j] for j in range(k)])
        j = evaluated.index(category)
        others = sum(delta[x] for x in range(k) if x != j) / (k - 1)
        own_r = [rc[j] for rc in randoms]
        others_r = [sum(rc[x] for x in range(k) if x != j) / (k - 1) for rc in randoms]
        spec_r = [o - q for o, q in zip(own_r, others_r, strict=True)]
        rho = sum(own_r) / sum(others_r) if sum(others_r) > 0 else math.nan
        out["damage"].append(delta[j])
        out["damage_excess"].append(delta[j] - sum(own_r) / len(own_r))
        out["specificity"].append(delta[j] - others)
        out["specificity_excess"].append(delta[j] - others - sum(spec_r) / len(spec_r))
        out["scaled_specificity"].append(delta[j] - rho * others)
        out["damage_random"].append(own_r)
        out["specificity_random"].append(spec_r)
    return {name: np.array(v, dtype=np.float64) for name, v in out.items()}


def plain_holm(p: list[float]) -> list[float]:
    tested = [i for i in range(len(p)) if not math.isnan(p[i])]
    m = len(tested)
    order = sorted(tested, key=lambda i: p[i])
    adjusted = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def plain_p(observed: float, random: list[float]) -> float:
    at_least = 0
    for value in random:
        if value >= observed:
            at_least += 1
    return (1 + at_least) / (1 + len(random))


def small_case(seed: int = 0, rows_per=(3, 4, 2), r: int = 5):
    """Three categories with a few rows each, two ablated categories, r random sets."""
    rng = np.random.default_rng(seed)
    labels = [c for c, n in zip(("qa", "math", "code"), rows_per, strict=True) for _ in range(n)]
    n = len(labels)
    tokens = rng.integers(1, 9, n)
    base = rng.uniform(0.5, 3.0, n) * tokens
    selected = base[None] + rng.normal(0.4, 0.5, (2, n)) * tokens
    random = base[None, None] + rng.normal(0.1, 0.3, (2, r, n)) * tokens
    return base, selected, random, tokens, labels, ["math", "qa"], ["math", "qa", "code"]


# ------------------------------------------------------------------------------------------- formulas


def test_pooled_cells_match_loops():
    base, selected, random, tokens, labels, _, evaluated = small_case()
    members = st.category_members(labels, evaluated)
    diff = np.concatenate([selected[:, None], random], axis=1) - base
    cells = st.pooled_cells(diff, tokens.astype(float), members)
    assert cells.shape == (2, 6, 3)
    for a in range(2):
        for s in range(6):
            cond = selected[a] if s == 0 else random[a, s - 1]
            np.testing.assert_allclose(cells[a, s], plain_cells(list(cond), list(base), list(tokens), labels,
                                                                evaluated), rtol=1e-12)


def test_point_statistics_match_loops():
    base, selected, random, tokens, labels, ablated, evaluated = small_case(1)
    res = st.causal_statistics(base, selected, random, tokens, labels, ablated, evaluated, replicates=3)
    plain = plain_statistics(base, selected, random, tokens, labels, ablated, evaluated)
    for name in ("delta", "excess", "damage", "damage_excess", "specificity", "specificity_excess",
                 "scaled_specificity"):
        np.testing.assert_allclose(res.estimate[name], plain[name], rtol=1e-10, atol=1e-12, err_msg=name)
    for a, test in enumerate(res.tests):
        assert test.ablated == ablated[a]
        # the plain rank p on these rows, kept beside the decision's row-aware p (tests/test_causal_decisions.py)
        assert test.damage.p_empirical == pytest.approx(plain_p(plain["damage"][a], list(plain["damage_random"][a])))
        assert test.specificity.p_empirical == pytest.approx(plain_p(plain["specificity"][a],
                                                                        list(plain["specificity_random"][a])))
        spec_r = plain["specificity_random"][a]
        assert test.specificity.z == pytest.approx((plain["specificity"][a] - spec_r.mean()) / spec_r.std(ddof=1))
    np.testing.assert_allclose([t.damage.p_holm for t in res.tests],
                               plain_holm([t.damage.p for t in res.tests]))


def test_specificity_weights_categories_equally_not_by_tokens():
    """A category with many tokens must not dominate "the others": the mean over categories is unweighted."""
    labels = ["a", "b", "b", "c"]
    tokens = np.array([1, 1, 1, 100])
    base = np.zeros(4)
    selected = np.array([[2.0, 1.0, 1.0, 0.0]])  # ΔNLL(a) = 2, ΔNLL(b) = 1, ΔNLL(c) = 0
    random = np.zeros((1, 3, 4))
    res = st.causal_statistics(base, selected, random, tokens, labels, ["a"], ["a", "b", "c"], replicates=2)
    assert res.tests[0].others == pytest.approx(0.5)  # (1 + 0) / 2, not (2 + 0) / 102 per token
    assert res.tests[0].specificity.estimate == pytest.approx(1.5)


def test_bootstrap_with_fixed_resample_matches_loops():
    base, selected, random, tokens, labels, ablated, evaluated = small_case(2)
    n = len(labels)
    members = {c: [i for i in range(n) if labels[i] == c] for c in evaluated}
    rng = np.random.default_rng(5)
    resample = np.empty((7, n), dtype=np.int64)
    for b in range(7):
        for j in range(n):
            resample[b, j] = rng.choice(members[labels[j]])
    resample[0] = np.arange(n)  # the identity resample reproduces the point estimate
    res = st.causal_statistics(base, selected, random, tokens, labels, ablated, evaluated, resample=resample,
                               level=0.8)
    names = ("delta", "excess", "damage", "damage_excess", "specificity", "specificity_excess", "scaled_specificity")
    expected = {name: [] for name in names}
    for b in range(7):
        plain = plain_statistics(base, selected, random, tokens, labels, ablated, evaluated, rows=resample[b])
        for name in names:
            expected[name].append(plain[name])
    for name in names:
        values = np.array(expected[name])
        np.testing.assert_allclose(res.samples[name], values, rtol=1e-10, atol=1e-12, err_msg=name)
        for a in range(values.shape[1]):  # percentiles of the replicates where the statistic is defined
            for rest in np.ndindex(values.shape[2:]):
                column = values[(slice(None), a, *rest)]
                defined = column[~np.isnan(column)]
                assert res.defined_replicates[name][(a, *rest)] == defined.size
                assert res.low[name][(a, *rest)] == pytest.approx(np.quantile(defined, 0.1), rel=1e-10)
                assert res.high[name][(a, *rest)] == pytest.approx(np.quantile(defined, 0.9), rel=1e-10)
    np.testing.assert_allclose(res.samples["delta"][0], res.estimate["delta"], rtol=1e-12)


def test_bootstrap_chunks_do_not_change_the_result(monkeypatch):
    base, selected, random, tokens, labels, ablated, evaluated = small_case(3)
    whole = st.causal_statistics(base, selected, random, tokens, labels, ablated, evaluated, replicates=40, seed=4)
    monkeypatch.setattr(st, "CHUNK", 7)
    chunked = st.causal_statistics(base, selected, random, tokens, labels, ablated, evaluated, replicates=40, seed=4)
    for name, values in whole.samples.items():
        np.testing.assert_allclose(chunked.samples[name], values, rtol=1e-12, err_msg=name)


def test_resample_indices_stay_within_category_and_are_seeded():
    labels = ["x"] * 5 + ["y"] * 3 + ["x"] * 2
    first = st.resample_indices(labels, 50, seed=3)
    assert first.shape == (50, 10)
    lab = np.array(labels)
    assert (lab[first] == lab[None, :]).all()
    np.testing.assert_array_equal(first, st.resample_indices(labels, 50, seed=3))
    assert not np.array_equal(first, st.resample_indices(labels, 50, seed=4))
    # a category's draws do not depend on the other categories present
    only_x = st.resample_indices([c for c in labels if c == "x"], 50, seed=3)
    x_rows = np.flatnonzero(lab == "x")
    np.testing.assert_array_equal(np.searchsorted(x_rows, first[:, x_rows]), only_x)
    # every row of a category is drawn about equally often
    many = st.resample_indices(labels, 4000, seed=1)
    share = np.bincount(many[:, lab == "y"].ravel(), minlength=10)[lab == "y"] / (4000 * 3)
    assert np.all(np.abs(share - 1 / 3) < 0.02)


def test_resample_weights_count_occurrences():
    indices = np.array([[0, 0, 2, 3], [1, 1, 1, 3], [3, 2, 1, 0]])
    weights = st.resample_weights(indices, 4)
    for b in range(3):
        for i in range(4):
            assert weights[b, i] == sum(1 for j in range(4) if indices[b, j] == i)


def test_resample_across_categories_is_refused():
    base, selected, random, tokens, labels, ablated, evaluated = small_case()
    bad = np.tile(np.arange(len(labels)), (2, 1))
    bad[1, 0] = len(labels) - 1  # a qa slot filled with a code row
    with pytest.raises(SparcomError, match="another category"):
        st.causal_statistics(base, selected, random, tokens, labels, ablated, evaluated, resample=bad)


# ------------------------------------------------------------------------------------------- p-values and Holm


def test_empirical_p_matches_loop():
    rng = np.random.default_rng(7)
    observed = rng.normal(size=(4,))
    random = rng.normal(size=(4, 9))
    random[0, :3] = observed[0]  # ties count against the observed value
    p = stats.empirical_p(observed, random)
    for i in range(4):
        assert p[i] == pytest.approx(plain_p(observed[i], list(random[i])))
    assert np.isnan(stats.empirical_p(observed, np.zeros((4, 0)))).all()


def test_holm_matches_plain_and_textbook():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(11)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = rng.choice([1 / 121, 2 / 121, 0.03, 0.2, 0.5, 1.0], size=m) if rng.random() < 0.5 else rng.random(m)
        p = p.astype(float)
        p[rng.random(m) < 0.2] = np.nan
        np.testing.assert_allclose(stats.holm(p), plain_holm(list(p)), rtol=1e-12, equal_nan=True)
    assert np.isnan(stats.holm([np.nan, np.nan])).all()


def test_random_sets_needed_by_brute_force():
    for tests, alpha in ((6, 0.05), (36, 0.05), (1, 0.05), (6, 0.01), (5, 0.1)):
        alpha_f = Fraction(str(alpha))
        r = 0
        while Fraction(tests, 1 + r) > alpha_f:
            r += 1
        assert stats.random_sets_needed(tests, alpha) == r
    assert stats.random_sets_needed(6) == 119
    assert stats.random_sets_needed(36) == 719  # Bonferroni over a 6 × 6 matrix
    # at the boundary: six tests each with the best p of 119 random sets all survive Holm, of 118 none does
    for r, expected in ((119, True), (118, False)):
        adjusted = stats.holm([1 / (1 + r)] * 6)
        assert all(stats.significant(p) is expected for p in adjusted)
        assert stats.min_holm_p(r, 6) == pytest.approx(6 / (1 + r))


# ------------------------------------------------------------------------------------------- synthetic cases


CATS = ["cls", "code", "qa", "gen", "math", "sum"]


def synthetic(seed: int, r: int, effect, per: int = 25, noise: float = 0.3):
    """Per-row sums for six categories. ``effect(a, c)`` is the ΔNLL per token that S_a causes on category c;
    every condition, selected or random, adds independent per-row noise (nats per token)."""
    rng = np.random.default_rng(seed)
    labels = [c for c in CATS for _ in range(per)]
    n = len(labels)
    tokens = rng.integers(3, 120, n)
    base = rng.uniform(0.8, 2.5, n) * tokens
    col = np.array([CATS.index(c) for c in labels])
    shift = np.array([[effect(a, c) for c in range(6)] for a in range(6)])  # [A, C]
    selected = base[None] + (shift[:, col] + rng.normal(0, noise, (6, n))) * tokens
    random = base[None, None] + (0.05 + rng.normal(0, noise, (6, r, n))) * tokens
    return base, selected, random, tokens, labels


def test_truly_specific_sets_are_called_specific():
    base, selected, random, tokens, labels = synthetic(0, 150, lambda a, c: 0.6 if a == c else 0.05)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=400, seed=2)
    assert len(res.tests) == 6
    for test in res.tests:
        assert verdict_text(test).startswith("specific — critical role holds"), verdict_text(test)
        assert "caution" not in verdict_text(test)
        assert test.damage.p_holm <= 0.05 and test.specificity.p_holm <= 0.05
        assert test.specificity.p_empirical == pytest.approx(1 / 151)
        assert 1 / 151 <= test.specificity.p < 1.5 / 151  # row noise adds little: rows agree
        assert test.specificity.low > 0.1 and test.specificity.excess_low > 0.1  # true value 0.55
        assert test.scaled_specificity_low > 0
    z = res.cells["z"]  # per-cell z, descriptive
    assert np.all(np.diag(z) > 5) and np.all(np.abs(z[~np.eye(6, dtype=bool)]) < 4)


def test_general_sets_are_critical_but_not_specific():
    """The SmolLM2 picture: every set damages every category alike, far more than random sets."""
    base, selected, random, tokens, labels = synthetic(1, 150, lambda a, c: 2.5)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=200, seed=2)
    for test in res.tests:
        assert verdict_text(test).startswith("critical but not specific"), verdict_text(test)
        assert test.damage.p_holm <= 0.05 and test.specificity.p_holm > 0.05
        assert test.damage.estimate > 2 and abs(test.specificity.estimate) < 0.25


def test_strong_set_on_a_fragile_category_gets_the_proportion_caution():
    """Damage in proportion to a category's fragility: math takes twice the damage of any set, random sets
    included. A strong general set then shows own − others > random sets' for math (a difference grows with
    strength), which the scaled specificity exposes — and which the decision no longer takes for specificity: the
    sets' diagonal dominance (the pooled test) is that of random sets, so no category is declared specific."""
    fragility = np.where(np.array(CATS) == "math", 2.0, 1.0)
    rng = np.random.default_rng(3)
    labels = [c for c in CATS for _ in range(30)]
    n, r = len(labels), 150
    tokens = rng.integers(3, 120, n)
    base = rng.uniform(0.8, 2.5, n) * tokens
    f = fragility[[CATS.index(c) for c in labels]]
    selected = base[None] + (2.0 * f + rng.normal(0, 0.2, (6, n))) * tokens
    random = base[None, None] + (0.2 * f + rng.normal(0, 0.2, (6, r, n))) * tokens
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=300, seed=1)
    math_test = next(t for t in res.tests if t.ablated == "math")
    assert math_test.specificity.p_holm <= 0.05  # alone, math would pass
    assert math_test.decision.specificity is Outcome.NOT_ENOUGH and "pooled test" in verdict_text(math_test)
    assert res.claims["specificity"].pooled.outcome is Outcome.DOES_NOT_HOLD
    assert math_test.ratio_random == pytest.approx(2.0, rel=0.1)
    assert math_test.scaled_specificity_low < 0 < math_test.scaled_specificity_high


def test_null_sets_are_not_called_specific():
    """Selected sets that are just more random sets: across 30 independent data sets the family-wise rate of any
    'specific' or damage verdict stays near α, and the p-values spread over (0, 1]."""
    hits, raw_p = 0, []
    for seed in range(30):
        base, selected, random, tokens, labels = synthetic(100 + seed, 119, lambda a, c: 0.05, per=10)
        res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=20, seed=seed)
        hit = any(t.damage.p_holm <= 0.05 or t.specificity.p_holm <= 0.05 for t in res.tests)
        hits += hit
        if not hit:
            # nothing holds: decided "no effect", or undecided where a set happened to beat all 119 random sets
            assert all(verdict_text(t).startswith("no effect beyond random") or "beats all 119" in verdict_text(t)
                       for t in res.tests)
        raw_p += [t.specificity.p for t in res.tests] + [t.damage.p for t in res.tests]
    # at most 2 × 0.05 × 30 = 3 expected (two families); on these data the uncorrected p-values give 12
    assert hits <= 6
    raw_p = np.array(raw_p)
    assert 0.4 < raw_p.mean() < 0.6 and np.mean(raw_p <= 0.05) < 0.09  # uniform under the null: 0.5 and 0.05


def test_selective_but_not_critical():
    """A set that hurts its own category no more than random sets do but helps the others."""
    base, selected, random, tokens, labels = synthetic(6, 150, lambda a, c: 0.05 if a == c else -0.5)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    for test in res.tests:
        assert verdict_text(test).startswith("selective but not critical"), verdict_text(test)
        assert test.damage.p_holm > 0.05 and test.specificity.p_holm <= 0.05


def test_too_few_random_sets_says_so():
    base, selected, random, tokens, labels = synthetic(0, 20, lambda a, c: 0.6 if a == c else 0.05)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    for test in res.tests:
        text = verdict_text(test)
        assert text.startswith("not enough evidence — ") and "with 20 random sets" in text, text
        assert "need R ≥ 119" in text
        assert test.damage.p_empirical == pytest.approx(1 / 21) and test.damage.p >= 1 / 21
    assert res.summary()["power"]["random_sets_needed"] == 119


# ------------------------------------------------------------------------------------------- edges and outputs


def test_untested_categories_leave_the_holm_family():
    base, selected, random, tokens, labels = synthetic(4, 30, lambda a, c: 0.6 if a == c else 0.0)
    sizes = [10, 0, 10, 10, 10, 10]
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, set_sizes=sizes, replicates=20)
    code = next(t for t in res.tests if t.ablated == "code")
    assert verdict_text(code) == "not enough evidence: not tested: its set is empty" and np.isnan(code.damage.p_holm)
    others = [t.damage.p for t in res.tests if t.ablated != "code"]
    assert [t.damage.p_holm for t in res.tests if t.ablated != "code"] == pytest.approx(plain_holm(others))
    assert res.summary()["power"]["tests"] == 5
    # no random sets: cells still get intervals, nothing is tested
    none = st.causal_statistics(base, selected, random[:, :0], tokens, labels, CATS, replicates=20)
    assert all(verdict_text(t) == "not enough evidence: not tested: no random sets" for t in none.tests)
    assert np.isfinite(none.low["delta"]).all() and np.isnan(none.estimate["excess"]).all()
    # an ablated category without evaluated rows has a row in the matrix but no test
    keep = [i for i, c in enumerate(labels) if c != "sum"]
    partial = st.causal_statistics(base[keep], selected[:, keep], random[:, :, keep], tokens[keep],
                                   [labels[i] for i in keep], CATS, replicates=20)
    assert partial.evaluated == CATS[:5] and [t.ablated for t in partial.tests] == CATS[:5]
    assert partial.estimate["delta"].shape == (6, 5)


def test_bad_inputs_are_refused():
    base, selected, random, tokens, labels, ablated, evaluated = small_case()
    with pytest.raises(SparcomError, match="expected selected"):
        st.causal_statistics(base, selected[:1], random, tokens, labels, ablated, evaluated)
    with pytest.raises(SparcomError, match="positive integer"):
        st.causal_statistics(base, selected, random, np.zeros_like(tokens), labels, ablated, evaluated)
    with pytest.raises(SparcomError, match="NaN"):
        st.causal_statistics(base * np.nan, selected, random, tokens, labels, ablated, evaluated)
    with pytest.raises(SparcomError, match="has no rows"):
        st.causal_statistics(base, selected, random, tokens, labels, ablated, [*evaluated, "gen"])


def test_summary_tables_and_matrices():
    base, selected, random, tokens, labels = synthetic(5, 30, lambda a, c: 0.6 if a == c else 0.05, per=8)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, target="experts", replicates=30)
    summary = json.loads(json.dumps(res.summary(), allow_nan=False))
    assert summary["target"] == "experts" and summary["bootstrap"]["replicates"] == 30
    assert len(summary["tests"]) == 6 and summary["rule"] == decisions.RULE
    assert summary["claims"]["damage"]["categories"] == 6 and summary["claims"]["damage"]["claim"] == "critical role"
    tables = res.tables()
    assert len(tables["delta_nll_paired"]) == 36 and len(tables["specificity_tests"]) == 6
    cell = tables["delta_nll_paired"][8]  # code → qa
    assert (cell["ablated"], cell["evaluated"]) == ("code", "qa")
    assert cell["delta_nll"] == pytest.approx(res.delta[1, 2])
    # z and the random mean of a cell by their formulas over the plain-loop cells of the 30 random sets
    randoms = np.stack([plain_cells_all(random[a], base, tokens, labels) for a in range(6)])  # [A, R, C]
    observed = np.array([plain_cells(list(selected[a]), list(base), list(tokens), labels, CATS) for a in range(6)])

    def z(a, c):
        values = randoms[a, :, c]
        return (observed[a, c] - values.mean()) / values.std(ddof=1)

    assert cell["random_mean"] == pytest.approx(randoms[1, :, 2].mean(), rel=1e-9)
    assert cell["z"] == pytest.approx(z(1, 2), rel=1e-9)
    assert cell["ratio_to_random_mean"] == pytest.approx(observed[1, 2] / randoms[1, :, 2].mean(), rel=1e-9)
    matrices = res.matrices()
    assert set(matrices) == {"delta_nll_z_matrix_experts", "delta_nll_excess_matrix_experts",
                             "delta_nll_ratio_matrix_experts"}
    assert matrices["delta_nll_z_matrix_experts"][4]["math"] == pytest.approx(z(4, 4), rel=1e-9)
    assert matrices["delta_nll_excess_matrix_experts"][4]["math"] == pytest.approx(
        observed[4, 4] - randoms[4, :, 4].mean(), rel=1e-9)


def plain_cells_all(random_a, base, tokens, labels):
    return np.array([plain_cells(list(cond), list(base), list(tokens), labels, CATS) for cond in random_a])
