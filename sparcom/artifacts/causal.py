"""The causal check's per-category test: its numbers and its decision, one typed value from the statistics to the
summary.json that stores it and back to every reader (report, demo, claims, CLI).

The decision is made once, by :func:`sparcom.causal.decisions.decide`, and stored as a :class:`Decision`: the
verdict, the two booleans it rests on and why a category could not be tested. Readers never recompute it and never
parse a sentence; the words are rendered by ``sparcom.report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sparcom.artifacts.fields import Fields, read_document
from sparcom.artifacts.summary import Header, read_record

CAUSAL_FORMAT = "sparcom-causal"
#: The schema version of the causal summary (2: the common header, decisions stored as values; 3: one calibrated
#: decision per claim — the row-aware empirical test — stored with each category and each target; 4: each claim
#: decided in a fixed sequence, its pooled test stored with it).
CAUSAL_VERSION = 4


class Outcome(StrEnum):
    """One category's decision for one claim (critical role or specificity)."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    NOT_ENOUGH = "not enough evidence"


class Verdict(StrEnum):
    """Both claims of one category in one phrase (derived from the two outcomes by :func:`verdict_of`)."""

    SPECIFIC = "specific"
    CRITICAL = "critical but not specific"
    CRITICAL_UNDECIDED = "critical, specificity undecided"
    SELECTIVE = "selective but not critical"
    SELECTIVE_UNDECIDED = "selective, damage undecided"
    NO_EFFECT = "no effect beyond random"
    NOT_ENOUGH = "not enough evidence"


_VERDICTS = {
    (Outcome.HOLDS, Outcome.HOLDS): Verdict.SPECIFIC,
    (Outcome.HOLDS, Outcome.DOES_NOT_HOLD): Verdict.CRITICAL,
    (Outcome.HOLDS, Outcome.NOT_ENOUGH): Verdict.CRITICAL_UNDECIDED,
    (Outcome.DOES_NOT_HOLD, Outcome.HOLDS): Verdict.SELECTIVE,
    (Outcome.NOT_ENOUGH, Outcome.HOLDS): Verdict.SELECTIVE_UNDECIDED,
    (Outcome.DOES_NOT_HOLD, Outcome.DOES_NOT_HOLD): Verdict.NO_EFFECT,
}


def verdict_of(damage: Outcome, specificity: Outcome) -> Verdict:
    """The phrase for a category whose critical-role outcome is ``damage`` and specificity outcome ``specificity``:
    "not enough evidence" when neither holds and one could not be decided."""
    return _VERDICTS.get((damage, specificity), Verdict.NOT_ENOUGH)


@dataclass(frozen=True)
class Decision:
    """One category's two claim outcomes and what they rest on (decided once by
    :func:`sparcom.causal.decisions.decide_target`; stored; only rendered elsewhere)."""

    verdict: Verdict
    damage: Outcome
    specificity: Outcome
    #: Why a claim is "not enough evidence" ("" when it was decided): untestable, or no p_holm could reach α.
    damage_reason: str
    specificity_reason: str
    alpha: float
    #: The smallest Holm-adjusted p the family could reach: m / (1 + R) (NaN when nothing was tested).
    best_p_holm: float
    #: Random sets a family of this size needs for Holm to reach α (None: nothing tested).
    random_sets_needed: int | None
    rule: str

    @property
    def damage_significant(self) -> bool:
        return self.damage is Outcome.HOLDS

    @property
    def specificity_significant(self) -> bool:
        return self.specificity is Outcome.HOLDS

    @property
    def reason(self) -> str:
        """Why the category could not be tested ("" when it was): set when the damage test could not run."""
        return self.damage_reason if self.damage_reason.startswith("not tested") else ""

    def outcome(self, claim: str) -> Outcome:
        return self.damage if claim == "damage" else self.specificity

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "damage": self.damage.value, "specificity": self.specificity.value,
                "damage_reason": self.damage_reason, "specificity_reason": self.specificity_reason,
                "alpha": self.alpha, "best_p_holm": _finite(self.best_p_holm),
                "random_sets_needed": self.random_sets_needed, "rule": self.rule}

    @classmethod
    def read(cls, f: Fields) -> Decision:
        return cls(f.choice("verdict", Verdict), f.choice("damage", Outcome), f.choice("specificity", Outcome),
                   f.text("damage_reason"), f.text("specificity_reason"), f.number("alpha"),
                   f.number("best_p_holm"), f.opt_integer("random_sets_needed"), f.text("rule"))


