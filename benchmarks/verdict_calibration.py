"""Calibration of the causal verdicts (critical role, specificity) by simulation: false-positive rate and power
of the rule sparcom used before 2026-12-07 (re-implemented here: it is gone from the package) beside the live one
(sparcom.causal.statistics.decide, the code the causal check runs), on per-row NLL tables generated under null and
alternative scenarios.

Usage: python benchmarks/verdict_calibration.py [--quick] [--runs N] [--json PATH] [--seed S] [--part P]

Each simulated data set is what the real code receives: base NLL sums [n], selected [A, n], random [A, R, n],
token counts [n] and row categories (six categories). Per row i of category c, a condition with per-category
strengths s_c damages it by (s_c · f_i + ε) nats per token, where f_i is the row's fragility — shared by every
condition (lognormal, mean 1 in every category: rows that are fragile are fragile for every set) — and ε is
per-row, per-condition noise (sd 0.1). Random sets draw s_c per category from a law (normal 0.1 ± 0.03 by
default; lognormal, t₃ and a 3 % catastrophic mixture for the skewed and heavy-tailed scenarios).

Null scenarios (the claim named is false in the population):
  a  strong non-specific set: s_c = 2 on every category (critical, not specific)
  b  the selected set is one more random set (skewed and heavy-tailed laws): neither claim holds
  c  few rows: (a) and (b) with 3 rows a category
  d  critical for these rows only: S damages rows very unevenly (lognormal factor, mean 1) with the random sets'
     mean strength: neither claim holds in the population
Alternatives: a truly specific set (s = 0.5 on the others, 0.5 + δ on its own category) and a truly critical one
(s = 0.1 + δ everywhere).

Per scenario and claim: the rate at which the claims table reports at least one category ("any": under the null
the family-wise false-positive rate, target ≤ α), the per-category rate (under an alternative, the power), both
with their Monte-Carlo standard errors, for four rules: "new claim" (the claims table's verdict under the live
rule: holds in any form, i.e. the pooled test held — its false-positive rate under a null is the claim's), "old claims" (the old claims table's count of p_holm ≤ α
under the old CLI default test, auto: the empirical rank p on these rows when R ≥ K/α − 1, else the t tail of the
random sets with a Shapiro–Wilk fallback to the empirical p; re-implemented in :func:`old_p`), "new" (the live
decision: the row-aware empirical test, Holm) and "iut" (the intersection-union alternative the new rule was chosen
over: the larger of the empirical p on these rows and the row t test of the excess, Holm; shown for its power,
docs/causal.md says why it is not the rule). A sizing table then gives the power of the new rule for a specific set
at a stated effect over rows and random sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from sparcom.artifacts.causal import Outcome
from sparcom.causal.statistics import category_members, contrasts, decide, pooled_cells, settled_after
from sparcom.stats import empirical_p, holm, random_sets_needed, significant

CATS = ["cls", "code", "qa", "gen", "math", "sum"]
ALPHA = 0.05
CLAIM_KEYS = {"damage": "critical role", "specificity": "specificity"}
NOT_HOLDING = (Outcome.DOES_NOT_HOLD.value, Outcome.NOT_ENOUGH.value)


@dataclass(frozen=True)
class Scenario:
    name: str
    selected: str  # strong-flat | exchangeable | uneven | specific | critical
    rows: int = 8  # per category
    random_sets: int = 20
    law: str = "normal"  # the random sets' strength law
    effect: float = 0.0  # δ of the specific or critical alternative, nats per token
    fragility: float = 0.5  # sd of log f (shared row fragility)

    @property
    def null(self) -> dict[str, bool]:
        return {"damage": self.selected in ("exchangeable", "uneven"),
                "specificity": self.selected != "specific"}


def strengths(law: str, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Per-category strengths of random sets, nats per token (mean about 0.1)."""
    if law == "normal":
        return 0.1 + 0.03 * rng.standard_normal(size)
    if law == "lognormal":
        return 0.1 * np.exp(rng.standard_normal(size) - 0.5)
    if law == "t3":
        return 0.1 + 0.03 * rng.standard_t(3, size)
    if law == "mixture":
        return 0.1 + 0.03 * rng.standard_normal(size) + 2.0 * (rng.random(size) < 0.03)
    raise ValueError(law)


