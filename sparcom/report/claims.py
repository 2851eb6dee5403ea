""""Do the paper's claims hold here?": one row per claim, each with its number, uncertainty and a plain verdict.

The paper (arXiv 2505.21191) makes four claims about the sets its rule selects; each is judged from sparcom's own
outputs, never from a number typed in:

- **generality**: some components are selected for every instruction category (the general set). Number: the
  general share of the selected components; uncertainty: its interval over resampled instructions (``identify
  --resamples``). Holds when the interval of the general count excludes 0.
- **uniqueness**: each category has components of its own, and the sets carry the category on instructions they
  were not selected on. Number: the unique share; evidence: held-out decoding of the category from each
  instruction's mean standardised frequency on each set (the set-score decoder) against random sets of the same
  per-layer shape, and the cross-source Jaccard (sets selected on AI-written vs human-written halves) within a
  category against across categories. Holds when unique components exist, the decoding beats the random sets
  (p < α) and, where both halves exist, the sets agree more within a category than across.
- **critical role** and **specificity**: the causal check (:func:`sparcom.report.causal.claim_rows`).

Verdicts: ``holds``, ``does not hold``, ``partly (k of K categories)`` (causal claims), ``not enough evidence``
and ``not measured`` (the demo step that measures it did not run).
"""

from __future__ import annotations

from typing import Any

from sparcom.report.causal import claim_rows

ALPHA = 0.05
CLAIMS = ("generality", "uniqueness", "critical role", "specificity")


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def generality_row(identify: dict, kind: str = "neuron") -> dict[str, Any]:
    """The generality claim from an identify ``summary.json`` of the paper's rule."""
    counts = identify.get("kinds", {}).get(kind)
    if not counts:
        return _missing("generality", "no identify output for this kind")
    share = counts["shares"].get("general_share")
    intervals = (counts.get("bootstrap") or {}).get("intervals") or {}
    general = intervals.get("general")
    share_interval = intervals.get("general_share")
    uncertainty = (f"[{_pct(share_interval['low'])}, {_pct(share_interval['high'])}] over resampled instructions"
                   if share_interval else "no interval (identify without --resamples)")
    if general is None:
        verdict = "not enough evidence" if counts["general"] else "does not hold"
    elif general["low"] > 0:
        verdict = "holds"
    elif general["high"] == 0:
        verdict = "does not hold"
    else:
        verdict = "not enough evidence"
    return {"claim": "generality", "number": share, "text": f"{counts['general']:,} general of "
            f"{counts['selected_any']:,} selected ({_pct(share)})", "uncertainty": uncertainty, "verdict": verdict}


def uniqueness_row(identify: dict, kind: str = "neuron", alpha: float = ALPHA) -> dict[str, Any]:
    """The uniqueness claim from an identify ``summary.json`` with validity evidence (a grouped run)."""
    counts = identify.get("kinds", {}).get(kind)
    if not counts:
        return _missing("uniqueness", "no identify output for this kind")
    share = counts["shares"].get("unique_share")
    validity = (identify.get("validity") or {}).get(kind) or {}
    headline = validity.get("headline") or {}
    decoding = headline.get("set_score")
    within, across = headline.get("cross_source_within"), headline.get("cross_source_across")
    parts = [f"{counts['unique_total']:,} unique of {counts['selected_any']:,} ({_pct(share)})"]
    if decoding:
        parts.append(f"held-out set-score decoding {_pct(decoding['accuracy'])} vs random sets "
                     f"{_pct(decoding['random_mean'])} (p = {_num(decoding['p_value'], 2)}; chance "
                     f"{_pct(headline.get('chance'))})")
    cross_known = within is not None and across is not None and within == within and across == across
    if cross_known:
        parts.append(f"cross-source Jaccard within {within:.2f} vs across {across:.2f}")
    uncertainty = (f"decoding 95% CI [{_pct(decoding['ci_low'])}, {_pct(decoding['ci_high'])}]" if decoding
                   else "no held-out evidence (profile with --group-by instruction)")
    if not counts["unique_total"]:
        verdict = "does not hold"
    elif not decoding:
        verdict = "not enough evidence"
    elif (decoding["p_value"] is None or decoding["p_value"] >= alpha
          or decoding["accuracy"] <= decoding["random_mean"] or (cross_known and within <= across)):
        verdict = "does not hold"
    else:
        verdict = "holds"
    return {"claim": "uniqueness", "number": share, "text": "; ".join(parts), "uncertainty": uncertainty,
            "verdict": verdict}


def causal_rows(ablate: dict | None, target: str) -> list[dict[str, Any]]:
    """Critical role and specificity from an ablate ``summary.json`` (``None``: the check did not run)."""
    if not ablate:
        return [_missing(name, "causal check not run") for name in CLAIMS[2:]]
    rows = claim_rows(ablate, target)
    if not rows:
        return [_missing(name, f"no tests for target {target!r} in the causal check") for name in CLAIMS[2:]]
    result = []
    for row in rows:
        interval = (f"per-category 95% intervals within [{_num(row['low'])}, {_num(row['high'])}] nats/token"
                    if row["low"] is not None else "–")
        result.append({"claim": row["claim"], "number": row["number"], "text": row["text"], "uncertainty": interval,
                       "verdict": row["verdict"]})
    return result


def claims_table(identify: dict, ablate: dict | None, kind: str = "neuron", target: str = "neurons",
                 not_run: str = "causal check not run") -> list[dict[str, Any]]:
    """The four claims for one model: generality and uniqueness from ``identify`` (the paper's rule, with validity
    evidence), critical role and specificity from ``ablate`` (``None`` when the check was not run: ``not_run``
    says why)."""
    rows = [generality_row(identify, kind), uniqueness_row(identify, kind)]
    if ablate:
        rows += causal_rows(ablate, target)
    else:
        rows += [_missing(name, not_run) for name in CLAIMS[2:]]
    return rows


def _missing(claim: str, why: str) -> dict[str, Any]:
    return {"claim": claim, "number": None, "text": why, "uncertainty": "–", "verdict": "not measured"}


__all__ = ["ALPHA", "CLAIMS", "causal_rows", "claims_table", "generality_row", "uniqueness_row"]
