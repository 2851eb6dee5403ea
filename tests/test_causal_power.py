"""Power of the causal check's tests: the parametric tail test against a direct implementation of its formula, its
calibration under the null, the normality fallback, the auto choice; and the scored-token cap against full scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from causal_tiny import one_thread  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer

from sparcom import stats
from sparcom.causal import decisions
from sparcom.causal import statistics as st
from sparcom.causal.nll import cap_scored, encode_scored
from sparcom.causal.row_aware import Outcome, decide
from sparcom.causal.scoring import example_nll
from sparcom.data.batching import length_batches
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.report.verdicts import verdict_label, verdict_text

CATS = ["cls", "code", "qa", "gen", "math", "sum"]


# ------------------------------------------------------------------------------------------- the t tail, directly


def t_density(t: float, df: int) -> float:
    return (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
            * (1 + t * t / df) ** (-(df + 1) / 2))


def plain_t_tail(observed: float, randoms: list[float]) -> float:
    """P(t_{R−1} ≥ T), T = (y − mean) / (sd · √(1 + 1/R)), by loops and a Simpson integral of the t density."""
    r = len(randoms)
    mean = sum(randoms) / r
    sd = math.sqrt(sum((x - mean) ** 2 for x in randoms) / (r - 1))
    t = (observed - mean) / (sd * math.sqrt(1 + 1 / r))
    # ∫_t^∞ f = ∫_0^1 f(t + u / (1 − u)) / (1 − u)² du (Simpson, even number of intervals)
    n = 20000
    h = 1.0 / n
    total = 0.0
    for i in range(n + 1):
        u = min(i * h, 1 - 1e-12)
        value = t_density(t + u / (1 - u), r - 1) / (1 - u) ** 2
        total += value * (1 if i in (0, n) else 4 if i % 2 else 2)
    return total * h / 3


def test_t_tail_matches_the_formula():
    rng = np.random.default_rng(0)
    for r in (10, 20, 57):
        randoms = rng.normal(0.1, 0.3, r)
        for observed in (-0.5, 0.1, 0.6, 1.5):
            got = stats.t_tail_p(np.array([observed]), randoms[None, :])[0]
            assert got == pytest.approx(plain_t_tail(observed, randoms.tolist()), rel=1e-6, abs=1e-12)


def test_t_tail_edges():
    assert np.isnan(stats.t_tail_p(np.array([1.0]), np.ones((1, 12)))[0])  # no spread
    assert np.isnan(stats.t_tail_p(np.array([1.0]), np.zeros((1, 1)))[0])  # one random set
    assert np.isnan(stats.t_tail_p(np.array([np.nan]), np.arange(12.0)[None])[0])


def test_parametric_p_is_uniform_under_a_normal_null():
    """The observed value is one more draw of the random sets' normal distribution: P(p ≤ α) = α exactly."""
    rng = np.random.default_rng(1)
    draws = rng.normal(2.0, 0.5, (20000, 21))
    p = stats.t_tail_p(draws[:, 0], draws[:, 1:])
    for alpha in (0.01, 0.05, 0.2):
        assert np.mean(p <= alpha) == pytest.approx(alpha, abs=0.006)


def test_normality_fallback_and_choice():
    rng = np.random.default_rng(2)
    assert stats.normality_p(rng.exponential(1.0, (1, 60)) ** 3)[0] < 0.01
    assert np.isnan(stats.normality_p(np.ones((1, 20)))[0])
    assert decisions.choose_test("auto", 20, 6) == "parametric"
    assert decisions.choose_test("auto", 119, 6) == "empirical"  # Holm can reach α without a model
    assert decisions.choose_test("auto", 5, 6) == "empirical"  # too few sets to fit or check a distribution
    assert decisions.choose_test("empirical", 20, 6) == "empirical"
    with pytest.raises(SparcomError, match="unknown test"):
        decisions.choose_test("bayes", 20, 6)


