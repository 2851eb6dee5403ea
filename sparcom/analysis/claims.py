""""Do the paper's claims hold here?": one decision per claim, each with the numbers behind it, from typed results.

The paper (arXiv 2505.21191) makes four claims about the sets its rule selects; each is judged from sparcom's own
outputs, never from a number typed in:

- **generality**: some components are general for *instructions* — selected for every category and not just as
  top-frequent on a reference corpus that is not instructions (:mod:`sparcom.analysis.generality`, needs
  ``identify --reference``). Number: the share of the general set that is instruction-general, with its
  subsampling interval; holds when that interval lies above the noise baseline, does not hold when at or below it
  (the general components are frequent components), otherwise not enough evidence. Without a reference run: not
  enough evidence, saying how to get it (the old rule — the general count's interval excludes 0 — cannot fail).
- **uniqueness**: each category has components of its own that carry it. Number: the unique share; decided by
  :mod:`sparcom.analysis.uniqueness`: the within − across cross-source agreement above a margin (with its
  subsampling interval) and held-out decoding by the unique members alone beating random sets (needs counts per
  instruction; otherwise not enough evidence).
- **critical role** and **specificity**: the causal check's stored claim decisions
  (:func:`sparcom.causal.decisions.decide_target`: the row-aware empirical test in a fixed sequence — the pooled
  test of all categories together, then Holm over the categories — one α), copied, never recomputed: holds when
  every category holds, partly when some do, holds on average when the pooled test holds and no single category
  is resolved, else the pooled test's outcome (does not hold / not enough evidence).

The words are rendered by :mod:`sparcom.report.claims`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from sparcom.analysis.nulls import NO_REFERENCE
from sparcom.artifacts.causal import CausalSummary, ClaimDecision, TestRow
from sparcom.artifacts.fields import Fields
from sparcom.artifacts.summaries import IdentifySummary

CLAIMS = ("generality", "uniqueness", "critical role", "specificity")
#: The causal claims: name, the test they read, and what the number is.
CAUSAL_CLAIMS = (("critical role", "damage", "own ΔNLL beyond matched random sets"),
                 ("specificity", "specificity", "own ΔNLL minus the mean on the other categories, beyond random "
                                                "sets"))


class ClaimVerdict(StrEnum):
    HOLDS = "holds"
    PARTLY = "partly"
    ON_AVERAGE = "holds on average"
    DOES_NOT_HOLD = "does not hold"
    NOT_ENOUGH_EVIDENCE = "not enough evidence"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Claim:
    """One claim's decision and the numbers behind it (``evidence``: named numbers and facts, JSON-ready)."""

    claim: str
    verdict: ClaimVerdict
    number: float | None = None
    low: float | None = None
    high: float | None = None
    #: Causal claims: categories significant after Holm, of the categories tested.
    significant: int | None = None
    categories: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["verdict"] = self.verdict.value
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}

    @classmethod
    def read(cls, f: Fields) -> Claim:
        return cls(f.text("claim"), f.choice("verdict", ClaimVerdict), f.opt_number("number"), f.opt_number("low"), f.opt_number("high"),
                   f.opt_integer("significant"), f.opt_integer("categories"), dict(f.obj("evidence").data))


def not_measured(claim: str, why: str) -> Claim:
    return Claim(claim, ClaimVerdict.NOT_MEASURED, evidence={"why": why})


#: The nulls' decisions (:mod:`sparcom.analysis.generality`, :mod:`sparcom.analysis.uniqueness`) → the table's.
_NULL_VERDICTS = {"holds": ClaimVerdict.HOLDS, "does not hold": ClaimVerdict.DOES_NOT_HOLD,
                  "not enough evidence": ClaimVerdict.NOT_ENOUGH_EVIDENCE}


def _kind(identify: IdentifySummary | None, kind: str):
    return identify.kinds.get(kind) if identify else None


def generality(identify: IdentifySummary | None, kind: str = "neuron") -> Claim:
    """The generality claim from the identify summary of the paper's rule: decided by the reference-corpus null
    (general components that are *not* top-ε on text that is not instructions), stored with the selection."""
    counts = _kind(identify, kind)
    if counts is None:
        return not_measured("generality", "no identify output for this kind")
    null = counts.claim_nulls.generality if counts.claim_nulls else None
    evidence: dict[str, Any] = {"general": counts.general, "selected_any": counts.selected_any}
    if null is None:
        notes = counts.claim_nulls.notes if counts.claim_nulls else []
        why = next((n for n in notes if not n.startswith("uniqueness")), NO_REFERENCE)
        verdict = ClaimVerdict.DOES_NOT_HOLD if not counts.general else ClaimVerdict.NOT_ENOUGH_EVIDENCE
        return Claim("generality", verdict, counts.shares.get("general_share"),
                     evidence={**evidence, "why": "no component is general" if not counts.general else why})
    evidence.update(reference_top=null.reference_top, instruction_general=null.instruction_general,
                    noise_dropout=null.noise_dropout, epsilon=null.epsilon, rule=null.rule)
    return Claim("generality", _NULL_VERDICTS[null.decision], null.share.estimate, null.share.low, null.share.high,
                 evidence=evidence)


