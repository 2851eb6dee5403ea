"""The one decision per causal claim (critical role, specificity), fixed before the data are seen, made here once.

A verdict speaks of instructions in general, not of the rows scored, so the test has both sources of variance the
claim generalises over: the random sets of S_c's shape (set to set) and the rows (instructions). The same test
serves damage and specificity, every category and every target (docs/causal.md, "The decision rule"):

- x_S = S_c's statistic on these rows, x_1 … x_R the same statistic of the R random sets, paired on the same rows;
- SE = the row standard error of the paired excess x_S − mean_r x_r (delta method for the token-pooled cells, rows
  independent within each category), ν its Welch–Satterthwaite degrees of freedom;
- **row-aware empirical p** = (1 + Σ_r P(t_ν ≥ (x_S − x_r) / SE)) / (1 + R): the rank test of "S_c is one more
  random set" in which each random set counts by the probability that row noise alone would put it at or above
  S_c's value. With SE = 0 it is the plain empirical p; with random sets that do not vary it is the one-sided t
  test of the excess over rows. Its smallest value is 1 / (1 + R), as for the plain empirical p.
- **a fixed sequence of two steps, each at the one α** (:data:`sparcom.stats.ALPHA`), which keeps the chance of
  any false "holds" — for the claim or for a category — at α (serial gatekeeping):
  1. the **pooled test**: the mean of the statistic over the m tested categories, x̄_S, against the random draws'
     means x̄_r (draw r of every category: independent draws, so x̄_S is one more draw under the null that every
     S_c is a random set of its shape), with the row standard error of the pooled excess; the same row-aware p.
     Its smallest value is 1 / (1 + R) whatever m is: 20 random sets can decide it, where Holm over six
     categories needs 119.
  2. only if the pooled test holds, the categories one by one, Holm over the m tested ones.
  A category's claim **holds** iff the pooled test holds and its p_holm ≤ α; otherwise it is **not enough
  evidence** when the category could not be tested, or no p_holm could have reached α (m / (1 + R) > α), or S_c
  beats every random set on these rows yet misses α, or the pooled test did not hold while its own p_holm ≤ α;
  else it **does not hold**. The claim over the target: holds (every category), partly (k of K), holds on
  average (the pooled test, no single category resolved), else the pooled test's own outcome. Not enough
  evidence never overrides a pass; untestable categories stay in the claim's denominator.

There is no per-category switching between tests and no pretest: the calibration of this rule under null
scenarios (shared row fragility, skewed and heavy-tailed random-set damage, few rows) is shown by
``benchmarks/verdict_calibration.py``, which runs this code. Pure numpy/scipy; nothing loads a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparcom.artifacts.causal import (
    ON_AVERAGE,
    ClaimDecision,
    Contrast,
    Decision,
    Outcome,
    PooledTest,
    TestRow,
    verdict_of,
)
from sparcom.errors import SparcomError
from sparcom.stats import empirical_p, holm, random_sets_needed, significant

#: The rule every decision names (stored with it).
RULE = ("row-aware empirical p = (1 + Σ_r P(t_ν ≥ (x_S − x_r) / SE_rows)) / (1 + R); first the pooled test (the "
        "mean over the tested categories against the random draws' means) at alpha, then, only if it holds, Holm "
        "over the tested categories at alpha; a category holds iff both do; not enough evidence when m / (1 + R) > "
        "alpha or the category cannot be tested or S_c beats every random set on these rows yet misses alpha or "
        "the pooled test did not hold; damage = own ΔNLL, specificity = own ΔNLL minus the mean ΔNLL of the other "
        "categories, each against the same statistic of the random sets of S_c's shape")
#: The name each test row gives its test.
TEST_NAME = "row-aware empirical"
#: The statistic behind each claim, and the claim's name in the claims table.
CLAIMS: dict[str, str] = {"damage": "critical role", "specificity": "specificity"}


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
    minus the unweighted mean of the others (the statistics of :func:`sparcom.causal.statistics.contrasts`)."""
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


def untestable(claim: str, size: int | float | None, own: int, r: int, categories: int, se: float) -> str:
    """Why a category's claim cannot be tested ("" when it can)."""
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


