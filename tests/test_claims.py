"""The verdicts of "Do the paper's claims hold here?" follow their stated rules on hand-made summaries."""

from __future__ import annotations

import pytest

from sparcom.report.claims import causal_rows, claims_table, generality_row, uniqueness_row


def identify_summary(general=5, selected=50, unique=10, interval=(2, 8), decoding=(0.6, 0.17, 0.01),
                     cross=(0.5, 0.2)) -> dict:
    counts = {"general": general, "selected_any": selected, "unique_total": unique,
              "shares": {"general_share": general / selected, "unique_share": unique / selected}}
    if interval is not None:
        counts["bootstrap"] = {"intervals": {"general": {"estimate": general, "low": interval[0], "high": interval[1]},
                                             "general_share": {"estimate": general / selected,
                                                               "low": interval[0] / selected,
                                                               "high": interval[1] / selected}}}
    headline = {"chance": 1 / 6}
    if decoding is not None:
        headline["set_score"] = {"accuracy": decoding[0], "random_mean": decoding[1], "p_value": decoding[2],
                                 "ci_low": decoding[0] - 0.1, "ci_high": decoding[0] + 0.1}
    if cross is not None:
        headline.update(cross_source_within=cross[0], cross_source_across=cross[1])
    return {"kinds": {"neuron": counts}, "validity": {"neuron": {"headline": headline}}}


@pytest.mark.parametrize(("interval", "general", "verdict"), [
    ((2, 8), 5, "holds"),  # the interval of the general count excludes 0
    ((0, 3), 1, "not enough evidence"),  # it includes 0
    ((0, 0), 0, "does not hold"),  # no general component in any resample
    (None, 3, "not enough evidence"),  # no interval at all
    (None, 0, "does not hold"),
])
def test_generality_verdict_follows_the_general_count_interval(interval, general, verdict):
    row = generality_row(identify_summary(general=general, interval=interval))
    assert row["verdict"] == verdict
    assert row["number"] == pytest.approx(general / 50)


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
    assert uniqueness_row(identify_summary(unique=unique, decoding=decoding, cross=cross))["verdict"] == verdict


def ablate_summary(holm_damage, holm_spec, random_sets=20) -> dict:
    tests = []
    for i, (d, s) in enumerate(zip(holm_damage, holm_spec, strict=True)):
        tests.append({"ablated": f"c{i}", "damage_p_holm": d, "specificity_p_holm": s, "damage_excess": 1.0 + i,
                      "damage_excess_low": 0.5, "damage_excess_high": 2.0 + i, "specificity_excess": 0.1 * i,
                      "specificity_excess_low": -0.2, "specificity_excess_high": 0.3, "damage_test": "parametric",
                      "specificity_test": "parametric", "verdict": "x", "reason": None})
    return {"targets": {"neurons": {"statistics": {"tests": tests, "random_sets": random_sets,
                                                   "power": {"alpha": 0.05}}}}}


def test_causal_rows_count_categories_significant_after_holm():
    rows = {r["claim"]: r for r in causal_rows(ablate_summary([0.01, 0.02, 0.001], [0.5, 0.01, 0.9]), "neurons")}
    assert rows["critical role"]["verdict"] == "holds"
    assert rows["specificity"]["verdict"] == "partly (1 of 3 categories)"
    assert rows["critical role"]["number"] == pytest.approx(2.0)  # median of 1, 2, 3


def test_claims_table_marks_unmeasured_causal_claims_with_the_reason():
    rows = claims_table(identify_summary(), None, not_run="causal check not run in `make demo`")
    assert [r["claim"] for r in rows] == ["generality", "uniqueness", "critical role", "specificity"]
    assert [r["verdict"] for r in rows[2:]] == ["not measured", "not measured"]
    assert "make demo" in rows[2]["text"]
    assert claims_table({}, None)[0]["verdict"] == "not measured"


def test_balanced_rows_share_each_category_over_its_sources_in_file_order():
    from sparcom.data.schema import InstructionRow, balanced_rows

    def row(i, category, source):
        return InstructionRow(f"r{i}", category, source, "o", "x", "", "y", "l")

    rows = [row(i, "a", "ai") for i in range(5)] + [row(10 + i, "a", "human") for i in range(5)] + [
        row(20 + i, "b", "ai") for i in range(3)]
    kept = balanced_rows(rows, 3)
    # category a: 2 AI (the first source seen takes the remainder) + 1 human; category b has one source: 3 AI
    assert [r.id for r in kept] == ["r0", "r1", "r10", "r20", "r21", "r22"]
