"""What the causal check measured: ΔNLL matrices per target, their random baseline, tables and the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.artifacts.causal import TestRow
from sparcom.artifacts.summary import header, model_info
from sparcom.causal import answers as ans
from sparcom.causal.dose import DoseResponse
from sparcom.causal.interventions import AblationStats
from sparcom.causal.nll import ScoredExample
from sparcom.causal.plan import set_size
from sparcom.causal.settings import FORMAT, VERSION, CausalSettings
from sparcom.causal.statistics import DESCRIPTIVE_NOTE, CausalStatistics, cell_statistics
from sparcom.components import ComponentSet
from sparcom.data.schema import category_label
from sparcom.results import Tabular


@dataclass
class TargetResult:
    """The ΔNLL matrix of one target (a group of component kinds), its random baseline and its accuracy."""

    name: str
    kinds: list[str]
    ablated: list[str]
    evaluated: list[str]
    ablations: dict[str, ComponentSet]
    nll: np.ndarray  # [A, C] mean NLL with c's set ablated
    delta: np.ndarray  # [A, C]
    random_delta: np.ndarray  # [A, N, C]
    stats: dict[str, AblationStats] = field(default_factory=dict)
    selected_sums: np.ndarray | None = None  # [A, n] per-row summed NLL with each category's set deactivated
    random_sums: np.ndarray | None = None  # [A, N, n] per-row summed NLL with each random set
    statistics: CausalStatistics | None = None  # damage and specificity tests (sparcom.causal.statistics)
    fold_sizes: dict[str, list[int]] | None = None  # cross-fitting: each category's set size in every fold
    intervention: str = "zero"  # how the sets were deactivated (sparcom.causal.plan.INTERVENTIONS)
    control: str = "shape"  # how the random sets were matched (sparcom.causal.plan.CONTROLS)
    matching: list[dict[str, Any]] = field(default_factory=list)  # MatchRow.row() per category and statistic

    def cells(self) -> dict[str, np.ndarray]:
        """Per cell against that cell's random sets (descriptive: the decisions are :meth:`tests`)."""
        return cell_statistics(self.delta, self.random_delta)

    def sizes(self) -> dict[str, int | float]:
        """Set size per category (cross-fitting: the mean of the per-fold sizes, :func:`~sparcom.causal.plan.set_size`;
        the same number as the statistics' ``set_size``)."""
        if self.fold_sizes:
            return {c: set_size(self.fold_sizes[c]) for c in self.ablated}
        return {c: self.ablations[c].size() for c in self.ablated}

    def tests(self) -> list[TestRow]:
        """Per category: damage and specificity with intervals, p-values (and their test), and the decision."""
        return self.statistics.tests if self.statistics is not None else []