def pooled_test(claim: str, point: dict[str, np.ndarray], paired_rows: np.ndarray, tokens: np.ndarray,
                members: Sequence[np.ndarray], own: np.ndarray, tested: np.ndarray, alpha: float,
                planned: int | None = None) -> PooledTest:
    """The claim's one test over the ``tested`` ablated categories together (the first step of the sequence).

    x̄_S = mean_i x_S,i and x̄_r = mean_i x_r,i over the tested categories i (random draw r of each: independent,
    so the x̄_r are draws of x̄_S's null); its row standard error is the delta-method variance of the mean of the
    token-pooled cells, with row i of category c weighing Σ_a w_ac e_ai / m (:func:`row_variance` on those
    pooled rows); the p is :func:`row_aware_p`. ``planned``: the random draws the check planned when it stopped
    after fewer (:func:`settled`); the outcome is the one the planned draws would give.
    """
    idx = np.flatnonzero(tested)
    r = point[f"{claim}_random"].shape[-1]
    planned = r if planned is None else planned
    m = idx.size
    if m == 0 or r == 0:
        reason = "not tested: no category could be tested" if m == 0 else "not tested: no random sets"
        return PooledTest(float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), Outcome.NOT_ENOUGH,
                          reason, m)
    weights = np.nan_to_num(claim_weights(claim, own, len(members)))[idx] / m  # [m, C]
    tested_rows = paired_rows[idx]
    rows = np.zeros(paired_rows.shape[1])
    for c, row_ids in enumerate(members):
        rows[row_ids] = weights[:, c] @ tested_rows[:, row_ids]
    used = (weights != 0).any(axis=0).astype(np.float64)[None, :]
    var, df = row_variance(rows[None, :], tokens, members, used)
    observed = float(point[claim][idx].mean())
    random = point[f"{claim}_random"][idx].mean(axis=0)
    se = np.sqrt(var)
    p = float(row_aware_p(np.array([observed]), random[None, :], se, df)[0])
    result, reason = outcome(p, 1 / (1 + planned), alpha)
    if result is Outcome.NOT_ENOUGH:
        reason += f" with {planned} random sets (need R ≥ {random_sets_needed(1, alpha)}; more with row noise)"
    elif result is Outcome.DOES_NOT_HOLD and bool((random < observed).all()):
        result, reason = Outcome.NOT_ENOUGH, beyond_every_random_set(p, r, 1, alpha)
    return PooledTest(observed, float(random.mean()), p, float(se[0]), float(df[0]), result, reason, m)


def gated(result: Outcome, reason: str, pooled: PooledTest) -> tuple[Outcome, str]:
    """A category's outcome after the first step: a pass stands only if the pooled test held."""
    if result is Outcome.HOLDS and pooled.outcome is not Outcome.HOLDS:
        return Outcome.NOT_ENOUGH, (f"its own p_holm reaches alpha, but the pooled test over the {pooled.categories} "
                                    f"categories did not hold (p = {pooled.p:.3g}), and a category is declared only "
                                    "after it (fixed sequence)")
    return result, reason


@dataclass(frozen=True)
class ClaimTests:
    """One claim's test over a target's ablated categories (arrays in the order of the ablated categories)."""

    p: np.ndarray
    p_holm: np.ndarray
    p_plain: np.ndarray  # the plain rank p on these rows (descriptive; also where the row variance is undefined)
    se: np.ndarray
    df: np.ndarray
    outcomes: list[Outcome]
    reasons: list[str]
    best_p_holm: float
    tested: int
    pooled: PooledTest