def simulate(s: Scenario, rng: np.random.Generator):
    """One data set: base [n], selected [6, n], random [6, R, n], tokens [n], row categories."""
    k = len(CATS)
    labels = [c for c in CATS for _ in range(s.rows)]
    col = np.repeat(np.arange(k), s.rows)
    n = col.size
    tokens = rng.integers(8, 65, n)
    base = rng.uniform(0.8, 2.5, n) * tokens
    fragility = np.exp(s.fragility * rng.standard_normal(n) - s.fragility ** 2 / 2)
    rand = strengths(s.law, (k, s.random_sets, k), rng)  # [A, R, C]
    random = (rand[:, :, col] * fragility + 0.1 * rng.standard_normal((k, s.random_sets, n))) * tokens
    if s.selected == "exchangeable":
        sel = strengths(s.law, (k, k), rng)[:, col] * fragility
    elif s.selected == "strong-flat":
        sel = np.full((k, n), 2.0) * fragility
    elif s.selected == "uneven":
        uneven = np.exp(1.2 * rng.standard_normal((k, n)) - 0.72)
        sel = 0.1 * fragility * uneven
    elif s.selected == "specific":
        sel = (0.5 + s.effect * (np.arange(k)[:, None] == col[None, :])) * fragility
    elif s.selected == "critical":
        sel = np.full((k, n), 0.1 + s.effect) * fragility
    else:
        raise ValueError(s.selected)
    selected = (sel + 0.1 * rng.standard_normal((k, n))) * tokens
    return base, base + selected, base + random, tokens, labels


def old_p(observed: np.ndarray, random: np.ndarray) -> np.ndarray:
    """The old per-category p under ``--test auto`` (what the claims table counted before 2026-12-07): the empirical
    rank p on these rows when Holm could reach α with it, else the one-sided t tail of the random sets (a new
    draw's prediction interval, t with R − 1 df), falling back to the empirical p where Shapiro–Wilk rejects
    normality at 0.05. Rows are treated as fixed: the flaw the new rule fixes."""
    from scipy.stats import shapiro
    from scipy.stats import t as student

    empirical = empirical_p(observed, random)
    r = random.shape[-1]
    if r >= random_sets_needed(observed.size, ALPHA) or r < 10:
        return empirical
    out = empirical.copy()
    for i, values in enumerate(random):
        sd = values.std(ddof=1)
        if sd > 0 and shapiro(values).pvalue >= 0.05:
            out[i] = student.sf((observed[i] - values.mean()) / (sd * np.sqrt(1 + 1 / r)), r - 1)
    return out


def old_rule(data) -> dict[str, dict[str, list[str]]]:
    """Categories passing under the old rule: per claim, the categories with p_holm ≤ α (:func:`old_p`, Holm)."""
    base, selected, random, tokens, labels = data
    diff = np.concatenate([selected[:, None, :], random], axis=1) - base[None, None, :]
    own = np.arange(len(CATS))
    point = contrasts(pooled_cells(diff, tokens.astype(np.float64), category_members(labels, CATS)), own)
    out = {}
    for claim in CLAIM_KEYS:
        p_holm = holm(old_p(point[claim], point[f"{claim}_random"]))
        out[claim] = [c for c, p in zip(CATS, p_holm, strict=True) if significant(p, ALPHA)]
    return {"old claims": out}


def new_rule(data, iut: bool = False) -> dict[str, dict[str, list[str]]]:
    """Categories passing the live rule; with ``iut`` also the intersection-union alternative it was chosen over
    (empirical p on these rows and the row t test of the excess, p = the larger, Holm), to show the power cost."""
    base, selected, random, tokens, labels = data
    tests, claims = decide(base, selected, random, tokens, labels, CATS, alpha=ALPHA)
    out = {"new": {claim: [t.ablated for t in tests if t.decision.outcome(claim) is Outcome.HOLDS]
                   for claim in CLAIM_KEYS},
           # the claims table's verdict: holds in any form (every category, some, or on average by the pooled test)
           "new claim": {claim: ["claim"] if claims[claim].outcome not in NOT_HOLDING else [] for claim in CLAIM_KEYS}}
    if iut:
        from scipy.stats import t as student

        out["iut"] = {}
        for claim in CLAIM_KEYS:
            cs = [getattr(t, claim) for t in tests]
            rows = np.array([student.sf(c.excess / c.se_rows, c.df) if c.se_rows > 0 else float(c.excess <= 0)
                             for c in cs])
            p_holm = holm(np.maximum(rows, np.array([c.p_empirical for c in cs])))
            out["iut"][claim] = [t.ablated for t, p in zip(tests, p_holm, strict=True) if significant(p, ALPHA)]
    return out