#: The claim-level outcome when the pooled test holds yet no single category is resolved.
ON_AVERAGE = "holds on average"


@dataclass(frozen=True)
class PooledTest:
    """A claim's one test over a target's tested categories together: the mean of their statistics against the
    mean of the random sets' (draw r of every category), row-aware (:func:`sparcom.causal.decisions.pooled_test`)."""

    estimate: float  # mean over the tested categories of S_c's statistic
    random_mean: float  # mean over draws of the random sets' pooled statistic
    p: float
    se_rows: float
    df: float
    outcome: Outcome
    reason: str
    categories: int

    def to_json(self) -> dict[str, Any]:
        return {"estimate": _finite(self.estimate), "random_mean": _finite(self.random_mean), "p": _finite(self.p),
                "se_rows": _finite(self.se_rows), "df": _finite(self.df), "outcome": self.outcome.value,
                "reason": self.reason, "categories": self.categories}

    @classmethod
    def read(cls, f: Fields) -> PooledTest:
        return cls(f.number("estimate"), f.number("random_mean"), f.number("p"), f.number("se_rows"),
                   f.number("df"), f.choice("outcome", Outcome), f.text("reason"), f.integer("categories"))


@dataclass(frozen=True)
class ClaimDecision:
    """A causal claim over one target's categories, decided in a fixed sequence (docs/causal.md, "The decision
    rule"): first the pooled test of all tested categories together at α; only if it holds, the categories one by
    one (Holm at α). Outcome: holds (in all K categories), partly (k of K), holds on average (pooled, no single
    category resolved), else the pooled test's outcome (does not hold / not enough evidence). K counts every
    ablated category present among the evaluated rows, untestable ones included."""

    claim: str  # "critical role" or "specificity"
    outcome: str
    holds: int
    categories: int
    not_enough: int
    holding: tuple[str, ...]
    pooled: PooledTest | None = None

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "outcome": self.outcome, "holds": self.holds, "categories": self.categories,
                "not_enough": self.not_enough, "holding": list(self.holding),
                "pooled": self.pooled.to_json() if self.pooled else None}

    @classmethod
    def read(cls, f: Fields) -> ClaimDecision:
        pooled = f.opt_obj("pooled")
        return cls(f.text("claim"), f.text("outcome"), f.integer("holds"), f.integer("categories"),
                   f.integer("not_enough"), tuple(f.texts("holding")), PooledTest.read(pooled) if pooled else None)


