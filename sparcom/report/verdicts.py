"""The causal check's stored decisions in words (the only place they become sentences; the rule that made them is
:func:`sparcom.causal.decisions.decide`)."""

from __future__ import annotations

import math

from sparcom.artifacts.causal import Decision, TestRow, Verdict


def verdict_label(decision: Decision) -> str:
    """The short verdict, "specific (caution)" when the proportion caution applies."""
    label = decision.verdict.value
    return f"{label} (caution)" if decision.caution else label


def _p(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def verdict_text(row: TestRow) -> str:
    """One line in plain words for one category's decision; each adjusted p is followed by its test."""
    decision = row.decision
    damage, spec = row.damage, row.specificity
    pd, ps = f"{_p(damage.p_holm)}, {damage.test}", f"{_p(spec.p_holm)}, {spec.test}"
    if decision.verdict is Verdict.NOT_TESTABLE:
        return f"not testable: {decision.reason}"
    if decision.verdict is Verdict.TOO_FEW_RANDOM_SETS:
        need = f" (need at least {decision.random_sets_needed})" if decision.random_sets_needed is not None else ""
        notes = "; ".join(n for n in (damage.test_note, spec.test_note) if n)
        return (f"not enough random sets: with {row.random_sets}{need} p_holm cannot go below "
                f"{decision.min_p_holm:.3g}; unadjusted damage p = {_p(damage.p)}, specificity p = {_p(spec.p)}"
                + (f" ({notes})" if notes else ""))
    if decision.verdict is Verdict.SPECIFIC:
        text = (f"specific: own damage exceeds random sets (p_holm = {pd}) and exceeds the damage to the other "
                f"categories by more than random sets do (p_holm = {ps})")
        if decision.caution:
            text += ("; caution: not beyond what the set's damage to the others predicts in proportion "
                     "(scaled specificity interval reaches 0 or is undefined)")
        return text
    if decision.verdict is Verdict.CRITICAL:
        return (f"critical but not specific: own damage exceeds random sets (p_holm = {pd}), but not the damage to "
                f"the other categories by more than random sets do (p_holm = {ps})")
    if decision.verdict is Verdict.SELECTIVE:
        return (f"selective but not critical: own-minus-others exceeds random sets (p_holm = {ps}), own damage "
                f"alone does not (p_holm = {pd})")
    return f"no effect beyond random (damage p_holm = {pd}; specificity p_holm = {ps})"


def specific_headline(tests: list[TestRow]) -> tuple[int, int]:
    """(categories judged specific, categories tested): the one headline count of a causal check."""
    return (sum(1 for t in tests if t.decision.verdict is Verdict.SPECIFIC), sum(1 for t in tests if t.tested))


__all__ = ["specific_headline", "verdict_label", "verdict_text"]
