"""The claims' stored decisions in words (the decisions themselves: :mod:`sparcom.analysis.claims`)."""

from __future__ import annotations

import math

from sparcom.analysis.claims import Claim, ClaimVerdict
from sparcom.report.widgets import fmt_pct


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def verdict_words(claim: Claim) -> str:
    """holds / partly (k of K categories) / holds on average / does not hold / not enough evidence / not measured."""
    if claim.verdict is ClaimVerdict.PARTLY:
        return f"partly ({claim.significant} of {claim.categories} categories)"
    return claim.verdict.value


def claim_text(claim: Claim) -> str:
    """The claim's number and the evidence behind it, in one line."""
    e = claim.evidence
    if claim.verdict is ClaimVerdict.NOT_MEASURED:
        return str(e.get("why", ""))
    if claim.claim == "generality":
        text = f"{e['general']:,} general of {e['selected_any']:,} selected"
        if "instruction_general" not in e:
            return f"{text}; {e.get('why', '')}"
        return (f"{text}; {e['instruction_general']:,} of them not top {fmt_pct(e['epsilon'])} on the reference "
                f"corpus ({e['reference_top']:,} are: frequent on any text), instruction-general share "
                f"{fmt_pct(claim.number)} vs noise baseline {fmt_pct(e['noise_dropout'])}")
    if claim.claim == "uniqueness":
        text = f"{e['unique_total']:,} unique of {e['selected_any']:,} ({fmt_pct(claim.number)})"
        if "decoding" not in e:
            return f"{text}; {e.get('why', '')}"
        d, diff = e["decoding"], e["difference"]
        return (f"{text}; within − across cross-source Jaccard {diff['estimate']:.3f} vs margin {e['margin']:.2f}; "
                f"unique members alone decode held-out rows at {fmt_pct(d['estimate'])} vs random sets "
                f"{fmt_pct(e['random_mean'])} (p = {_num(e['p_value'], 2)}, {e['random_sets']} random sets)"
                + (f" and frequency-matched random sets {fmt_pct(e['matched_random_mean'])} "
                   f"(p = {_num(e['matched_p_value'], 2)})" if _finite(e.get("matched_p_value")) else ""))
    return (f"{_how(e)}{_pooled(e)}{claim.significant} of {claim.categories} categories after Holm ({e['test']} test, "
            f"{_random_sets(e)}); excess over random: median {_signed(claim.number)}, per-category "
            f"{_level(e)} intervals within [{_signed(claim.low)}, {_signed(claim.high)}] nats/token")


def _random_sets(evidence: dict) -> str:
    """How many random sets a causal decision rests on: all planned, or the first ones of a check that stopped
    once no further draw could change it (its decision is the planned number's)."""
    planned = evidence.get("planned_random_sets")
    if planned is None:
        return f"{evidence['random_sets']} random sets"
    return (f"decided at {planned} random sets, stopped after {evidence['random_sets']} drawn: no further draw "
            "could change a decision; numbers over the drawn sets")


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _how(evidence: dict) -> str:
    """How the sets were deactivated and their random sets matched ("" for claims stored before it was kept)."""
    if "intervention" not in evidence:
        return ""
    shared = evidence.get("shared")
    share = f" sharing {fmt_pct(shared)} of the set's members on average" if shared else ""
    return f"{evidence['intervention']} ablation, {evidence['control']}-matched random sets{share}; "


def _pooled(evidence: dict) -> str:
    """The first step of the causal decision: the pooled test over the categories ("" for older results)."""
    pooled = evidence.get("pooled")
    if not pooled or pooled.get("p") is None:
        return ""
    return (f"pooled over {pooled['categories']} categories {_signed(pooled['estimate'])} vs random "
            f"{_signed(pooled['random_mean'])} (p = {_num(pooled['p'], 2)}: {pooled['outcome']}); ")


def _level(evidence: dict) -> str:
    level = evidence.get("level")
    return f"{level:.0%}" if level else "bootstrap"


def claim_uncertainty(claim: Claim) -> str:
    """What the claim's interval is, in words."""
    e = claim.evidence
    if claim.verdict is ClaimVerdict.NOT_MEASURED:
        return "–"
    if claim.claim == "generality":
        if claim.low is None:
            return "no reference-corpus comparison"
        return f"instruction-general share [{fmt_pct(claim.low)}, {fmt_pct(claim.high)}] (subsampling)"
    if claim.claim == "uniqueness":
        if claim.low is None:
            return "no held-out evidence (profile with --group-by instruction)"
        d = e["decoding"]
        return (f"within − across [{claim.low:.3f}, {claim.high:.3f}] (subsampling); decoding CI "
                f"[{fmt_pct(d['low'])}, {fmt_pct(d['high'])}]")
    if claim.low is None:
        return "–"
    return f"per-category {_level(e)} intervals within [{_num(claim.low)}, {_num(claim.high)}] nats/token"


__all__ = ["claim_text", "claim_uncertainty", "verdict_words"]