@dataclass(frozen=True)
class Contrast:
    """One statistic of a category's set (damage or specificity) against the random sets of its shape."""

    estimate: float
    low: float
    high: float
    random_mean: float
    random_std: float
    excess: float
    excess_low: float
    excess_high: float
    z: float
    p: float
    p_holm: float
    #: The test behind ``p`` (the row-aware empirical test), the plain rank p beside it (descriptive: it treats
    #: the rows as fixed), and the row standard error and degrees of freedom of the excess the test used.
    test: str
    p_empirical: float
    se_rows: float
    df: float

    def to_json(self, name: str) -> dict[str, Any]:
        """Flat fields ``{name}``, ``{name}_low`` … (the columns of specificity_tests.csv)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            key = name if f.name == "estimate" else f"{name}_{f.name}"
            value = getattr(self, f.name)
            out[key] = _finite(value) if isinstance(value, float) else value
        return out

    @classmethod
    def read(cls, f: Fields, name: str) -> Contrast:
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = name if field.name == "estimate" else f"{name}_{field.name}"
            if field.name == "test":
                values[field.name] = f.text(key)
            else:
                values[field.name] = f.number(key)
        return cls(**values)


@dataclass(frozen=True)
class TestRow:
    """Damage and specificity of one category's set against random sets of its shape, and the decision."""

    __test__ = False  # not a pytest class

    ablated: str
    set_size: int | float | None
    random_sets: int
    damage: Contrast
    #: Mean ΔNLL of the set on the other evaluated categories.
    others: float
    specificity: Contrast
    #: The random sets' pooled own-to-others damage ratio ρ, and own − ρ · others with its interval.
    ratio_random: float
    scaled_specificity: float
    scaled_specificity_low: float
    scaled_specificity_high: float
    decision: Decision

    @property
    def tested(self) -> bool:
        return not self.decision.reason

    def to_json(self) -> dict[str, Any]:
        """Flat JSON (and CSV) fields, the decision as one object."""
        return {"ablated": self.ablated, "set_size": self.set_size, "random_sets": self.random_sets,
                **self.damage.to_json("damage"), "others": _finite(self.others),
                **self.specificity.to_json("specificity"), "ratio_random": _finite(self.ratio_random),
                "scaled_specificity": _finite(self.scaled_specificity),
                "scaled_specificity_low": _finite(self.scaled_specificity_low),
                "scaled_specificity_high": _finite(self.scaled_specificity_high),
                "decision": self.decision.to_json()}

    def table_row(self) -> dict[str, Any]:
        """One CSV row: the flat fields with the decision's fields beside them."""
        row = self.to_json()
        decision = row.pop("decision")
        outcomes = {f"{claim}_outcome": decision.pop(claim) for claim in ("damage", "specificity")}
        return {**row, **outcomes, **decision}

    @classmethod
    def read(cls, f: Fields) -> TestRow:
        return cls(f.text("ablated"), f.opt_size("set_size"), f.integer("random_sets"), Contrast.read(f, "damage"),
                   f.number("others"), Contrast.read(f, "specificity"), f.number("ratio_random"),
                   f.number("scaled_specificity"), f.number("scaled_specificity_low"),
                   f.number("scaled_specificity_high"), Decision.read(f.obj("decision")))


@dataclass(frozen=True)
class TargetTests:
    """The damage and specificity tests of one target, as stored (``statistics`` of a target)."""

    random_sets: int
    rows: dict[str, int]
    replicates: int
    level: float
    alpha: float
    tests: list[TestRow]
    #: Critical role and specificity over the target's categories, as decided (keys "damage", "specificity").
    claims: dict[str, ClaimDecision]
    rule: str
    #: The random sets planned, when the check stopped after ``random_sets`` once no draw could change a decision
    #: (``--stop-when-decided``; the decisions are those of the planned number). None: all were drawn.
    planned_random_sets: int | None = None

    @property
    def stopped_early(self) -> bool:
        return self.planned_random_sets is not None and self.planned_random_sets > self.random_sets

    @classmethod
    def read(cls, f: Fields) -> TargetTests:
        boot, power = f.obj("bootstrap"), f.obj("power")
        return cls(f.integer("random_sets"), f.counts("rows"), boot.integer("replicates"), boot.number("level"),
                   power.number("alpha"), [TestRow.read(t) for t in f.items("tests")],
                   f.mapping("claims", lambda g, name: ClaimDecision.read(g.obj(name))), f.text("rule"),
                   f.opt_integer("planned_random_sets"))


#: How each control's random sets are matched, in words (the report and SUMMARY.md name it beside every number).
CONTROL_WORDS: dict[str, str] = {
    "shape": "random sets of the same per-layer shape",
    "frequency": "random sets matched on layer and activation frequency (near misses)",
    "magnitude": "random sets matched on layer and expected contribution (near misses)",
    "frequency-bin": "random sets matched on layer and activation frequency (whole bins, the set's members included)",
    "magnitude-bin": "random sets matched on layer and expected contribution (whole bins, the set's members included)",
}
#: What each intervention does to a deactivated neuron, in words.
INTERVENTION_WORDS: dict[str, str] = {
    "zero": "activations set to zero",
    "mean": "activations set to their mean over the profile run",
    "resample": "activations resampled from rows of other categories",
}


def control_words(control: str) -> str:
    """How a control's random sets are matched, in words (a control without words: its name)."""
    return CONTROL_WORDS.get(control, f"random sets matched by {control}")


def intervention_words(intervention: str) -> str:
    return INTERVENTION_WORDS.get(intervention, f"{intervention} ablation")