def uniqueness(identify: IdentifySummary | None, kind: str = "neuron") -> Claim:
    """The uniqueness claim from the identify summary: decided by the cross-source margin with its interval and the
    held-out decoding of the unique members alone against random sets, stored with the selection."""
    counts = _kind(identify, kind)
    if counts is None:
        return not_measured("uniqueness", "no identify output for this kind")
    test = counts.claim_nulls.uniqueness if counts.claim_nulls else None
    evidence: dict[str, Any] = {"unique_total": counts.unique_total, "selected_any": counts.selected_any}
    if test is None:
        notes = counts.claim_nulls.notes if counts.claim_nulls else []
        why = next((n for n in notes if n.startswith("uniqueness")), "no per-instruction counts: profile with "
                   "--group-by instruction for the margin and held-out decoding")
        verdict = ClaimVerdict.DOES_NOT_HOLD if not counts.unique_total else ClaimVerdict.NOT_ENOUGH_EVIDENCE
        return Claim("uniqueness", verdict, counts.shares.get("unique_share"), evidence={**evidence, "why": why})
    evidence.update(margin=test.margin, difference=asdict(test.difference), decoding=asdict(test.decoding),
                    random_mean=test.random_mean, p_value=test.p_value, random_sets=test.random_sets,
                    matched_random_mean=test.matched_random_mean, matched_p_value=test.matched_p_value,
                    rule=test.reason)
    return Claim("uniqueness", _NULL_VERDICTS[test.decision], counts.shares.get("unique_share"),
                 test.difference.low, test.difference.high, evidence=evidence)


def causal(causal_summary: CausalSummary | None, target: str, why_not: str = "causal check not run") -> list[Claim]:
    """Critical role and specificity from the causal check's stored decisions (``None``: it did not run)."""
    if causal_summary is None:
        return [not_measured(name, why_not) for name, _, _ in CAUSAL_CLAIMS]
    found = causal_summary.targets.get(target)
    if found is None or found.statistics is None or not found.tests:
        return [not_measured(name, f"no tests for target {target!r} in the causal check")
                for name, _, _ in CAUSAL_CLAIMS]
    stats = found.statistics
    how = {"intervention": found.intervention, "control": found.control}
    shared = [float(r["shared"]) for r in found.extra.get("matching", [])
              if r.get("control") == found.control and r.get("shared") is not None and np.isfinite(r["shared"])]
    if shared:  # whole-bin draws hold some of the set's own members: how much of it the control cannot tell apart
        how["shared"] = float(np.mean(shared))
    if stats.stopped_early:
        how["planned_random_sets"] = stats.planned_random_sets
    return causal_from_decisions(found.tests, stats.claims, target, stats.level, how)


#: A stored claim outcome ("holds", "partly (k of K categories)", …) → the claims table's verdict.
def _claim_verdict(outcome: str) -> ClaimVerdict:
    return ClaimVerdict.PARTLY if outcome.startswith("partly") else ClaimVerdict(outcome)


def causal_from_decisions(rows: Sequence[TestRow], decisions: dict[str, ClaimDecision], target: str,
                          level: float | None = None, how: dict[str, Any] | None = None) -> list[Claim]:
    """Critical role and specificity as the causal check decided them (``decisions``: its stored claim decisions,
    keyed "damage" and "specificity"), with the numbers of its typed test rows beside them; ``how``: the check's
    intervention and control, kept with the evidence so every verdict says what it was measured with."""
    claims = []
    for name, key, meaning in CAUSAL_CLAIMS:
        decision = decisions.get(key)
        if decision is None:
            claims.append(not_measured(name, f"no {key} decision for target {target!r} in the causal check"))
            continue
        contrasts = [getattr(t, key) for t in rows if t.tested]
        excess = [c.excess for c in contrasts if math.isfinite(c.excess)]
        lows = [c.excess_low for c in contrasts if math.isfinite(c.excess_low)]
        highs = [c.excess_high for c in contrasts if math.isfinite(c.excess_high)]
        claims.append(Claim(
            name, _claim_verdict(decision.outcome), float(np.median(excess)) if excess else None,
            min(lows) if lows else None, max(highs) if highs else None, decision.holds, decision.categories,
            evidence={"meaning": meaning, "target": target, "significant_categories": list(decision.holding),
                      "not_enough": decision.not_enough, "random_sets": rows[0].random_sets if rows else None,
                      "test": " / ".join(sorted({c.test for c in contrasts})) or "–", "level": level,
                      "rule": rows[0].decision.rule if rows else "",
                      "pooled": decision.pooled.to_json() if decision.pooled else None, **(how or {})}))
    return claims


def claims_table(identify: IdentifySummary | None, causal_summary: CausalSummary | None, kind: str = "neuron",
                 target: str = "neurons", not_run: str = "causal check not run") -> list[Claim]:
    """The four claims for one model: generality and uniqueness from ``identify`` (the paper's rule, with
    validity evidence), critical role and specificity from the causal check (``None`` when it was not run:
    ``not_run`` says why)."""
    return [generality(identify, kind), uniqueness(identify, kind), *causal(causal_summary, target, not_run)]


__all__ = ["CAUSAL_CLAIMS", "CLAIMS", "Claim", "ClaimVerdict", "causal", "causal_from_decisions", "claims_table", "generality",
           "not_measured", "uniqueness"]
