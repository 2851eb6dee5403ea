"""The one decision per causal claim (critical role, specificity), fixed before the data are seen.

A verdict speaks of instructions in general, not of the rows scored, so every test here has both sources of
variance the claim generalises over: the random sets of S_c's shape (set-to-set) and the rows (instructions).

The test, the same for damage and specificity (docs/causal.md, "The decision rule"):

- x_S = S_c's statistic on these rows, x_1 … x_R the same statistic of the R random sets, paired on the same rows;
- SE = the row standard error of the paired excess x_S − mean_r x_r (delta method for the token-pooled cells, rows
  independent within each category), ν its Welch–Satterthwaite degrees of freedom;
- **row-aware empirical p** = (1 + Σ_r P(t_ν ≥ (x_S − x_r) / SE)) / (1 + R): the rank test of "S_c is one more
  random set" in which each random set counts by the probability that row noise alone would put it at or above
  S_c's value. With SE = 0 it is the plain empirical p (ties against S_c); with random sets that do not vary it
  is the one-sided t test of the excess over rows. Its smallest value is 1 / (1 + R), as for the empirical p.
- Holm over the tested categories of a target, one α. A category **holds** iff p_holm ≤ α; a category that does
  not hold is **not enough evidence** when no p_holm could have reached α (m / (1 + R) > α for m tested
  categories) or when it could not be tested (empty set, no random sets, fewer than two rows where the row
  variance is needed, no other category for specificity), otherwise it **does not hold**. Not enough evidence
  never overrides a pass, and untestable categories stay in the claim's denominator.

Pure numpy/scipy; nothing loads a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from sparcom.causal.statistics import category_members, contrasts, pooled_cells
from sparcom.errors import SparcomError
from sparcom.stats import ALPHA, holm, random_sets_needed, significant

#: The rule every decision names (stored with it).
RULE = ("row-aware empirical p = (1 + Σ_r P(t_ν ≥ (x_S − x_r) / SE_rows)) / (1 + R), Holm over the tested "
        "categories of the target, holds iff p_holm ≤ alpha; not enough evidence when m / (1 + R) > alpha or the "
        "category cannot be tested")
CLAIMS: dict[str, str] = {"damage": "critical role", "specificity": "specificity"}


class Outcome(StrEnum):
    """A category's decision for one claim."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    NOT_ENOUGH = "not enough evidence"


@dataclass(frozen=True)
class CategoryDecision:
    """One category, one claim: the outcome, the rule that decided it and the numbers behind it."""

    claim: str  # "damage" (critical role) or "specificity"
    category: str
    outcome: Outcome
    excess: float  # x_S − mean of the random sets, nats per token
    se_rows: float  # row standard error of the excess
    df: float  # Welch–Satterthwaite degrees of freedom of se_rows
    p: float  # row-aware empirical p
    p_holm: float
    best_p_holm: float  # the smallest p_holm any category of this family could reach: m / (1 + R)
    tested: int  # m, the Holm family size
    random_sets: int
    alpha: float
    reason: str = ""  # why "not enough evidence", empty otherwise
    rule: str = RULE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}

    def explain(self) -> str:
        """One line: the outcome, then the numbers that decided it."""
        numbers = (f"excess {self.excess:+.3g} nats/token (row SE {self.se_rows:.2g}, ν = {self.df:.1f}); "
                   f"p = {format_p(self.p, self.random_sets)}, p_holm = {format_p(self.p_holm, self.random_sets)} "
                   f"over {self.tested} categories, {self.random_sets} random sets, alpha = {self.alpha:g}")
        return f"{self.outcome.value}: {numbers}" + (f"; {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class ClaimDecision:
    """A claim over a target's categories, counted from the stored category decisions."""

    claim: str
    outcome: str  # holds / partly (k of K categories) / does not hold / not enough evidence
    holds: int
    categories: int  # K: every ablated category, untestable ones included
    not_enough: int
    holding: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"holding": list(self.holding)}


