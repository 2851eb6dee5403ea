"""The verdicts of "Do the paper's claims hold here?" follow their stated rules on hand-made summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparcom.analysis.claims import causal_from_decisions, claims_table, generality, uniqueness
from sparcom.artifacts.causal import Contrast, Decision, Outcome, TestRow, verdict_of
from sparcom.artifacts.summaries import (
    ClaimNullsRecord,
    GeneralityNullRecord,
    IdentifySummary,
    Interval,
    KindSets,
    KindValidity,
    UniquenessRecord,
    ValidityHeadline,
)
from sparcom.causal.decisions import RULE, TEST_NAME, claim_decision
from sparcom.report.claims import claim_text, verdict_words

NAN = float("nan")


def identify_summary(general=5, selected=50, unique=10, generality_decision="holds", uniqueness_decision="holds",
                     notes=()) -> IdentifySummary:
    nulls = None
    if generality_decision is not None or uniqueness_decision is not None or notes:
        general_record = None if generality_decision is None else GeneralityNullRecord(
            0.01, general, general - 1, 1, Interval(0.2, 0.1, 0.3), 0.0, generality_decision, "share vs baseline")
        unique_record = None if uniqueness_decision is None else UniquenessRecord(
            0.10, Interval(0.15, 0.12, 0.18), Interval(0.6, 0.5, 0.7), 0.17, 0.0099, 100, uniqueness_decision,
            "margin and decoding")
        nulls = ClaimNullsRecord(general_record, unique_record, list(notes))
    sets = KindSets(100, 2, {}, selected, general, {}, {}, unique, 0, {},
                    {"general_share": general / selected, "unique_share": unique / selected}, {}, None, None,
                    claim_nulls=nulls)
    headline = ValidityHeadline({}, NAN, 1 / 6, NAN, NAN, NAN)
    return IdentifySummary(Path("identify"), None, None, {"neuron": sets}, {"neuron": KindValidity(headline, {})},
                           None, [])


@pytest.mark.parametrize("decision", ["holds", "does not hold", "not enough evidence"])
def test_set_claims_copy_the_stored_null_decisions(decision):
    summary = identify_summary(generality_decision=decision, uniqueness_decision=decision)
    general, unique = generality(summary), uniqueness(summary)
    assert general.verdict == unique.verdict == decision
    assert (general.number, general.low, general.high) == (0.2, 0.1, 0.3)  # the instruction-general share
    assert general.evidence["instruction_general"] == 1 and general.evidence["reference_top"] == 4
    assert (unique.low, unique.high) == (0.12, 0.18) and unique.number == pytest.approx(10 / 50)
    assert "1 of them not top 1.0%" in claim_text(general) and "vs margin 0.10" in claim_text(unique)


def test_without_the_nulls_the_set_claims_are_not_enough_evidence_and_say_how():
    """The old rules (general count's interval above 0, decoding with whole sets) could hardly fail; without the
    nulls the claims table does not decide."""
    summary = identify_summary(generality_decision=None, uniqueness_decision=None)
    general, unique = generality(summary), uniqueness(summary)
    assert general.verdict == unique.verdict == "not enough evidence"
    assert "--reference" in claim_text(general) and "--group-by instruction" in claim_text(unique)
    noted = generality(identify_summary(generality_decision=None, notes=["the generality null applies to x"]))
    assert "applies to x" in claim_text(noted)
    empty = identify_summary(general=0, unique=0, generality_decision=None, uniqueness_decision=None)
    assert generality(empty).verdict == uniqueness(empty).verdict == "does not hold"  # nothing general or unique


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
    how = {"intervention": "mean", "control": "frequency"}
    said = {c.claim: c for c in causal_from_decisions(rows, stored, "neurons", how=how)}
    assert claim_text(said["specificity"]).startswith("mean ablation, frequency-matched random sets; ")
    assert "ablation" not in claim_text(claims["specificity"])  # older stored claims: nothing invented
    shared = {c.claim: c for c in causal_from_decisions(rows, stored, "neurons", how={**how, "shared": 0.8})}
    assert claim_text(shared["specificity"]).startswith(
        "mean ablation, frequency-matched random sets sharing 80.0% of the set's members on average; ")


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
