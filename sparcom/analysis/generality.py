"""Generality with a null that can fail: are the "general" neurons general for *instructions*?

The paper calls a component general when its category's rule selects it in every category. Tested against
independent random sets (expected general share ~2·10⁻¹¹) that is a near-tautology: any always-on neuron passes.
The null here is category-agnostic: a general neuron is just a frequent neuron if it is as top-frequent on text
that is not an instruction (a reference corpus profiled raw, :mod:`sparcom.data.reference`).

- **reference-top**: the general components that are also in the top-ε of the reference frequencies (the same
  rule, the same ε, the reference as one category).
- **instruction-general**: the general components that are *not*. The generality claim is about these only.
- **noise baseline**: even with identical frequency ranks, re-selecting on other text drops some components at
  the cut. Measured on instructions alone: general on one stratified half of the instructions, top-ε of the
  other half pooled over all categories (fresh instruction text); its dropout share is what "not top-ε on the
  reference" reaches by noise.
- **uncertainty**: subsampling without replacement of the instructions (within category × source) and the
  reference passages together (:mod:`sparcom.analysis.subsampling`), trend-corrected.

**Decision** (one rule, fixed in advance; α only through the interval level): the claim *holds* for the
instruction-general components when the interval of their share of the general set lies above the noise
baseline; *does not hold* when it lies at or below it (the general neurons are frequent neurons); otherwise
*not enough evidence*. Without general components it does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.analysis.groups import GroupCounts
from sparcom.analysis.pooling import Pool
from sparcom.analysis.selection import percentile_mask
from sparcom.analysis.subsampling import SubsampleEstimate, stratum_ids, subsample, subsample_intervals
from sparcom.errors import SparcomError
from sparcom.seeding import stream_seed

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not enough evidence"
#: How many stratified half splits give the noise baseline.
BASELINE_SPLITS = 10


@dataclass(frozen=True)
class GeneralityNull:
    """The general set measured against a reference corpus, with the decision of the generality claim."""

    epsilon: float
    general: int  # paper-rule general components on all instructions
    reference_top: int  # general ∩ top-ε on the reference
    noise_dropout: float  # baseline share of general components not top-ε on fresh instruction text
    share: SubsampleEstimate  # share of the general set NOT top-ε on the reference (instruction-general)
    decision: str
    rule: str

    @property
    def instruction_general(self) -> int:
        return self.general - self.reference_top

    @property
    def reference_share(self) -> float:
        """Share of the general components that are also top-ε on the reference."""
        return self.reference_top / self.general if self.general else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "general": self.general, "reference_top": self.reference_top,
                "reference_share": self.reference_share, "instruction_general": self.instruction_general,
                "instruction_general_share": self.share.summary(), "noise_dropout": self.noise_dropout,
                "decision": self.decision, "rule": self.rule}


def _general(pool: Pool, keep: np.ndarray, epsilon: float) -> np.ndarray:
    return percentile_mask(pool.frequencies(keep), epsilon).all(axis=0)


def _reference_top(pool: Pool, keep: np.ndarray, epsilon: float) -> np.ndarray:
    """Top ε of the reference pooled over all its groups (one category however many it has)."""
    return percentile_mask(pool.pooled(keep), epsilon)[0]


def noise_dropout(groups: GroupCounts, epsilon: float, splits: int = BASELINE_SPLITS, seed: int = 0,
                  pool: Pool | None = None) -> float:
    """Mean share of the general set of one stratified half that is not top-ε on the other half pooled over all
    categories (NaN if no half has general components)."""
    pool = pool or Pool(groups)
    strata = stratum_ids(groups.categories, groups.sources)
    rng = np.random.default_rng(stream_seed(seed, "generality-baseline"))
    shares = []
    for _ in range(splits):
        half = subsample(strata, 0.5, rng)
        general = _general(pool, half, epsilon)
        fresh = _reference_top(pool, ~half, epsilon)
        if general.any():
            shares.append(float((general & ~fresh).sum() / general.sum()))
    return float(np.mean(shares)) if shares else float("nan")


def decide(share: SubsampleEstimate, baseline: float, general: int) -> tuple[str, str]:
    """(decision, the rule that decided) for the instruction-general share against the noise baseline."""
    if general == 0:
        return FAILS, "no component is general under the rule"
    if not np.isfinite(share.low) or not np.isfinite(baseline):
        return UNDECIDED, "the share or the noise baseline is undefined"
    text = (f"instruction-general share {100 * share.corrected:.1f}% [{100 * share.low:.1f}, {100 * share.high:.1f}] "
            f"vs noise baseline {100 * baseline:.1f}%")
    if share.low > baseline:
        return HOLDS, f"{text}: interval above the baseline"
    if share.high <= baseline:
        return FAILS, f"{text}: interval at or below the baseline (the general neurons are frequent neurons)"
    return UNDECIDED, f"{text}: interval contains the baseline"


def generality_null(groups: GroupCounts, reference: GroupCounts, epsilon: float = 0.01, seed: int = 0,
                    **subsampling: Any) -> GeneralityNull:
    """The general set of the paper's rule (top ε per category) on ``groups`` against the top ε of ``reference``
    (groups of one reference category, same model and components), with its decision (see the module)."""
    if reference.layout.size != groups.layout.size:
        raise SparcomError(f"the reference run has {reference.layout.size} {reference.kind} components but the "
                           f"instruction run has {groups.layout.size}; profile both with the same model")
    g = groups.size
    pool, reference_pool = Pool(groups), Pool(reference)
    everything = np.ones(g + reference.size, dtype=bool)
    general = _general(pool, everything[:g], epsilon)
    top_reference = _reference_top(reference_pool, everything[g:], epsilon)

    def statistic(keep: np.ndarray) -> np.ndarray:
        general_m = _general(pool, keep[:g], epsilon)
        top_m = _reference_top(reference_pool, keep[g:], epsilon)
        size = general_m.sum()
        return np.array([(general_m & ~top_m).sum() / size if size else np.nan])

    strata = stratum_ids([*groups.categories, *(f"reference:{c}" for c in reference.categories)],
                         [*groups.sources, *reference.sources])
    share = subsample_intervals(statistic, ["instruction_general_share"], strata, seed=seed, bounds=(0.0, 1.0),
                                **subsampling)["instruction_general_share"]
    baseline = noise_dropout(groups, epsilon, seed=seed, pool=pool)
    count = int(general.sum())
    decision, rule = decide(share, baseline, count)
    return GeneralityNull(epsilon, count, int((general & top_reference).sum()), baseline, share, decision, rule)