@dataclass
class CausalResult(Tabular):
    """Everything the causal check measured, with the settings and identities needed to reproduce it."""

    settings: CausalSettings
    model: dict[str, Any]
    selection: dict[str, Any]
    data: dict[str, Any]
    template: str
    system_prompt: str | None
    examples: list[ScoredExample]
    evaluated: list[str]
    baseline: dict[str, dict[str, float | int]]
    baseline_sums: np.ndarray
    counts: np.ndarray
    targets: dict[str, TargetResult]
    per_example: dict[str, np.ndarray] = field(default_factory=dict)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)
    wall_time_seconds: float = 0.0
    software: dict[str, str] = field(default_factory=dict)
    #: Every control's target results, in the order of ``settings.controls``; the first control's are ``targets``.
    controls: dict[str, dict[str, TargetResult]] = field(default_factory=dict)
    #: Dose–response curves (``--dose-response``; None without).
    dose: DoseResponse | None = None

    def other_controls(self) -> dict[str, dict[str, TargetResult]]:
        """The target results of every control after the first (tables, summary and report list them apart)."""
        first = next(iter(self.controls), None)
        return {c: targets for c, targets in self.controls.items() if c != first}

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """CSV tables by file stem (long format, one row per cell / seed / layer / example)."""
        tables: dict[str, list[dict[str, Any]]] = {"nll_baseline": [], "delta_nll": [], "random_delta_nll": [],
                                                   "set_sizes": [], "per_example_nll": []}
        for category in self.evaluated:
            b = self.baseline[category]
            tables["nll_baseline"].append({"category": category, "label": category_label(category),
                                           "instructions": b["instructions"], "tokens": b["tokens"], "nll": b["nll"]})
        for name, t in self.targets.items():
            for stem, rows in self._target_tables(name, t).items():
                tables.setdefault(stem, []).extend(rows)
        for control, targets in self.other_controls().items():
            for name, t in targets.items():
                for stem, rows in self._target_tables(name, t, with_sets=False).items():
                    tables.setdefault(f"{stem}_{control}", []).extend(rows)
        matching = [row for targets in self.controls.values() for t in targets.values() for row in t.matching]
        if matching:
            tables["control_matching"] = matching
        if self.dose is not None:
            tables.update(self.dose.tables())
        for condition, sums in self.per_example.items():
            for i, example in enumerate(self.examples):
                tokens = int(self.counts[i])
                tables["per_example_nll"].append({"condition": condition, "row_id": example.row_id,
                                                  "category": example.category, "tokens": tokens,
                                                  "nll_sum": sums[i], "nll_mean": sums[i] / tokens})
        if self.accuracy:
            tables["accuracy"] = self.accuracy
        return {name: rows for name, rows in tables.items() if rows}

    def _target_tables(self, name: str, t: TargetResult, with_sets: bool = True) -> dict[str, list[dict[str, Any]]]:
        """One target's long tables (its cells against its random sets, each random set, set sizes, statistics)."""
        tables: dict[str, list[dict[str, Any]]] = {"delta_nll": [], "random_delta_nll": [], "set_sizes": []}
        sig = t.cells()
        sizes = t.sizes()
        for a, ablated in enumerate(t.ablated):
            for j, evaluated in enumerate(t.evaluated):
                tables["delta_nll"].append({
                    "target": name, "ablated": ablated, "ablated_label": category_label(ablated),
                    "set_size": sizes[ablated], "evaluated": evaluated,
                    "evaluated_label": category_label(evaluated),
                    "nll_base": self.baseline[evaluated]["nll"], "nll_ablated": t.nll[a, j],
                    "delta_nll": t.delta[a, j], "random_mean": sig["mean"][a, j], "random_std": sig["std"][a, j],
                    "random_min": sig["min"][a, j], "random_max": sig["max"][a, j],
                    "seeds": t.random_delta.shape[1], "excess_over_random": sig["excess"][a, j],
                    "z": sig["z"][a, j], "p_value": sig["p"][a, j]})
                for s in range(t.random_delta.shape[1]):
                    tables["random_delta_nll"].append({
                        "target": name, "ablated": ablated, "seed": self.settings.seed + s, "evaluated": evaluated,
                        "delta_nll": t.random_delta[a, s, j]})
            if with_sets:
                tables["set_sizes"] += set_size_rows(name, ablated, t.ablations[ablated])
        if t.statistics is not None:
            for stem, rows in t.statistics.tables().items():
                tables.setdefault(stem, []).extend(rows)
        if t.fold_sizes and with_sets:
            tables.setdefault("fold_set_sizes", []).extend(
                {"target": name, "category": c, "fold": f, "selected": n}
                for c, sizes_f in t.fold_sizes.items() for f, n in enumerate(sizes_f))
        return {stem: rows for stem, rows in tables.items() if rows}

    def matrices(self) -> dict[str, list[dict[str, Any]]]:
        """Wide ΔNLL matrices by file stem: one row per ablated category, one column per evaluated category."""
        result = {}
        for name, t in self.targets.items():
            result[f"delta_nll_matrix_{name}"] = [
                {"ablated": category_label(c), **{category_label(e): t.delta[a, j] for j, e in enumerate(t.evaluated)}}
                for a, c in enumerate(t.ablated)]
            if t.statistics is not None:
                result.update(t.statistics.matrices())
        for control, targets in self.other_controls().items():
            for t in targets.values():
                if t.statistics is not None:
                    result.update({f"{stem}_{control}": rows for stem, rows in t.statistics.matrices().items()})
        return result

    def summary(self) -> dict[str, Any]:
        targets = {name: target_summary(t) for name, t in self.targets.items()}
        accuracy = None
        if self.settings.generate:
            accuracy = {"checks": {c: ans.CHECKS[c] for c in self.evaluated if c in ans.CHECKS},
                        "rows": self.accuracy}
        data = {**self.data, "run": None, "categories": list(self.evaluated),
                "tokens": self.data.get("scored_tokens", {})}
        data.pop("scored_tokens", None)
        return {
            **header(FORMAT, VERSION, model=model_info(self.model), data=data, settings=self.settings.to_json(),
                     measurement={"template": self.template, "system_prompt": self.system_prompt,
                                  "nll_unit": "nats per response token, tokens pooled within a category"},
                     software=self.software),
            "selection": self.selection,
            "baseline": self.baseline, "targets": targets, "accuracy": accuracy, "notes": self.notes,
            "overridden": self.overridden, "wall_time_seconds": round(self.wall_time_seconds, 3),
            **({"controls": {control: {name: target_summary(t) for name, t in targets.items()}
                             for control, targets in self.other_controls().items()}}
               if self.other_controls() else {}),
            **({"dose_response": self.dose.summary()} if self.dose is not None else {}),
        }


def set_size_rows(target: str, category: str, ablation: ComponentSet) -> list[dict[str, Any]]:
    return [{"target": target, "category": category, **row} for row in ablation.block_counts()]


def target_summary(t: TargetResult) -> dict[str, Any]:
    """One target's record in summary.json (with its control and match when they are not the defaults)."""
    sig = t.cells()
    record = {
        "kinds": t.kinds, "intervention": t.intervention, "ablated": t.ablated, "evaluated": t.evaluated,
        "set_sizes": t.sizes(),
        "nll_ablated": t.nll, "delta_nll": t.delta,
        "random": {"seeds": int(t.random_delta.shape[1]), "mean": sig["mean"], "std": sig["std"],
                   "min": sig["min"], "max": sig["max"]},
        "excess_over_random": sig["excess"],
        "descriptive_cells": {"note": DESCRIPTIVE_NOTE, "z": sig["z"], "p_value": sig["p"]},
        "expert_removal": {c: {"removed_slots": s.removed_slots, "routed_slots": s.routed_slots,
                               "fallback_tokens": s.fallback_tokens} for c, s in t.stats.items()
                           if s.routed_slots} or None,
        "statistics": t.statistics.summary() if t.statistics is not None else None,
        "fold_set_sizes": t.fold_sizes,
    }
    if t.control != "shape":
        record["control"] = t.control
    if t.matching:
        record["matching"] = t.matching
    return record
