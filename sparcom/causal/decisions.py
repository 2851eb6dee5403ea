"""The damage and specificity tests of each category's set and the verdict they lead to, decided here once.

:func:`test_rows` turns the point estimates, the bootstrap intervals and the random sets' values of one target
into typed :class:`~sparcom.artifacts.causal.TestRow` values; :func:`decide` is the one place the verdict rule is
written (:data:`VERDICT_RULE`). Everything downstream (summary.json, the report, the claims, the CLI) reads the
stored :class:`~sparcom.artifacts.causal.Decision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.artifacts.causal import Contrast, Decision, TestRow, Verdict
from sparcom.errors import SparcomError
from sparcom.stats import (
    ALPHA,
    empirical_p,
    holm,
    min_holm_p,
    normality_p,
    random_sets_needed,
    significant,
    t_tail_p,
)

#: How the p-value of a damage or specificity test is computed (``test=``): ``empirical`` ranks S_c among the random
#: sets; ``parametric`` reads it from the tail of a normal distribution fitted to them (Student's t, see
#: :func:`sparcom.stats.t_tail_p`); ``auto`` is empirical when there are enough random sets for Holm to reach α,
#: else parametric.
TESTS: tuple[str, ...] = ("empirical", "parametric", "auto")
#: Fewest random sets for the parametric test: with fewer, neither the fit nor the normality check says much.
PARAMETRIC_MIN_SETS = 10
#: The parametric test is replaced by the empirical one when Shapiro–Wilk rejects normality at this level.
NORMALITY_LEVEL = 0.05

VERDICT_RULE = (
    "damage test: own ΔNLL of S_c against the random sets of its shape; specificity test: own ΔNLL minus the mean "
    "ΔNLL of the other categories, S_c against the same contrast of each random set; both one-sided empirical "
    "p-values, Holm-adjusted across the categories of a target, significant when p_holm ≤ alpha. specific = both "
    "significant; critical but not specific = damage only; selective but not critical = specificity only; no "
    "effect beyond random = neither; not enough random sets = no p_holm can reach alpha (R < K / alpha − 1 for K "
    "tested categories). A 'specific' verdict gets a caution when the bootstrap interval of the scaled "
    "specificity (own − ρ · others, ρ the random sets' own/others ratio) does not lie above 0.")

TEST_RULE = (
    "empirical p = (1 + #{random sets with a value ≥ S_c's}) / (1 + R). parametric p = P(t_{R−1} ≥ T), "
    "T = (S_c's value − random mean) / (random sd · √(1 + 1/R)): exact if the random sets' values are normal "
    "(a new draw's prediction interval); used only where Shapiro–Wilk does not reject normality at "
    f"{NORMALITY_LEVEL} (else the empirical p, with a note), and only with at least {PARAMETRIC_MIN_SETS} random "
    "sets. auto = empirical when R ≥ K / alpha − 1 (Holm can reach alpha), else parametric. Each test row names "
    "the test behind its p (damage_test, specificity_test).")


def choose_test(test: str, random_sets: int, tests: int, alpha: float = ALPHA) -> str:
    """The test ``auto`` stands for: empirical when its best Holm-adjusted p, tests / (1 + R), reaches α (or when
    there are too few random sets to fit a distribution), parametric otherwise."""
    if test not in TESTS:
        raise SparcomError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    if test != "auto":
        return test
    if random_sets < PARAMETRIC_MIN_SETS or tests < 1 or random_sets >= random_sets_needed(tests, alpha):
        return "empirical"
    return "parametric"


def decide(damage_p_holm: float, specificity_p_holm: float, scaled_specificity_low: float, reason: str,
           alpha: float, min_p_holm: float, needed: int | None) -> Decision:
    """The verdict of one category (the rule is :data:`VERDICT_RULE`), with the booleans it rests on.

    ``min_p_holm`` is the smallest adjusted p the category's test can reach (0 when both of its tests are
    parametric); when it exceeds α the verdict is "not enough random sets".
    """
    damage, spec = significant(damage_p_holm, alpha), significant(specificity_p_holm, alpha)
    caution = False
    if reason:
        verdict = Verdict.NOT_TESTABLE
    elif not significant(min_p_holm, alpha):
        verdict = Verdict.TOO_FEW_RANDOM_SETS
    elif damage and spec:
        verdict, caution = Verdict.SPECIFIC, not scaled_specificity_low > 0
    elif damage:
        verdict = Verdict.CRITICAL
    elif spec:
        verdict = Verdict.SELECTIVE
    else:
        verdict = Verdict.NO_EFFECT
    return Decision(verdict, damage, spec, caution, reason, alpha, min_p_holm, needed)


@dataclass(frozen=True)
class PValues:
    """Both p-values of one statistic per category, and the one used (with the test's name and a note)."""

    used: np.ndarray
    empirical: np.ndarray
    parametric: np.ndarray
    normality: np.ndarray
    test: list[str]
    note: list[str]


def p_values(observed: np.ndarray, random: np.ndarray, chosen: str, untested: np.ndarray) -> PValues:
    """The parametric p where ``chosen`` is parametric and the normal model is not rejected, the empirical p
    otherwise (with the reason)."""
    empirical = np.where(untested, np.nan, empirical_p(observed, random))
    a = observed.shape[0]
    parametric, normality = np.full(a, np.nan), np.full(a, np.nan)
    if random.shape[-1] >= 3:
        try:
            parametric = np.where(untested, np.nan, t_tail_p(observed, random))
            normality = np.where(untested, np.nan, normality_p(random))
        except ImportError:
            if chosen == "parametric":
                raise SparcomError("the parametric test needs scipy: pip install 'sparcom[analysis]'") from None
    used, tests, notes = empirical.copy(), ["empirical"] * a, [""] * a
    if chosen == "parametric":
        for i in range(a):
            if untested[i]:
                continue
            if normality[i] < NORMALITY_LEVEL:
                notes[i] = (f"normality of the random sets rejected (Shapiro–Wilk p = {normality[i]:.2g}): "
                            "empirical p used")
            elif not np.isfinite(parametric[i]):
                notes[i] = "the random sets do not vary: empirical p used"
            else:
                used[i], tests[i] = parametric[i], "parametric"
    return PValues(used, empirical, parametric, normality, tests, notes)


def untested_reasons(sizes: Sequence[int | None], own: np.ndarray, random_sets: int, evaluated: int) -> list[str]:
    """Why each ablated category cannot be tested ("" where it can)."""
    reasons = []
    for size, column in zip(sizes, own, strict=True):
        reason = ""
        if size == 0:
            reason = "its set is empty"
        elif column < 0:
            reason = "its own category is not among the evaluated rows"
        elif random_sets == 0:
            reason = "no random sets (seeds 0)"
        elif evaluated < 2:
            reason = "no other evaluated category to compare with"
        reasons.append(reason)
    return reasons


def _contrast(name: str, i: int, point: dict[str, np.ndarray], estimate: dict[str, np.ndarray],
              low: dict[str, np.ndarray], high: dict[str, np.ndarray], p: PValues, holm_p: np.ndarray) -> Contrast:
    random = point[f"{name}_random"][i]
    r = random.shape[-1]
    observed = float(point[name][i])
    sd = float(random.std(ddof=1)) if r > 1 else float("nan")
    return Contrast(
        estimate=observed, low=float(low[name][i]), high=float(high[name][i]),
        random_mean=float(random.mean()) if r else float("nan"), random_std=sd,
        excess=float(estimate[f"{name}_excess"][i]), excess_low=float(low[f"{name}_excess"][i]),
        excess_high=float(high[f"{name}_excess"][i]),
        z=(observed - float(random.mean())) / sd if r > 1 and sd > 0 else float("nan"),
        p=float(p.used[i]), p_holm=float(holm_p[i]), test=p.test[i], p_empirical=float(p.empirical[i]),
        p_parametric=float(p.parametric[i]), normality_p=float(p.normality[i]), test_note=p.note[i])


def test_rows(ablated: Sequence[str], sizes: Sequence[int | None], own: np.ndarray, point: dict[str, np.ndarray],
              intervals: Any, test: str, alpha: float, evaluated: int) -> tuple[list[TestRow], str]:
    """One typed row per ablated category present among the evaluated ones, and the test ``test`` stood for.

    ``point`` holds the contrasts of :func:`sparcom.causal.statistics.contrasts`; ``intervals`` the bootstrap
    estimate, low and high of each statistic (:class:`sparcom.causal.statistics.Intervals`).
    """
    r = point["damage_random"].shape[-1]
    reasons = untested_reasons(sizes, own, r, evaluated)
    untested = np.array([bool(x) for x in reasons])
    family = int((~untested).sum())
    chosen = choose_test(test, r, family, alpha)
    if chosen == "parametric" and r < PARAMETRIC_MIN_SETS:
        raise SparcomError(f"the parametric test needs at least {PARAMETRIC_MIN_SETS} random sets, got {r}")
    p = {name: p_values(point[name], point[f"{name}_random"], chosen, untested) for name in ("damage", "specificity")}
    adjusted = {name: holm(p[name].used) for name in p}
    min_p = min_holm_p(r, family)
    needed = random_sets_needed(family, alpha) if family else None
    rows = []
    for i, category in enumerate(ablated):
        if own[i] < 0:
            continue
        damage, spec = (_contrast(name, i, point, intervals.estimate, intervals.low, intervals.high, p[name],
                                  adjusted[name]) for name in ("damage", "specificity"))
        empirical = "empirical" in (damage.test, spec.test)
        decision = decide(damage.p_holm, spec.p_holm, float(intervals.low["scaled_specificity"][i]), reasons[i],
                          alpha, min_p if empirical else 0.0, needed)
        rows.append(TestRow(
            ablated=category, set_size=sizes[i], random_sets=r, damage=damage, others=float(point["others"][i]),
            specificity=spec, ratio_random=float(point["ratio_random"][i]),
            scaled_specificity=float(point["scaled_specificity"][i]),
            scaled_specificity_low=float(intervals.low["scaled_specificity"][i]),
            scaled_specificity_high=float(intervals.high["scaled_specificity"][i]), decision=decision))
    return rows, chosen


__all__ = ["NORMALITY_LEVEL", "PARAMETRIC_MIN_SETS", "TESTS", "TEST_RULE", "VERDICT_RULE", "PValues", "choose_test",
           "decide", "p_values", "test_rows", "untested_reasons"]