@dataclass(frozen=True)
class CausalDecisions:
    """Both claims' decisions for one target, per category in the order of ``ablated``."""

    damage: list[CategoryDecision]
    specificity: list[CategoryDecision]
    alpha: float
    random_sets: int
    rule: str = RULE
    claims: dict[str, ClaimDecision] = field(default_factory=dict)

    def by_claim(self, claim: str) -> list[CategoryDecision]:
        return {"damage": self.damage, "specificity": self.specificity}[claim]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: every category decision and both claims."""
        return {"rule": self.rule, "alpha": self.alpha, "random_sets": self.random_sets,
                "damage": [d.as_dict() for d in self.damage],
                "specificity": [d.as_dict() for d in self.specificity],
                "claims": {k: v.as_dict() for k, v in self.claims.items()}}


def format_p(p: float, random_sets: int) -> str:
    """A p-value for print: 'n/a' when undefined, '< 1/(10R)' below what R random sets can resolve."""
    if not np.isfinite(p):
        return "n/a"
    floor = 1 / (10 * random_sets) if random_sets > 0 else 0.0
    return f"< {floor:.2g}" if p < floor else f"{p:.3g}"


# ------------------------------------------------------------------------------------------- the statistics


def row_variance(excess_rows: np.ndarray, tokens: np.ndarray, members: Sequence[np.ndarray],
                 weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row variance and Welch–Satterthwaite df of Σ_c w_c · (Σ_{i∈c} e_i / Σ_{i∈c} t_i), per ablated category.

    ``excess_rows`` [A, n] per-row summed paired differences e_i, ``weights`` [A, C]. Each token-pooled cell is a
    ratio of sums; linearised (delta method), its variance over rows drawn within category c is
    v_c = n_c / (n_c − 1) · Σ_{i∈c} (e_i − r_c t_i)² / T_c² with r_c = Σ e / Σ t and T_c = Σ t, and categories are
    independent. Returns var [A] = Σ_c w_c² v_c and df [A] = var² / Σ_c (w_c² v_c)² / (n_c − 1) (inf when var = 0;
    NaN when a weighted category has fewer than two rows).
    """
    a = excess_rows.shape[0]
    parts = np.zeros((a, len(members)))
    dof = np.zeros(len(members))
    for j, idx in enumerate(members):
        e, t = excess_rows[:, idx], tokens[idx]
        total = t.sum()
        ratio = e.sum(axis=1) / total
        z = e - ratio[:, None] * t[None, :]
        n = idx.size
        dof[j] = n - 1
        parts[:, j] = n / (n - 1) * (z ** 2).sum(axis=1) / total ** 2 if n > 1 else np.nan
    weighted = np.where(weights != 0, weights ** 2 * parts, 0.0)
    used = weights != 0
    var = weighted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.where(used, weighted ** 2 / np.where(dof > 0, dof, np.nan)[None, :], 0.0).sum(axis=1)
        df = np.where(var > 0, var ** 2 / denom, np.inf)
    df = np.where(np.isnan(var), np.nan, df)
    return var, df