@dataclass(frozen=True)
class CausalTarget:
    """One target of a causal check: its ΔNLL matrix, the random sets' per-cell numbers and its tests."""

    name: str
    kinds: list[str]
    ablated: list[str]
    evaluated: list[str]
    set_sizes: dict[str, int | float]
    delta: list[list[float]]
    random_sets: int
    random_mean: list[list[float]]
    random_std: list[list[float]]
    excess: list[list[float]]
    #: Per-cell z and empirical p (descriptive only; the decisions are in ``statistics.tests``).
    cell_z: list[list[float]]
    cell_p: list[list[float]]
    statistics: TargetTests | None
    #: Whatever else the target holds (expert removal counts, fold sizes, later statistics), shown generically.
    extra: dict[str, Any]
    #: What the selected sets' activations became (``zero`` in checks made before interventions were recorded).
    intervention: str = "zero"
    #: How the random sets were matched to the selected sets (recorded when not ``shape``).
    control: str = "shape"

    KNOWN = ("kinds", "ablated", "evaluated", "set_sizes", "nll_ablated", "delta_nll", "random", "excess_over_random",
             "descriptive_cells", "statistics", "intervention", "control")

    @property
    def baseline_words(self) -> str:
        """The random sets' matching in words, for tables and figures."""
        return control_words(self.control)

    @property
    def intervention_words(self) -> str:
        return intervention_words(self.intervention)

    @property
    def tests(self) -> list[TestRow]:
        return self.statistics.tests if self.statistics is not None else []

    @classmethod
    def read(cls, f: Fields, name: str) -> CausalTarget:
        random, cells, stats = f.obj("random"), f.obj("descriptive_cells"), f.opt_obj("statistics")
        return cls(name, f.texts("kinds"), f.texts("ablated"), f.texts("evaluated"), f.sizes("set_sizes"),
                   f.matrix("delta_nll"), random.integer("seeds"), random.matrix("mean"), random.matrix("std"),
                   f.matrix("excess_over_random"), cells.matrix("z"), cells.matrix("p_value"),
                   TargetTests.read(stats) if stats else None,
                   {k: v for k, v in f.data.items() if k not in cls.KNOWN and v is not None},
                   f.opt_text("intervention") or "zero", f.opt_text("control") or "shape")


@dataclass(frozen=True)
class Baseline:
    instructions: int
    tokens: int
    nll: float


@dataclass(frozen=True)
class CausalSummary:
    """What ``sparcom ablate`` wrote (summary.json of the causal check's folder)."""

    path: Path
    header: Header
    selection: dict[str, Any]
    baseline: dict[str, Baseline]
    targets: dict[str, CausalTarget]
    #: Exact-match rows (None: the check ran without --generate).
    accuracy: list[dict[str, Any]] | None
    notes: list[str]
    overridden: list[str]
    wall_time_seconds: float

    @property
    def evaluated(self) -> list[str]:
        return self.header.data.categories

    @classmethod
    def read(cls, f: Fields, path: Path) -> CausalSummary:
        accuracy = f.opt_obj("accuracy")
        return cls(path, Header.read(f), dict(f.obj("selection").data),
                   f.mapping("baseline", lambda g, c: read_record(Baseline, g.obj(c))),
                   f.mapping("targets", lambda g, name: CausalTarget.read(g.obj(name), name)),
                   [dict(r.data) for r in accuracy.items("rows")] if accuracy else None, f.texts("notes"),
                   f.texts("overridden"), f.number("wall_time_seconds"))


def read_causal(folder: str | Path) -> CausalSummary:
    """The causal check's summary in ``folder`` (or the summary.json file itself)."""
    path = Path(folder)
    file = path / "summary.json" if path.is_dir() else path
    return CausalSummary.read(read_document(file, CAUSAL_FORMAT, CAUSAL_VERSION), file.parent)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


__all__ = [
    "CAUSAL_FORMAT",
    "CAUSAL_VERSION",
    "CONTROL_WORDS",
    "INTERVENTION_WORDS",
    "ON_AVERAGE",
    "Baseline",
    "CausalSummary",
    "CausalTarget",
    "ClaimDecision",
    "Contrast",
    "Decision",
    "Outcome",
    "PooledTest",
    "TargetTests",
    "TestRow",
    "Verdict",
    "control_words",
    "intervention_words",
    "read_causal",
    "verdict_of",
]
