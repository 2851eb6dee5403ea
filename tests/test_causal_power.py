"""Power and labels of the causal check's decision: how many random sets a specific set needs to be called
specific, the family error under the null, the verdict phrase of every pair of claim outcomes, the claims read
from the stored decisions; and the scored-token cap against full scoring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from causal_tiny import one_thread  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer

from sparcom.artifacts.causal import Outcome, Verdict, verdict_of
from sparcom.causal import statistics as st
from sparcom.causal.nll import cap_scored, encode_scored
from sparcom.causal.scoring import example_nll
from sparcom.data.batching import length_batches
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.report.verdicts import verdict_text

CATS = ["cls", "code", "qa", "gen", "math", "sum"]


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


def test_a_specific_set_needs_enough_random_sets_to_be_called_specific():
    """20 random sets: no Holm-adjusted p over 6 categories can reach α (6 / 21), so a clearly specific set is "not
    enough evidence" per category, never "does not hold" — while the pooled test, whose smallest p is 1 / 21, decides
    the claim on average; with 119 it beats every random set but row noise keeps p_holm just above α
    (6 · 0.00837): still "not enough evidence", with the number needed; with 239 it is specific."""
    base, selected, random, tokens, labels = synthetic(0, 20, lambda a, c: 0.8 if a == c else 0.05)
    few = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    for t in few.tests:
        assert t.decision.verdict is Verdict.NOT_ENOUGH and "need R ≥ 119" in t.decision.specificity_reason
        assert verdict_text(t).startswith("not enough evidence — ")
    assert few.claims["specificity"].outcome == "holds on average" and few.claims["specificity"].holds == 0
    assert few.claims["specificity"].pooled.p <= 0.05
    base, selected, random, tokens, labels = synthetic(0, 119, lambda a, c: 0.8 if a == c else 0.05)
    edge = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    for t in edge.tests:
        assert t.specificity.p_empirical == pytest.approx(1 / 120) and t.specificity.p_holm > 0.05
        assert t.decision.specificity is Outcome.NOT_ENOUGH, verdict_text(t)
        assert "beats all 119 random sets" in t.decision.specificity_reason and "need about R ≥" in verdict_text(t)
    base, selected, random, tokens, labels = synthetic(0, 239, lambda a, c: 0.8 if a == c else 0.05)
    enough = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
    assert [t.decision.verdict for t in enough.tests] == [Verdict.SPECIFIC] * 6
    assert enough.claims["specificity"].outcome == enough.claims["damage"].outcome == "holds"


def test_null_sets_keep_the_family_error_near_alpha():
    """Selected sets that are one more random set (skewed: a whole random set is sometimes very harmful): the
    family-wise rate of any claim holding stays near α over 40 data sets (two families: about 4 expected)."""
    hits = 0
    for seed in range(40):
        base, selected, random, tokens, labels = synthetic(200 + seed, 119, lambda a, c: 0.05, per=6, skew=True)
        rng = np.random.default_rng(seed)
        swap = rng.integers(0, 119, 6)  # the selected set is drawn like a random set, skew included
        selected = random[np.arange(6), swap]
        random = np.delete(random, swap[0], axis=1)
        tests, _ = st.decide(base, selected, random, tokens, labels, CATS)
        hits += any(t.decision.damage_significant or t.decision.specificity_significant for t in tests)
    assert hits <= 8


def test_verdict_phrase_of_every_pair_of_outcomes():
    expected = {("holds", "holds"): "specific", ("holds", "does not hold"): "critical but not specific",
                ("holds", "not enough evidence"): "critical, specificity undecided",
                ("does not hold", "holds"): "selective but not critical",
                ("not enough evidence", "holds"): "selective, damage undecided",
                ("does not hold", "does not hold"): "no effect beyond random"}
    for damage, spec in itertools.product(Outcome, Outcome):
        want = expected.get((damage.value, spec.value), "not enough evidence")
        assert verdict_of(damage, spec).value == want, (damage, spec)


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


def test_claim_rows_read_the_stored_decisions():
    from sparcom.analysis.claims import causal_from_decisions
    from sparcom.report.claims import verdict_words

    def rows(effect, r, seed=7):
        base, selected, random, tokens, labels = synthetic(seed, r, effect)
        stats = st.causal_statistics(base, selected, random, tokens, labels, CATS, replicates=50)
        return {c.claim: c for c in causal_from_decisions(stats.tests, stats.claims, "neurons", stats.level)}

    specific = rows(lambda a, c: 0.8 if a == c else 0.05, 239)
    assert specific["critical role"].verdict == specific["specificity"].verdict == "holds"
    assert specific["specificity"].significant == 6
    assert specific["specificity"].evidence["test"] == "row-aware empirical"
    assert specific["specificity"].low < specific["specificity"].number < specific["specificity"].high
    general = [rows(lambda a, c: 2.5, 239, seed=seed) for seed in range(8, 12)]
    assert all(g["critical role"].verdict == "holds" for g in general)
    # specificity of a general set is null: across 4 data sets × 6 categories at most one chance hit after Holm
    assert sum(g["specificity"].significant for g in general) <= 1
    assert any(g["specificity"].verdict == "does not hold" for g in general)
    assert rows(lambda a, c: 0.8 if a == c else 0.05, 20)["specificity"].verdict == "holds on average"
    partial = rows(lambda a, c: 0.8 if a == c and a < 2 else 0.05, 239)
    assert verdict_words(partial["specificity"]) == "partly (2 of 6 categories)"
