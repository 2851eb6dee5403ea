"""The verdicts of "Do the paper's claims hold here?" follow their stated rules on hand-made summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparcom.analysis.claims import causal_from_decisions, claims_table, generality, uniqueness
from sparcom.artifacts.causal import Contrast, Decision, Outcome, TestRow, verdict_of
from sparcom.artifacts.summaries import (
    Bootstrap,
    Decoding,
    IdentifySummary,
    Interval,
    KindSets,
    KindValidity,
    ValidityHeadline,
)
from sparcom.causal.decisions import RULE, TEST_NAME, claim_decision
from sparcom.report.claims import claim_text, verdict_words

NAN = float("nan")


def identify_summary(general=5, selected=50, unique=10, interval=(2, 8), decoding=(0.6, 0.17, 0.01),
                     cross=(0.5, 0.2)) -> IdentifySummary:
    boot = None
    if interval is not None:
        boot = Bootstrap(True, None, 20, "resampled", 0.95, {
            "general": Interval(general, interval[0], interval[1]),
            "general_share": Interval(general / selected, interval[0] / selected, interval[1] / selected)})
    sets = KindSets(100, 2, {}, selected, general, {}, {}, unique, 0, {},
                    {"general_share": general / selected, "unique_share": unique / selected}, {}, None, boot)
    decoders = {} if decoding is None else {
        "set_score": Decoding(decoding[0], decoding[0] - 0.1, decoding[0] + 0.1, decoding[1], decoding[2])}
    within, across = cross if cross is not None else (NAN, NAN)
    headline = ValidityHeadline(decoders, NAN, 1 / 6, NAN, within, across)
    return IdentifySummary(Path("identify"), None, None, {"neuron": sets}, {"neuron": KindValidity(headline, {})},
                           None, [])


@pytest.mark.parametrize(("interval", "general", "verdict"), [
    ((2, 8), 5, "holds"),  # the interval of the general count excludes 0
    ((0, 3), 1, "not enough evidence"),  # it includes 0
    ((0, 0), 0, "does not hold"),  # no general component in any resample
    (None, 3, "not enough evidence"),  # no interval at all
    (None, 0, "does not hold"),
])
def test_generality_verdict_follows_the_general_count_interval(interval, general, verdict):
    claim = generality(identify_summary(general=general, interval=interval))
    assert claim.verdict == verdict
    assert claim.number == pytest.approx(general / 50)


@pytest.mark.parametrize(("unique", "decoding", "cross", "verdict"), [
    (10, (0.6, 0.17, 0.01), (0.5, 0.2), "holds"),
    (10, (0.6, 0.17, 0.01), None, "holds"),  # no source halves: decoding decides
    (10, (0.6, 0.17, 0.2), (0.5, 0.2), "does not hold"),  # not better than random sets at α = 0.05
    (10, (0.15, 0.17, 0.01), (0.5, 0.2), "does not hold"),  # below the random mean
    (10, (0.6, 0.17, 0.01), (0.2, 0.3), "does not hold"),  # sets agree less within a category than across
    (0, (0.6, 0.17, 0.01), (0.5, 0.2), "does not hold"),  # nothing unique
    (10, None, None, "not enough evidence"),  # no held-out evidence
])
def test_uniqueness_verdict_needs_unique_sets_that_decode_and_survive_the_source(unique, decoding, cross, verdict):
    assert uniqueness(identify_summary(unique=unique, decoding=decoding, cross=cross)).verdict == verdict


def contrast(p_holm: float, excess: float, low: float, high: float) -> Contrast:
    return Contrast(excess, low, high, 0.0, 1.0, excess, low, high, NAN, p_holm, p_holm, TEST_NAME, p_holm, 0.1,
                    7.0)


def outcome_of(p_holm: float) -> Outcome:
    return Outcome.HOLDS if p_holm <= 0.05 else Outcome.DOES_NOT_HOLD


def test_rows(holm_damage, holm_spec, random_sets=20) -> list[TestRow]:
    rows = []
    for i, (d, s) in enumerate(zip(holm_damage, holm_spec, strict=True)):
        dmg, spec = outcome_of(d), outcome_of(s)
        decision = Decision(verdict_of(dmg, spec), dmg, spec, "", "", 0.05, 3 / 21, 59, RULE)
        rows.append(TestRow(f"c{i}", 10, random_sets, contrast(d, 1.0 + i, 0.5, 2.0 + i), 0.0,
                            contrast(s, 0.1 * i, -0.2, 0.3), NAN, NAN, NAN, NAN, decision))
    return rows


test_rows.__test__ = False  # a builder, not a test


def test_causal_claims_copy_the_stored_claim_decisions():
    rows = test_rows([0.01, 0.02, 0.001], [0.5, 0.01, 0.9])
    stored = {claim: claim_decision(claim, [t.decision.outcome(claim) for t in rows], [t.ablated for t in rows])
              for claim in ("damage", "specificity")}
    claims = {c.claim: c for c in causal_from_decisions(rows, stored, "neurons")}
    assert claims["critical role"].verdict == "holds"
    assert verdict_words(claims["specificity"]) == "partly (1 of 3 categories)"
    assert claims["specificity"].evidence["significant_categories"] == ["c1"]
    assert claims["critical role"].number == pytest.approx(2.0)  # median of 1, 2, 3
    assert claims["critical role"].evidence["test"] == TEST_NAME and "row-aware" in claims["specificity"].evidence["rule"]


@pytest.mark.parametrize(("outcomes", "expected"), [
    (["holds", "holds"], "holds"),
    (["holds", "does not hold"], "partly (1 of 2 categories)"),
    (["holds", "not enough evidence"], "partly (1 of 2 categories)"),  # not enough evidence never overrides a pass
    (["does not hold", "not enough evidence"], "not enough evidence"),
    (["does not hold", "does not hold"], "does not hold"),
])
def test_claim_decision_counts_every_category(outcomes, expected):
    decision = claim_decision("specificity", [Outcome(o) for o in outcomes], ["a", "b"])
    assert decision.outcome == expected and decision.categories == 2
    assert decision.holds == outcomes.count("holds") and decision.not_enough == outcomes.count("not enough evidence")


def test_claims_table_marks_unmeasured_causal_claims_with_the_reason():
    claims = claims_table(identify_summary(), None, not_run="causal check not run in `make demo`")
    assert [c.claim for c in claims] == ["generality", "uniqueness", "critical role", "specificity"]
    assert [c.verdict for c in claims[2:]] == ["not measured", "not measured"]
    assert "make demo" in claim_text(claims[2])
    assert claims_table(None, None)[0].verdict == "not measured"


def test_balanced_rows_share_each_category_over_its_sources_in_file_order():
    from sparcom.data.schema import InstructionRow, balanced_rows

    def row(i, category, source):
        return InstructionRow(f"r{i}", category, source, "o", "x", "", "y", "l")

    rows = [row(i, "a", "ai") for i in range(5)] + [row(10 + i, "a", "human") for i in range(5)] + [
        row(20 + i, "b", "ai") for i in range(3)]
    kept = balanced_rows(rows, 3)
    # category a: 2 AI (the first source seen takes the remainder) + 1 human; category b has one source: 3 AI
    assert [r.id for r in kept] == ["r0", "r1", "r10", "r20", "r21", "r22"]