def run(s: Scenario, runs: int, seed: int, old: bool = True) -> list[dict]:
    """Rejection rates of every rule on ``runs`` data sets of scenario ``s``."""
    counts: dict[tuple[str, str], list[int]] = {}
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        data = simulate(s, rng)
        passed = new_rule(data, iut=old) | old_rule(data) if old else new_rule(data)
        for rule, by_claim in passed.items():
            for claim, cats in by_claim.items():
                counts.setdefault((rule, claim), []).append(len(cats))
    out = []
    for (rule, claim), ks in counts.items():
        ks_arr = np.asarray(ks, dtype=np.float64)
        anyr = float((ks_arr > 0).mean())
        share = ks_arr / len(CATS)
        out.append({"scenario": s.name, "claim": claim, "rule": rule, "null": s.null[claim],
                    "rejection_rate": anyr, "mc_se": float(np.sqrt(anyr * (1 - anyr) / runs)),
                    "category_rate": float(share.mean()),
                    "category_mc_se": float(share.std(ddof=1) / np.sqrt(runs)) if runs > 1 else float("nan"),
                    "all_rate": float((ks_arr == len(CATS)).mean()), "runs": runs, "rows": s.rows,
                    "random_sets": s.random_sets, "law": s.law, "effect": s.effect})
    return out


def scenarios(quick: bool) -> list[Scenario]:
    """The demo's size (8 rows a category, 20 random sets) and 239 random sets, where the new rule can pass."""
    a = Scenario("a strong non-specific", "strong-flat")
    b = Scenario("b one more random set", "exchangeable")
    d = Scenario("d critical for these rows only", "uneven")
    if quick:
        return [a, replace(a, random_sets=239), replace(b, law="mixture"), replace(b, law="lognormal", random_sets=239),
                replace(a, name="c few rows, strong non-specific", rows=3, random_sets=239),
                replace(d, random_sets=239)]
    out = []
    for r in (20, 239):
        out += [replace(a, random_sets=r), replace(a, rows=200, random_sets=r)]
        out += [replace(b, law=law, random_sets=r) for law in ("normal", "lognormal", "t3", "mixture")]
        out += [replace(a, name="c few rows, strong non-specific", rows=3, random_sets=r),
                replace(b, name="c few rows, one more random set", rows=3, law="lognormal", random_sets=r),
                replace(d, random_sets=r)]
        out += [Scenario("specific", "specific", random_sets=r, effect=e) for e in (0.1, 0.25, 0.5)]
        out += [Scenario("critical", "critical", random_sets=r, effect=e) for e in (0.05, 0.1)]
    return out


def sizing(runs: int, seed: int) -> list[dict]:
    """Power of the new rule for a specific set (δ = 0.25 and 0.5) over rows per category and random sets."""
    out = []
    for effect in (0.25, 0.5):
        for r in (119, 239, 479):
            for rows in (8, 16, 32, 64, 128):
                s = Scenario("sizing specific", "specific", rows=rows, random_sets=r, effect=effect)
                out += [row for row in run(s, runs, seed, old=False) if row["claim"] == "specificity"]
    return out


def decisions(tests, claims) -> tuple:
    """Everything a check stores as a decision: per category both outcomes and reasons, per claim its verdict."""
    return (tuple((t.ablated, t.decision.verdict, t.decision.damage, t.decision.specificity, t.decision.damage_reason,
                   t.decision.specificity_reason) for t in tests),
            tuple((c.outcome, c.holding, None if c.pooled is None else (c.pooled.outcome, c.pooled.reason))
                  for c in claims.values()))


def stopping(runs: int, seed: int, quick: bool) -> list[dict]:
    """``--stop-when-decided``: per scenario, how many random draws a check runs before no further draw can change
    a decision (``settled_after`` after each draw, the causal check's rule), and whether the decisions then made
    (``decide`` on the draws run, ``planned`` = R) differ from those of all R draws — they must never."""
    cases = [Scenario("a strong non-specific", "strong-flat"), Scenario("b one more random set", "exchangeable"),
             Scenario("b one more random set", "exchangeable", law="mixture"),
             Scenario("d critical for these rows only", "uneven"),
             Scenario("specific", "specific", effect=0.25), Scenario("critical", "critical", effect=0.1)]
    cases += [replace(c, random_sets=239) for c in cases[:2]] if not quick else []
    out = []
    for i, s in enumerate(cases):
        rng = np.random.default_rng(seed + 100 * i)
        drawn, differ = [], 0
        for _ in range(runs):
            base, selected, random, tokens, labels = simulate(s, rng)
            r = s.random_sets
            n = next((k for k in range(1, r) if settled_after(base, selected, random[:, :k], tokens, labels, CATS,
                                                              CATS, planned=r)), r)
            drawn.append(n)
            if n < r:
                early = decide(base, selected, random[:, :n], tokens, labels, CATS, CATS, planned=r)
                differ += decisions(*early) != decisions(*decide(base, selected, random, tokens, labels, CATS, CATS))
        d = np.asarray(drawn, dtype=np.float64)
        out.append({"scenario": s.name, "law": s.law, "effect": s.effect, "rows": s.rows, "random_sets": s.random_sets,
                    "runs": runs, "stopped_early": float((d < s.random_sets).mean()), "mean_drawn": float(d.mean()),
                    "share_of_conditions": float((1 + d.mean()) / (1 + s.random_sets)), "decisions_differ": differ})
    return out