def synthetic(seed: int, r: int, effect, per: int = 12, noise: float = 0.3, skew: bool = False):
    rng = np.random.default_rng(seed)
    labels = [c for c in CATS for _ in range(per)]
    n = len(labels)
    tokens = rng.integers(3, 120, n)
    base = rng.uniform(0.8, 2.5, n) * tokens
    col = np.array([CATS.index(c) for c in labels])
    shift = np.array([[effect(a, c) for c in range(6)] for a in range(6)])
    selected = base[None] + (shift[:, col] + rng.normal(0, noise, (6, n))) * tokens
    per_set = rng.exponential(1.0, (6, r, 1)) ** 3 if skew else 0.0  # a whole random set is sometimes very harmful
    random = base[None, None] + (0.05 + per_set + rng.normal(0, noise, (6, r, n))) * tokens
    return base, selected, random, tokens, labels


def test_twenty_random_sets_can_show_specificity_with_the_parametric_test():
    base, selected, random, tokens, labels = synthetic(0, 20, lambda a, c: 0.8 if a == c else 0.05)
    empirical = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    assert all(verdict_text(t).startswith("not enough random sets") for t in empirical.tests)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50, test="auto")
    assert res.test_used == "parametric" and res.summary()["test"]["used"] == "parametric"
    for t in res.tests:
        assert t.damage.test == t.specificity.test == "parametric"
        assert t.specificity.p == t.specificity.p_parametric < 1e-4
        assert t.specificity.p_empirical == pytest.approx(1 / 21)
        assert verdict_text(t).startswith("specific:") and "parametric" in verdict_text(t), verdict_text(t)


def test_parametric_null_keeps_the_family_error_near_alpha():
    hits = 0
    for seed in range(40):
        base, selected, random, tokens, labels = synthetic(200 + seed, 20, lambda a, c: 0.05, per=6)
        res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=10, test="parametric")
        hits += any(stats.significant(t.damage.p_holm) or stats.significant(t.specificity.p_holm) for t in res.tests)
    assert hits <= 8  # two families at α = 0.05 each: about 4 expected of 40


def test_heavy_tailed_random_sets_fall_back_to_the_empirical_p():
    base, selected, random, tokens, labels = synthetic(3, 40, lambda a, c: 3.0 if a == c else 0.05, skew=True)
    res = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=10, test="parametric")
    fallen = [t for t in res.tests if t.damage.test == "empirical"]
    assert fallen, [t.damage.normality_p for t in res.tests]
    for t in fallen:
        assert t.damage.normality_p < decisions.NORMALITY_LEVEL and "Shapiro" in t.damage.test_note
        assert t.damage.p == t.damage.p_empirical
        assert verdict_text(t).startswith("not enough random sets") and "Shapiro" in verdict_text(t)
    # The verdict above checks no p_holm and switches test per category (review §2). The rule that replaces it
    # (sparcom.causal.row_aware) has one test for the whole family: with 40 random sets no p_holm can reach α
    # (6 / 41 > 0.05), so every category is "not enough evidence" for that reason, and the claim counted from
    # the same stored decisions says so.
    new = decide(base, selected, random, tokens, labels, CATS)
    assert all(d.outcome is Outcome.NOT_ENOUGH and "need R ≥ 119" in d.reason for d in new.damage)
    assert new.claims["damage"].outcome == "not enough evidence" and new.claims["damage"].holds == 0
    with pytest.raises(SparcomError, match="at least 10 random sets"):
        st.causal_statistics(base, selected, random[:, :5], tokens, labels, CATS, replicates=10, test="parametric")


def test_verdict_labels():
    def label(damage, spec, scaled_low=1.0, reason="", min_p=0.0):
        return verdict_label(decisions.decide(damage, spec, scaled_low, reason, 0.05, min_p, None))

    assert label(0.01, 0.01, scaled_low=-0.1) == "specific (caution)"
    assert label(0.01, 0.01) == "specific"
    assert label(0.01, 0.2) == "critical but not specific"
    assert label(0.2, 0.01) == "selective but not critical"
    assert label(0.2, 0.2) == "no effect beyond random"
    assert label(0.01, 0.01, min_p=6 / 21) == "not enough random sets"
    assert label(0.01, 0.01, reason="its set is empty") == "not testable"


