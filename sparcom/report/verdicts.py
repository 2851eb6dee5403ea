"""The causal check's stored decisions in words (the only place they become sentences; the rule that made them is
:func:`sparcom.causal.decisions.decide_target`, stored with each decision)."""

from __future__ import annotations

import math

from sparcom.artifacts.causal import Contrast, Decision, Outcome, TestRow


def verdict_label(decision: Decision) -> str:
    """The short verdict: both claims of the category in one phrase."""
    return decision.verdict.value


def _p(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def claim_text(name: str, contrast: Contrast, outcome: Outcome, reason: str) -> str:
    """One claim of one category: its outcome, then the numbers that decided it (test, excess, row SE, p, p_holm)."""
    numbers = (f"excess {contrast.excess:+.3g} nats/token over the random sets' mean (row SE {_p(contrast.se_rows)}), "
               f"p = {_p(contrast.p)}, p_holm = {_p(contrast.p_holm)}, {contrast.test}")
    return f"{name} {outcome.value} ({numbers})" + (f": {reason}" if reason else "")


def verdict_text(row: TestRow) -> str:
    """One line in plain words for one category's decisions, each claim with its test and numbers."""
    d = row.decision
    if d.reason:
        return f"{d.verdict.value}: {d.reason}"
    text = (f"{d.verdict.value} — " + claim_text("critical role", row.damage, d.damage, d.damage_reason) + "; "
            + claim_text("specificity", row.specificity, d.specificity, d.specificity_reason))
    if d.specificity is Outcome.HOLDS and not row.scaled_specificity_low > 0:
        text += ("; caution: not beyond what the set's damage to the others predicts in proportion (the interval of "
                 "own − ρ · others reaches 0 or is undefined; descriptive, not part of the decision)")
    return text


def outcomes_text(row: TestRow) -> str:
    """Both claims' outcomes without their numbers, for a table whose columns show the numbers."""
    d = row.decision
    if d.reason:
        return d.verdict.value
    return f"{d.verdict.value} (critical role {d.damage.value}; specificity {d.specificity.value})"


def shared_reasons(tests: list[TestRow], label=str) -> list[str]:
    """Each distinct reason behind an undecided claim, once, with the categories (``label``-ed) and claims it
    applies to: what a table of outcomes leaves out."""
    found: dict[str, list[str]] = {}
    for t in tests:
        d = t.decision
        pairs = [("", d.reason)] if d.reason else [("critical role", d.damage_reason),
                                                    ("specificity", d.specificity_reason)]
        for claim, reason in pairs:
            if reason:
                found.setdefault(reason, []).append(f"{label(t.ablated)}{f' {claim}' if claim else ''}")
    return [f"{', '.join(where)}: {reason}" for reason, where in found.items()]


def specific_headline(tests: list[TestRow]) -> tuple[int, int]:
    """(categories where both claims hold, categories tested): the one headline count of a causal check."""
    return (sum(1 for t in tests if t.decision.damage_significant and t.decision.specificity_significant),
            sum(1 for t in tests if t.tested))


__all__ = ["claim_text", "outcomes_text", "shared_reasons", "specific_headline", "verdict_label", "verdict_text"]
