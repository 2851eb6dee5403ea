""""Do the paper's claims hold here?": one decision per claim, each with the numbers behind it, from typed results.

The paper (arXiv 2505.21191) makes four claims about the sets its rule selects; each is judged from sparcom's own
outputs, never from a number typed in:

- **generality**: some components are selected for every instruction category (the general set). Number: the
  general share of the selected components; uncertainty: its interval over resampled instructions (``identify
  --resamples``). Holds when the interval of the general count excludes 0.
- **uniqueness**: each category has components of its own, and the sets carry the category on instructions they
  were not selected on. Number: the unique share; evidence: held-out set-score decoding against random sets of
  the same per-layer shape, and the cross-source Jaccard within a category against across categories. Holds when
  unique components exist, the decoding beats the random sets (p < α) and, where both halves exist, the sets
  agree more within a category than across.
- **critical role** and **specificity**: the causal check's stored claim decisions
  (:func:`sparcom.causal.decisions.decide_target`: the row-aware empirical test, Holm, one α), copied, never
  recomputed: holds when every category holds, partly when some do, not enough evidence when none does and some
  could not be decided, does not hold otherwise.

The words are rendered by :mod:`sparcom.report.claims`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from sparcom.artifacts.causal import CausalSummary, ClaimDecision, TestRow
from sparcom.artifacts.fields import Fields
from sparcom.artifacts.summaries import IdentifySummary
from sparcom.stats import ALPHA

CLAIMS = ("generality", "uniqueness", "critical role", "specificity")
#: The causal claims: name, the test they read, and what the number is.
CAUSAL_CLAIMS = (("critical role", "damage", "own ΔNLL beyond random sets of the same shape"),
                 ("specificity", "specificity", "own ΔNLL minus the mean on the other categories, beyond random "
                                                "sets"))


class ClaimVerdict(StrEnum):
    HOLDS = "holds"
    PARTLY = "partly"
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


def generality(identify: IdentifySummary | None, kind: str = "neuron") -> Claim:
    """The generality claim from the identify summary of the paper's rule."""
    counts = identify.kinds.get(kind) if identify else None
    if counts is None:
        return not_measured("generality", "no identify output for this kind")
    intervals = counts.bootstrap.intervals if counts.bootstrap else {}
    general, share = intervals.get("general"), intervals.get("general_share")
    if general is None:
        verdict = ClaimVerdict.NOT_ENOUGH_EVIDENCE if counts.general else ClaimVerdict.DOES_NOT_HOLD
    elif general.low > 0:
        verdict = ClaimVerdict.HOLDS
    elif general.high == 0:
        verdict = ClaimVerdict.DOES_NOT_HOLD
    else:
        verdict = ClaimVerdict.NOT_ENOUGH_EVIDENCE
    return Claim("generality", verdict, counts.shares.get("general_share"), share.low if share else None,
                 share.high if share else None,
                 evidence={"general": counts.general, "selected_any": counts.selected_any,
                           "general_low": general.low if general else None,
                           "general_high": general.high if general else None})


def uniqueness(identify: IdentifySummary | None, kind: str = "neuron", alpha: float = ALPHA) -> Claim:
    """The uniqueness claim from the identify summary with validity evidence (a grouped run)."""
    counts = identify.kinds.get(kind) if identify else None
    if counts is None:
        return not_measured("uniqueness", "no identify output for this kind")
    validity = identify.validity.get(kind) if identify else None
    headline = validity.headline if validity else None
    decoding = headline.decoders.get("set_score") if headline else None
    within = headline.cross_source_within if headline else math.nan
    across = headline.cross_source_across if headline else math.nan
    cross_known = math.isfinite(within) and math.isfinite(across)
    if not counts.unique_total:
        verdict = ClaimVerdict.DOES_NOT_HOLD
    elif not decoding:
        verdict = ClaimVerdict.NOT_ENOUGH_EVIDENCE
    elif (not math.isfinite(decoding.p_value) or decoding.p_value >= alpha
          or decoding.accuracy <= decoding.random_mean or (cross_known and within <= across)):
        verdict = ClaimVerdict.DOES_NOT_HOLD
    else:
        verdict = ClaimVerdict.HOLDS
    evidence: dict[str, Any] = {"unique_total": counts.unique_total, "selected_any": counts.selected_any,
                                "alpha": alpha}
    if decoding:
        evidence.update(decoding=asdict(decoding), chance=headline.chance)
    if cross_known:
        evidence.update(cross_source_within=within, cross_source_across=across)
    return Claim("uniqueness", verdict, counts.shares.get("unique_share"),
                 decoding.ci_low if decoding else None, decoding.ci_high if decoding else None, evidence=evidence)


def causal(causal_summary: CausalSummary | None, target: str, why_not: str = "causal check not run") -> list[Claim]:
    """Critical role and specificity from the causal check's stored decisions (``None``: it did not run)."""
    if causal_summary is None:
        return [not_measured(name, why_not) for name, _, _ in CAUSAL_CLAIMS]
    found = causal_summary.targets.get(target)
    if found is None or found.statistics is None or not found.tests:
        return [not_measured(name, f"no tests for target {target!r} in the causal check")
                for name, _, _ in CAUSAL_CLAIMS]
    stats = found.statistics
    return causal_from_decisions(found.tests, stats.claims, target, stats.level)


#: A stored claim outcome ("holds", "partly (k of K categories)", …) → the claims table's verdict.
def _claim_verdict(outcome: str) -> ClaimVerdict:
    return ClaimVerdict.PARTLY if outcome.startswith("partly") else ClaimVerdict(outcome)


def causal_from_decisions(rows: Sequence[TestRow], decisions: dict[str, ClaimDecision], target: str,
                          level: float | None = None) -> list[Claim]:
    """Critical role and specificity as the causal check decided them (``decisions``: its stored claim decisions,
    keyed "damage" and "specificity"), with the numbers of its typed test rows beside them."""
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
                      "rule": rows[0].decision.rule if rows else ""}))
    return claims


def claims_table(identify: IdentifySummary | None, causal_summary: CausalSummary | None, kind: str = "neuron",
                 target: str = "neurons", not_run: str = "causal check not run") -> list[Claim]:
    """The four claims for one model: generality and uniqueness from ``identify`` (the paper's rule, with
    validity evidence), critical role and specificity from the causal check (``None`` when it was not run:
    ``not_run`` says why)."""
    return [generality(identify, kind), uniqueness(identify, kind), *causal(causal_summary, target, not_run)]


__all__ = ["CAUSAL_CLAIMS", "CLAIMS", "Claim", "ClaimVerdict", "causal", "causal_from_decisions", "claims_table", "generality",
           "not_measured", "uniqueness"]