def test_decide_follows_the_stated_rule():
    """decide() against a direct reading of VERDICT_RULE on a grid of adjusted p-values (NaN included)."""
    grid = [0.001, 0.05, 0.05 * (1 + 1e-12), 0.051, 1.0, float("nan")]
    for damage in grid:
        for spec in grid:
            for min_p in (0.0, 6 / 120, 6 / 21):
                d = decisions.decide(damage, spec, 0.5, "", 0.05, min_p, 119)
                sig_d, sig_s = damage <= 0.05 * (1 + 1e-9), spec <= 0.05 * (1 + 1e-9)  # NaN compares False
                assert (d.damage_significant, d.specificity_significant) == (sig_d, sig_s)
                expected = ("not enough random sets" if min_p > 0.05 * (1 + 1e-9) else
                            "specific" if sig_d and sig_s else "critical but not specific" if sig_d else
                            "selective but not critical" if sig_s else "no effect beyond random")
                assert d.verdict.value == expected


# ------------------------------------------------------------------------------------------- the scored-token cap


def test_capped_scoring_is_the_first_tokens_of_full_scoring():
    model = tiny_model("llama")
    rows = [InstructionRow(f"t-{i}", c, "ai", "tests", ins, text, out, "CC0-1.0")
            for i, (c, ins, text, out) in enumerate(ROWS)]
    tokenizer = tiny_tokenizer()
    full = encode_scored(rows, tokenizer, "chat")
    capped = encode_scored(rows, tokenizer, "chat", max_scored=3)
    for a, b in zip(full, capped, strict=True):
        assert b.tokens == min(3, a.tokens) and b.input_ids == a.input_ids[:len(b)]
    # direct: per-token losses of the full sequences, summed over each row's first three scored tokens
    with torch.no_grad():
        for a, b in zip(full, capped, strict=True):
            logprobs = torch.log_softmax(model(torch.tensor([a.input_ids])).logits[0].double(), dim=-1)
            positions = [t for t in range(1, len(a)) if a.scored[t]][:3]
            expected = -sum(float(logprobs[t - 1, a.input_ids[t]]) for t in positions)
            sums, counts = example_nll(model, [b], [[0]], pad_id=0)
            assert counts[0] == len(positions) and sums[0] == pytest.approx(expected, rel=1e-5)
    assert cap_scored(full[0], 10_000) is full[0]
    with pytest.raises(SparcomError, match="at least 1"):
        encode_scored(rows, tokenizer, "chat", max_scored=0)
    plan = length_batches([len(e) for e in capped], 4)
    assert sorted(i for b in plan for i in b) == list(range(len(capped)))


def test_claim_rows_read_the_verdicts():
    from sparcom.analysis.claims import causal_from_tests
    from sparcom.report.claims import verdict_words

    def rows(effect, r, test="auto", seed=7):
        base, selected, random, tokens, labels = synthetic(seed, r, effect)
        stats = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50, test=test)
        return {c.claim: c for c in causal_from_tests(stats.tests, "neurons", stats.level)}

    specific = rows(lambda a, c: 0.8 if a == c else 0.05, 20)
    assert specific["critical role"].verdict == specific["specificity"].verdict == "holds"
    assert specific["specificity"].significant == 6 and specific["specificity"].evidence["test"] == "parametric"
    assert specific["specificity"].low < specific["specificity"].number < specific["specificity"].high
    general = [rows(lambda a, c: 2.5, 20, seed=seed) for seed in range(8, 12)]
    assert all(g["critical role"].verdict == "holds" for g in general)
    # specificity of a general set is null: across 4 data sets × 6 categories at most one chance hit after Holm
    assert sum(g["specificity"].significant for g in general) <= 1
    assert any(g["specificity"].verdict == "does not hold" for g in general)
    assert rows(lambda a, c: 0.8 if a == c else 0.05, 20, "empirical")["specificity"].verdict == \
        "not enough evidence"
    partial = rows(lambda a, c: 0.8 if a == c and a < 2 else 0.05, 20)
    assert verdict_words(partial["specificity"]) == "partly (2 of 6 categories)"
    assert [c.verdict for c in causal_from_tests([], "neurons")] == ["not measured", "not measured"]