def print_stopping(rows: list[dict]) -> None:
    print(f"{'scenario':<58} {'stopped early':>13} {'mean draws':>10} {'conditions':>10} {'differ':>6}")
    for row in rows:
        print(f"{label(row):<58} {row['stopped_early']:>13.2f} {row['mean_drawn']:>10.1f} "
              f"{row['share_of_conditions']:>10.2f} {row['decisions_differ']:>6}")


def label(row: dict) -> str:
    extra = f" {row['law']}" if row["law"] != "normal" else ""
    extra += f" δ={row['effect']:g}" if row["effect"] else ""
    return f"{row['scenario']}{extra}, {row['rows']} rows, R={row['random_sets']}"


def print_table(rows: list[dict]) -> None:
    print(f"{'scenario':<58} {'claim':<12} {'null':<5} {'rule':<12} {'any ± MC se':>14} {'per-cat ± MC se':>16} "
          f"{'runs':>5}")
    for row in rows:
        print(f"{label(row):<58} {row['claim']:<12} {row['null']!s:<5} {row['rule']:<12} "
              f"{row['rejection_rate']:>7.3f} ± {row['mc_se']:.3f} {row['category_rate']:>8.3f} ± "
              f"{row['category_mc_se']:.3f} {row['runs']:>5}")


def check(rows: list[dict]) -> list[str]:
    """The claims of the quick run: the new rule's family-wise false-positive rate within 3 MC errors of ≤ α on
    every null, and the old rule's failure in scenario (a) reproduced."""
    problems = []
    for row in rows:
        if row["rule"] in ("new", "new claim") and row["null"] and row["rejection_rate"] > ALPHA + 3 * max(row["mc_se"], 0.01):
            problems.append(f"new rule above alpha: {label(row)} {row['claim']} {row['rejection_rate']:.3f}")
    old_a = [r for r in rows if r["scenario"].startswith("a ") and r["rule"] == "old claims"
             and r["claim"] == "specificity" and r["rows"] == 8 and r["random_sets"] == 20]
    if not old_a or old_a[0]["rejection_rate"] < 0.5:
        problems.append(f"the old rule's failure in scenario (a) was not reproduced: {old_a}")
    new_a = [r for r in rows if r["scenario"].startswith("a ") and r["rule"] == "new" and r["claim"] == "damage"
             and r["rows"] == 8 and r["random_sets"] == 239]
    if not new_a or new_a[0]["category_rate"] < 0.8:
        problems.append(f"the new rule does not see the strong set's damage with 239 random sets: {new_a}")
    pooled_a = [r for r in rows if r["scenario"].startswith("a ") and r["rule"] == "new claim"
                and r["claim"] == "damage" and r["rows"] == 8 and r["random_sets"] == 20]
    if not pooled_a or pooled_a[0]["rejection_rate"] < 0.8:
        problems.append(f"the pooled test does not decide the strong set's damage with 20 random sets: {pooled_a}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small version (a test runs it)")
    parser.add_argument("--runs", type=int, default=None, help="data sets per scenario (default 1000, quick 200)")
    parser.add_argument("--sizing-runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the table as a JSON list of rows")
    parser.add_argument("--part", choices=("all", "table", "sizing", "stopping"), default="all",
                        help="only the calibration table or only the sizing (to run them side by side)")
    args = parser.parse_args(argv)
    runs = args.runs or (200 if args.quick else 1000)
    start = time.perf_counter()
    rows = []
    for i, s in enumerate(scenarios(args.quick) if args.part in ("all", "table") else []):
        rows += run(s, runs, args.seed + 1000 * i)
        print(f"{label(rows[-1])}: done", file=sys.stderr, flush=True)
    print_table(rows)
    stop_rows = []
    if args.part in ("all", "stopping"):
        stop_rows = stopping(min(runs, 40) if args.quick else runs, args.seed + 5, args.quick)
        print("\nStopping when decided (--stop-when-decided): draws run and decisions that differ from all R:")
        print_stopping(stop_rows)
    if not args.quick and args.part in ("all", "sizing"):
        size_rows = sizing(args.sizing_runs, args.seed + 7)
        print("\nPower of the new rule for a specific set (per category, specificity):")
        print_table(size_rows)
        rows += size_rows
    print(f"\n{time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows + [{"part": "stopping", **r} for r in stop_rows], f, indent=1)
    problems = check(rows) if args.part == "all" else []
    problems += [f"a stopped check decided otherwise than all R draws: {label(r)} ({r['decisions_differ']} data sets)"
                 for r in stop_rows if r["decisions_differ"]]
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