def test_claim(claim: str, point: dict[str, np.ndarray], paired_rows: np.ndarray, tokens: np.ndarray,
               members: Sequence[np.ndarray], own: np.ndarray, sizes: Sequence[int | float | None],
               alpha: float, planned: int | None = None) -> ClaimTests:
    """The fixed sequence of one claim for every ablated category of a target: the pooled test, then Holm over
    the tested categories (see the module).

    ``point``: the contrasts of :func:`sparcom.causal.statistics.contrasts` (``{claim}`` [A], ``{claim}_random``
    [A, R]); ``paired_rows`` [A, n]: per-row summed ΔNLL of S_c minus the random sets' mean on that row.
    ``planned``: the draws a check stopped early had planned (:func:`settled`); what no p_holm could reach is
    judged at the planned number, so a settled check decides as the full one would.
    """
    observed, rand = point[claim], point[f"{claim}_random"]
    a, r = observed.shape[0], rand.shape[-1]
    planned = r if planned is None else planned
    var, df = row_variance(paired_rows, tokens, members, np.nan_to_num(claim_weights(claim, own, len(members))))
    se = np.sqrt(var)
    reasons = [untestable(claim, sizes[i], int(own[i]), r, len(members), float(se[i])) for i in range(a)]
    blocked = np.array([bool(x) for x in reasons], dtype=bool)
    p = np.where(blocked, np.nan, row_aware_p(observed, rand, se, df))
    p_holm = holm(p)
    m = int(np.isfinite(p).sum())
    best = min(1.0, m / (1 + planned)) if m and r else float("nan")
    absent = np.array([sizes[i] == 0 or own[i] < 0 for i in range(a)], dtype=bool)
    plain = np.where(absent, np.nan, empirical_p(observed, rand)) if r else np.full(a, np.nan)
    pooled = pooled_test(claim, point, paired_rows, tokens, members, own, np.isfinite(p), alpha, planned)
    outcomes, why = [], []
    for i in range(a):
        result, reason = outcome(float(p_holm[i]), best, alpha, reasons[i])
        if result is Outcome.NOT_ENOUGH and not reasons[i]:
            reason += (f" with {planned} random sets and {m} tested categories (need R ≥ {random_sets_needed(m, alpha)}; "
                       "more with row noise)")
        elif result is Outcome.DOES_NOT_HOLD and plain[i] * (1 + r) <= 1 + 1e-9:
            result, reason = Outcome.NOT_ENOUGH, beyond_every_random_set(float(p[i]), r, m, alpha)
        result, reason = gated(result, reason, pooled)
        outcomes.append(result)
        why.append(reason)
    return ClaimTests(p, p_holm, plain, se, df, outcomes, why, best, m, pooled)


def beyond_every_random_set(p: float, r: int, m: int, alpha: float) -> str:
    """Why a category whose set beats every random set on these rows, yet misses α, is "not enough evidence": the
    R random sets cannot resolve it. Its p = (1 + R·q) / (1 + R), q the mean tail weight row noise gives a random
    set; Holm's first step reaches α once m (1 + R q) / (1 + R) ≤ α, i.e. R ≥ (m − α) / (α − m q) when α > m q;
    otherwise no number of random sets suffices and the row noise (too few rows) is what decides."""
    q = (p * (1 + r) - 1) / r
    if alpha > m * q:
        need = int(np.ceil((m - alpha) / (alpha - m * q)))
        return (f"its set beats all {r} random sets on these rows, but {r} random sets cannot resolve p below "
                f"{m * p:.3g} after Holm over {m} categories (need about R ≥ {need} at this row noise)")
    return (f"its set beats all {r} random sets on these rows, but the row noise keeps p_holm above alpha for any "
            "number of random sets: more rows are needed")


def _cannot_reach(observed: np.ndarray, random: np.ndarray, planned: int, alpha: float) -> np.ndarray:
    """Per row of ``observed`` [k] and its drawn ``random`` [k, n]: no further draw can bring its row-aware p to α.

    Each drawn value at or above the observed one adds at least 1/2 to the p's numerator, whatever the final row
    standard error (P(t_ν ≥ u) ≥ 1/2 for u ≤ 0; 1 when SE = 0), so p over ``planned`` draws is at least
    (1 + k/2) / (1 + planned) with k those draws. A NaN observed value cannot reach α either."""
    above = (random >= observed[:, None]).sum(axis=1)
    bound = (1 + above / 2) / (1 + planned)
    return np.isnan(observed) | ~np.array([significant(float(b), alpha) for b in bound], dtype=bool)


