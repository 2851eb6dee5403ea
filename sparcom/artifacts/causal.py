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
#: The schema version of the causal summary (2: the common header, decisions stored as values).
CAUSAL_VERSION = 2


class Verdict(StrEnum):
    """What one category's tests say (the rule: :data:`sparcom.causal.decisions.VERDICT_RULE`)."""

    SPECIFIC = "specific"
    CRITICAL = "critical but not specific"
    SELECTIVE = "selective but not critical"
    NO_EFFECT = "no effect beyond random"
    TOO_FEW_RANDOM_SETS = "not enough random sets"
    NOT_TESTABLE = "not testable"


@dataclass(frozen=True)
class Decision:
    """One category's verdict and what it rests on (decided once; stored; only rendered elsewhere)."""

    verdict: Verdict
    #: Own damage beyond the random sets: Holm-adjusted damage p ≤ α.
    damage_significant: bool
    #: Own damage beyond the damage to the other categories, by more than random sets: adjusted p ≤ α.
    specificity_significant: bool
    #: A "specific" set whose scaled-specificity interval does not lie above 0 (or is undefined).
    caution: bool
    #: Why the category was not tested ("" when it was).
    reason: str
    alpha: float
    #: The smallest Holm-adjusted p the category's test could reach (0 for a parametric family).
    min_p_holm: float
    #: Random sets an empirical family of this size needs for Holm to reach α (None: nothing tested).
    random_sets_needed: int | None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "damage_significant": self.damage_significant,
                "specificity_significant": self.specificity_significant, "caution": self.caution,
                "reason": self.reason, "alpha": self.alpha, "min_p_holm": _finite(self.min_p_holm),
                "random_sets_needed": self.random_sets_needed}

    @classmethod
    def read(cls, f: Fields) -> Decision:
        return cls(f.choice("verdict", Verdict), f.flag("damage_significant"), f.flag("specificity_significant"), f.flag("caution"),
                   f.text("reason"), f.number("alpha"), f.number("min_p_holm"), f.opt_integer("random_sets_needed"))


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
    #: The test behind ``p``: empirical or parametric (with both p-values and the normality check kept).
    test: str
    p_empirical: float
    p_parametric: float
    normality_p: float
    test_note: str

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
            elif field.name == "test_note":
                values[field.name] = f.opt_text(key) or ""
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
        return {**row, **decision}

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
    test_requested: str
    test_used: str
    tests: list[TestRow]

    @classmethod
    def read(cls, f: Fields) -> TargetTests:
        boot, test, power = f.obj("bootstrap"), f.obj("test"), f.obj("power")
        return cls(f.integer("random_sets"), f.counts("rows"), boot.integer("replicates"), boot.number("level"),
                   power.number("alpha"), test.text("requested"), test.text("used"),
                   [TestRow.read(t) for t in f.items("tests")])


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

    KNOWN = ("kinds", "ablated", "evaluated", "set_sizes", "nll_ablated", "delta_nll", "random", "excess_over_random",
             "descriptive_cells", "statistics")

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
                   {k: v for k, v in f.data.items() if k not in cls.KNOWN and v is not None})


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


__all__ = ["CAUSAL_FORMAT", "CAUSAL_VERSION", "Baseline", "CausalSummary", "CausalTarget", "Contrast", "Decision",
           "TargetTests", "TestRow", "Verdict", "read_causal"]
