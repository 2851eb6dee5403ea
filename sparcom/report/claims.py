"""The claims' stored decisions in words (the decisions themselves: :mod:`sparcom.analysis.claims`)."""

from __future__ import annotations

from sparcom.analysis.claims import Claim, ClaimVerdict
from sparcom.report.widgets import fmt_pct


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def verdict_words(claim: Claim) -> str:
    """holds / partly (k of K categories) / does not hold / not enough evidence / not measured."""
    if claim.verdict is ClaimVerdict.PARTLY:
        return f"partly ({claim.significant} of {claim.categories} categories)"
    return claim.verdict.value


def claim_text(claim: Claim) -> str:
    """The claim's number and the evidence behind it, in one line."""
    e = claim.evidence
    if claim.verdict is ClaimVerdict.NOT_MEASURED:
        return str(e.get("why", ""))
    if claim.claim == "generality":
        return f"{e['general']:,} general of {e['selected_any']:,} selected ({fmt_pct(claim.number)})"
    if claim.claim == "uniqueness":
        parts = [f"{e['unique_total']:,} unique of {e['selected_any']:,} ({fmt_pct(claim.number)})"]
        if "decoding" in e:
            d = e["decoding"]
            parts.append(f"held-out set-score decoding {fmt_pct(d['accuracy'])} vs random sets "
                         f"{fmt_pct(d['random_mean'])} (p = {_num(d['p_value'], 2)}; chance {fmt_pct(e['chance'])})")
        if "cross_source_within" in e:
            parts.append(f"cross-source Jaccard within {e['cross_source_within']:.2f} vs across "
                         f"{e['cross_source_across']:.2f}")
        return "; ".join(parts)
    return (f"{claim.significant} of {claim.categories} categories after Holm ({e['test']} test, "
            f"{e['random_sets']} random sets); excess over random: median {_signed(claim.number)}, per-category "
            f"{_level(e)} intervals within [{_signed(claim.low)}, {_signed(claim.high)}] nats/token")


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
            return "no interval (identify without --resamples)"
        return f"[{fmt_pct(claim.low)}, {fmt_pct(claim.high)}] over resampled instructions"
    if claim.claim == "uniqueness":
        if "decoding" not in e:
            return "no held-out evidence (profile with --group-by instruction)"
        return f"decoding CI [{fmt_pct(claim.low)}, {fmt_pct(claim.high)}]"
    if claim.low is None:
        return "–"
    return f"per-category {_level(e)} intervals within [{_num(claim.low)}, {_num(claim.high)}] nats/token"


__all__ = ["claim_text", "claim_uncertainty", "verdict_words"]