def settled(point: dict[str, np.ndarray], paired_rows: np.ndarray, tokens: np.ndarray,
            members: Sequence[np.ndarray], own: np.ndarray, sizes: Sequence[int | float | None], planned: int,
            alpha: float) -> bool:
    """Whether the random draws run so far already fix every decision the ``planned`` draws would make.

    True when, for both claims, the pooled test cannot reach α whatever the remaining draws give, and no tested
    category can either (when a category could hold at ``planned`` draws at all) with at least one drawn value at
    or above its own, so "beats every random set" cannot apply. Then every outcome — claim verdicts, category
    outcomes and their reasons — decided on these draws with ``planned`` passed to :func:`decide_target` is the
    one the full check would store (docs/causal.md, "Stopping when decided"). Never True before the first draw.
    """
    r = point["damage_random"].shape[-1]
    if r == 0:
        return False
    for claim in CLAIMS:
        tests = test_claim(claim, point, paired_rows, tokens, members, own, sizes, alpha, planned)
        idx = np.flatnonzero(np.isfinite(tests.p))
        if idx.size == 0:
            continue
        observed, random = point[claim][idx], point[f"{claim}_random"][idx]
        if not _cannot_reach(np.array([observed.mean()]), random.mean(axis=0)[None, :], planned, alpha)[0]:
            return False
        if significant(tests.best_p_holm, alpha):  # a category could hold at the planned draws: each must be fixed
            drawn_above = (random >= observed[:, None]).any(axis=1)
            if not (drawn_above & _cannot_reach(observed, random, planned, alpha)).all():
                return False
    return True


def power_note(random_sets: int, categories: int, alpha: float) -> str:
    """A line said before a check runs when its decisions cannot hold whatever the data ("" when they can)."""
    if random_sets < 1 or categories < 1:
        return ""
    needed, pooled = random_sets_needed(categories, alpha), random_sets_needed(1, alpha)
    if random_sets >= needed:
        return ""
    if random_sets < pooled:
        return (f"with {random_sets} random sets neither the pooled test (needs R ≥ {pooled}) nor any category (needs "
                f"R ≥ {needed} for Holm over {categories} categories) can reach alpha = {alpha:g}: the damage and "
                "specificity claims will be 'not enough evidence'; raise --seeds")
    return (f"with {random_sets} random sets the claims can be decided on average over the categories (the pooled "
            f"test), but no single category can hold after Holm over {categories} categories at alpha = {alpha:g} "
            f"(needs R ≥ {needed}; plan about {2 * needed + 1} for row noise, docs/causal.md); raise --seeds for "
            "per-category verdicts")


def claim_decision(claim: str, outcomes: Sequence[Outcome], categories: Sequence[str],
                   pooled: PooledTest | None = None) -> ClaimDecision:
    """A claim from its category outcomes and its pooled test: holds in all K, partly (k of K), holds on average
    (the pooled test held, no single category did), else the pooled test's outcome. Without a pooled test (a
    hand-made list of outcomes): does not hold when every category was decided, else not enough evidence. K
    counts every category given."""
    if not outcomes:
        raise SparcomError(f"claim_decision: no category decisions for {claim!r}")
    holding = tuple(c for c, o in zip(categories, outcomes, strict=True) if o is Outcome.HOLDS)
    short = sum(o is Outcome.NOT_ENOUGH for o in outcomes)
    k, total = len(holding), len(outcomes)
    if k == total:
        verdict = Outcome.HOLDS.value
    elif k:
        verdict = f"partly ({k} of {total} categories)"
    elif pooled is not None:
        verdict = ON_AVERAGE if pooled.outcome is Outcome.HOLDS else pooled.outcome.value
    elif short:
        verdict = Outcome.NOT_ENOUGH.value
    else:
        verdict = Outcome.DOES_NOT_HOLD.value
    return ClaimDecision(CLAIMS.get(claim, claim), verdict, k, total, short, holding, pooled)