def row_aware_p(observed: np.ndarray, random: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """(1 + Σ_r P(t_ν ≥ (observed − random_r) / se)) / (1 + R) per category: observed [A], random [A, R], se [A],
    df [A]. se = 0 gives the plain empirical p (a random value ≥ observed counts 1); NaN se or df gives NaN."""
    from scipy.special import ndtr, stdtr

    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    r = random.shape[-1]
    if r == 0:
        return np.full(observed.shape, np.nan)
    gap = observed[:, None] - random
    with np.errstate(invalid="ignore", divide="ignore"):
        u = gap / np.where(se > 0, se, 1.0)[:, None]
        finite_df = np.isfinite(df)
        tail = np.where(finite_df[:, None], stdtr(np.where(finite_df, df, 1.0)[:, None], -u), ndtr(-u))
    counts = np.where((se > 0)[:, None], tail, (random >= observed[:, None]).astype(np.float64))
    p = (1 + counts.sum(axis=1)) / (1 + r)
    return np.where(np.isnan(se) | np.isnan(df) | np.isnan(observed), np.nan, p)


def claim_weights(claim: str, own: np.ndarray, categories: int) -> np.ndarray:
    """[A, C] weights of each evaluated category in a claim's statistic: damage = own cell; specificity = own cell
    minus the unweighted mean of the others (the statistics of sparcom.causal.statistics.contrasts)."""
    a = own.size
    w = np.zeros((a, categories))
    if claim == "specificity" and categories > 1:
        w[:] = -1.0 / (categories - 1)
    elif claim == "specificity":
        return np.full((a, categories), np.nan)
    rows = np.flatnonzero(own >= 0)
    w[rows, own[rows]] = 1.0
    w[own < 0] = 0.0
    return w


# ------------------------------------------------------------------------------------------- the decision


def outcome(p_holm: float, best_p_holm: float, alpha: float, reason: str = "") -> tuple[Outcome, str]:
    """The rule: holds iff p_holm ≤ alpha; otherwise not enough evidence when the category was not tested or no
    p_holm could reach alpha, else does not hold. A pass is never overridden."""
    if not reason and significant(p_holm, alpha):
        return Outcome.HOLDS, ""
    if reason:
        return Outcome.NOT_ENOUGH, reason
    if not significant(best_p_holm, alpha):
        return Outcome.NOT_ENOUGH, f"no p_holm could reach alpha: the smallest is {best_p_holm:.3g}"
    return Outcome.DOES_NOT_HOLD, ""


def decide(base: np.ndarray, selected: np.ndarray, random: np.ndarray, tokens: np.ndarray,
           row_categories: Sequence[str], ablated: Sequence[str], evaluated: Sequence[str] | None = None, *,
           set_sizes: Sequence[int | None] | None = None, alpha: float = ALPHA) -> CausalDecisions:
    """Both claims' decisions for one target from per-row summed NLL (the inputs of
    :func:`sparcom.causal.statistics.causal_statistics`: base [n], selected [A, n], random [A, R, n], tokens [n])."""
    base, selected = np.asarray(base, dtype=np.float64), np.asarray(selected, dtype=np.float64)
    random, tokens = np.asarray(random, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    labels, ablated = list(row_categories), list(ablated)
    n, a = base.shape[0], len(ablated)
    if selected.shape != (a, n) or random.ndim != 3 or random.shape[0] != a or random.shape[2] != n:
        raise SparcomError(f"decide: expected selected [{a}, {n}] and random [{a}, R, {n}], got {selected.shape} "
                           f"and {random.shape}")
    if tokens.shape != (n,) or len(labels) != n or (tokens < 1).any():
        raise SparcomError(f"decide: every one of the {n} rows needs a category and a positive count of scored tokens")
    if not (np.isfinite(base).all() and np.isfinite(selected).all() and np.isfinite(random).all()):
        raise SparcomError("decide: the NLL sums contain NaN or infinite values")
    if evaluated is None:
        present = list(dict.fromkeys(labels))
        evaluated = [c for c in ablated if c in present] + [c for c in present if c not in ablated]
    evaluated = list(evaluated)
    members = category_members(labels, evaluated)
    sizes = list(set_sizes) if set_sizes is not None else [None] * a
    r = random.shape[1]
    own = np.array([evaluated.index(c) if c in evaluated else -1 for c in ablated], dtype=np.int64)
    diff = np.concatenate([selected[:, None, :], random], axis=1) - base[None, None, :]
    point = contrasts(pooled_cells(diff, tokens, members), own)
    paired = diff[:, 0] - (diff[:, 1:].mean(axis=1) if r else np.nan)
    results = {}
    for claim in CLAIMS:
        weights = claim_weights(claim, own, len(evaluated))
        var, df = row_variance(paired, tokens, members, np.nan_to_num(weights))
        se = np.sqrt(var)
        observed, rand = point[claim], point[f"{claim}_random"]
        reasons = [_untestable(claim, sizes[i], own[i], r, len(evaluated), se[i]) for i in range(a)]
        p = np.where([bool(x) for x in reasons], np.nan, row_aware_p(observed, rand, se, df))
        p_holm = holm(p)
        m = int(np.isfinite(p).sum())
        best = min(1.0, m / (1 + r)) if m and r else float("nan")
        family = []
        for i, category in enumerate(ablated):
            result, why = outcome(float(p_holm[i]), best, alpha, reasons[i])
            if result is Outcome.NOT_ENOUGH and not reasons[i]:
                why += f" with {r} random sets and {m} tested categories (need R ≥ {random_sets_needed(m, alpha)})"
            excess = float(observed[i] - rand[i].mean()) if r else float("nan")
            family.append(CategoryDecision(claim, category, result, excess, float(se[i]), float(df[i]),
                                           float(p[i]), float(p_holm[i]), best, m, r, alpha, why))
        results[claim] = family
    claims = {name: claim_decision(results[name]) for name in CLAIMS}
    return CausalDecisions(results["damage"], results["specificity"], alpha, r, RULE, claims)


def _untestable(claim: str, size: int | None, own: int, r: int, categories: int, se: float) -> str:
    if size == 0:
        return "not tested: its set is empty"
    if own < 0:
        return "not tested: its own category is not among the evaluated rows"
    if r == 0:
        return "not tested: no random sets"
    if claim == "specificity" and categories < 2:
        return "not tested: no other evaluated category to compare with"
    if not np.isfinite(se):
        return "not tested: a category it needs has fewer than two rows, so the row variance is undefined"
    return ""


def claim_decision(decisions: Sequence[CategoryDecision]) -> ClaimDecision:
    """A claim from its stored category decisions: holds in all K, partly (k of K), does not hold (none, and every
    category could have passed), or not enough evidence (none, and some could not). K counts every category."""
    if not decisions:
        raise SparcomError("claim_decision: no category decisions to count")
    claims = {d.claim for d in decisions}
    if len(claims) != 1:
        raise SparcomError(f"claim_decision: decisions of several claims mixed: {sorted(claims)}")
    holding = tuple(d.category for d in decisions if d.outcome is Outcome.HOLDS)
    short = sum(d.outcome is Outcome.NOT_ENOUGH for d in decisions)
    k, total = len(holding), len(decisions)
    if k == total:
        verdict = Outcome.HOLDS.value
    elif k:
        verdict = f"partly ({k} of {total} categories)"
    elif short:
        verdict = Outcome.NOT_ENOUGH.value
    else:
        verdict = Outcome.DOES_NOT_HOLD.value
    return ClaimDecision(CLAIMS[decisions[0].claim], verdict, k, total, short, holding)


__all__ = ["ALPHA", "CLAIMS", "RULE", "CategoryDecision", "CausalDecisions", "ClaimDecision", "Outcome",
           "claim_decision", "claim_weights", "decide", "format_p", "outcome", "row_aware_p", "row_variance",
           "significant"]