def _contrast(name: str, i: int, point: dict[str, np.ndarray], intervals, tests: ClaimTests) -> Contrast:
    random = point[f"{name}_random"][i]
    r = random.shape[-1]
    observed = float(point[name][i])
    sd = float(random.std(ddof=1)) if r > 1 else float("nan")
    est, low, high = _interval_parts(point, intervals)
    return Contrast(
        estimate=observed, low=float(low[name][i]), high=float(high[name][i]),
        random_mean=float(random.mean()) if r else float("nan"), random_std=sd,
        excess=float(est[f"{name}_excess"][i]), excess_low=float(low[f"{name}_excess"][i]),
        excess_high=float(high[f"{name}_excess"][i]),
        z=(observed - float(random.mean())) / sd if r > 1 and sd > 0 else float("nan"),
        p=float(tests.p[i]), p_holm=float(tests.p_holm[i]), test=TEST_NAME, p_empirical=float(tests.p_plain[i]),
        se_rows=float(tests.se[i]), df=float(tests.df[i]))


def _interval_parts(point: dict[str, np.ndarray], intervals) -> tuple[dict, dict, dict]:
    """The bootstrap estimate, low and high of each statistic; without intervals, the point values and NaN bounds."""
    if intervals is not None:
        return intervals.estimate, intervals.low, intervals.high
    r = point["damage_random"].shape[-1]
    est = {f"{k}_excess": point[k] - (point[f"{k}_random"].mean(axis=-1) if r else np.nan) for k in CLAIMS}
    nan = {k: np.full(point["damage"].shape, np.nan) for k in ("damage", "specificity", "damage_excess",
                                                                 "specificity_excess", "scaled_specificity")}
    return est, nan, nan


def decide_target(ablated: Sequence[str], sizes: Sequence[int | float | None], own: np.ndarray,
                  point: dict[str, np.ndarray], paired_rows: np.ndarray, tokens: np.ndarray,
                  members: Sequence[np.ndarray], intervals, alpha: float, planned: int | None = None
                  ) -> tuple[list[TestRow], dict[str, ClaimDecision]]:
    """One typed row per ablated category present among the evaluated ones, each with its stored decision, and
    both claims counted over those rows.

    ``intervals``: the bootstrap estimate, low and high of each statistic
    (:class:`sparcom.causal.statistics.Intervals`, or None: NaN bounds); they describe the numbers and take no part
    in the decision. ``planned``: the random draws planned by a check that stopped once :func:`settled`.
    """
    tests = {claim: test_claim(claim, point, paired_rows, tokens, members, own, sizes, alpha, planned)
             for claim in CLAIMS}
    r = point["damage_random"].shape[-1]
    tested = tests["damage"].tested
    needed = random_sets_needed(tested, alpha) if tested else None
    _, low, high = _interval_parts(point, intervals)
    rows = []
    for i, category in enumerate(ablated):
        if own[i] < 0:
            continue
        damage, spec = tests["damage"], tests["specificity"]
        decision = Decision(verdict_of(damage.outcomes[i], spec.outcomes[i]), damage.outcomes[i],
                            spec.outcomes[i], damage.reasons[i], spec.reasons[i], alpha, damage.best_p_holm,
                            needed, RULE)
        rows.append(TestRow(
            ablated=category, set_size=sizes[i], random_sets=r, damage=_contrast("damage", i, point, intervals, damage),
            others=float(point["others"][i]), specificity=_contrast("specificity", i, point, intervals, spec),
            ratio_random=float(point["ratio_random"][i]), scaled_specificity=float(point["scaled_specificity"][i]),
            scaled_specificity_low=float(low["scaled_specificity"][i]),
            scaled_specificity_high=float(high["scaled_specificity"][i]), decision=decision))
    claims = {claim: claim_decision(claim, [t.decision.outcome(claim) for t in rows], [t.ablated for t in rows],
                                    tests[claim].pooled) for claim in CLAIMS} if rows else {}
    return rows, claims


__all__ = [
    "CLAIMS",
    "RULE",
    "TEST_NAME",
    "ClaimTests",
    "beyond_every_random_set",
    "claim_decision",
    "claim_weights",
    "decide_target",
    "gated",
    "outcome",
    "pooled_test",
    "power_note",
    "row_aware_p",
    "row_variance",
    "settled",
    "test_claim",
    "untestable",
]
