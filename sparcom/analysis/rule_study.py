"""The rule / ε study: how specific is each selection rule's output, over its ε grid, on one grouped run?

For every rule variant and every ε of its grid (:attr:`SelectionRule.sweep_grid` plus its default) one row of
:func:`sparcom.analysis.validity.validity_sweep`: set sizes, general and unique shares, held-out decoding of both
decoders against random sets of the same per-layer shape (accuracy, Wilson CI, random mean and sd, empirical p),
the centroid on all components, chance, stability across folds, and cross-source agreement (within vs across
categories). Folds, random draws and the pass over the counts are shared by all rows. ε means a fraction for
percentile, layer-percentile, lape and contrast; an absolute frequency for threshold; the minimum effect for
test — so rules are best compared at equal set size, which each row gives as ``mean_fraction`` (the mean share of
the N components selected per category).

This is the evidence behind the recommended default rule (docs/analysis.md); ``sparcom sweep`` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.analysis.evidence import NO_GROUPS_NOTE, ValiditySettings, has_groups, run_groups
from sparcom.analysis.pipeline import _select_kinds
from sparcom.analysis.selection import PAPER_RULE, RULES, SelectionRule
from sparcom.analysis.validity import validity_sweep
from sparcom.artifacts.run import ProfileRun
from sparcom.artifacts.summaries import SUMMARY_VERSION, SWEEP_FORMAT
from sparcom.artifacts.summary import run_header
from sparcom.errors import SparcomError
from sparcom.results import Tabular

#: Rule names the study accepts beyond :data:`RULES`: the contrast against the mean of the other categories.
EXTRA_VARIANTS = {"contrast-mean": {"name": "contrast", "against": "mean"}}
#: The default study: every rule, both contrasts; threshold at its grid of absolute frequencies.
STUDY_RULES: tuple[str, ...] = ("percentile", "layer-percentile", "lape", "contrast", "contrast-mean", "test",
                                "threshold")
#: The ε a threshold row calls its default (the grid is what matters).
THRESHOLD_DEFAULT = 0.9


def study_rules(names: Sequence[str] = STUDY_RULES, against: str = "max", fdr: float | None = None,
                ) -> list[SelectionRule]:
    """Rule variants by name (:data:`RULES` and ``contrast-mean``); ``against`` and ``fdr`` set the plain
    ``contrast`` and ``test`` parameters."""
    rules = []
    for name in names:
        if name in EXTRA_VARIANTS:
            rules.append(SelectionRule(**EXTRA_VARIANTS[name]))
        elif name == "threshold":
            rules.append(SelectionRule("threshold", THRESHOLD_DEFAULT))
        elif name == "attribution":
            raise SparcomError("the rule study judges rules by the validity of frequency selections; rule "
                               "'attribution' is judged by the cross-fitted causal check (docs/attribution.md)")
        elif name in RULES:
            extra: dict[str, Any] = {"against": against} if name == "contrast" else {}
            if name == "test" and fdr is not None:
                extra["fdr"] = fdr
            rules.append(SelectionRule(name, **extra))
        else:
            raise SparcomError(f"unknown rule {name!r} for the study; choose from "
                               f"{', '.join([*(r for r in RULES if r != 'attribution'), *EXTRA_VARIANTS])}")
    return rules


def _best(rows: list[dict]) -> dict[str, Any]:
    """Per variant, the ε with the highest set-score accuracy (ties: the smaller set) and its row's numbers."""
    best: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        candidates = [r for r in rows if r["variant"] == variant and np.isfinite(r["set_score_accuracy"])]
        if candidates:
            top = max(candidates, key=lambda r: (r["set_score_accuracy"], -r["mean_fraction"]))
            best[variant] = {key: top[key] for key in SUMMARY_COLUMNS if key in top}
    return best


#: The columns a summary (and a demo section) shows for one study row.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "rule", "variant", "epsilon", "mean_fraction", "selected_any", "general_share", "unique_share",
    "set_score_accuracy", "set_score_ci_low", "set_score_ci_high", "set_score_random_mean", "set_score_p",
    "centroid_accuracy", "centroid_ci_low", "centroid_ci_high", "centroid_random_mean", "centroid_p",
    "all_components_accuracy", "chance", "stability", "cross_source_within", "cross_source_across")


@dataclass
class RuleStudy(Tabular):
    """The study's rows per kind (one per rule variant and ε) and what they were computed with."""

    run: ProfileRun
    rules: list[SelectionRule]
    settings: ValiditySettings
    rows: dict[str, list[dict]]
    notes: list[str] = field(default_factory=list)

    def row(self, kind: str, variant: str, epsilon: float) -> dict:
        """The row of one rule variant at one ε (e.g. ``row("neuron", "percentile", 0.01)``)."""
        for r in self.rows[kind]:
            if r["variant"] == variant and np.isclose(r["epsilon"], epsilon):
                return r
        raise SparcomError(f"the study has no {kind} row for {variant} at ε = {epsilon}")

    def summary(self) -> dict[str, Any]:
        kinds = {}
        for kind, rows in self.rows.items():
            paper = [r for r in rows if r["variant"] == PAPER_RULE.variant and r["is_default"]]
            kinds[kind] = {"paper_rule": {k: paper[0][k] for k in SUMMARY_COLUMNS} if paper else None,
                           "best_set_score_per_rule": _best(rows),
                           "rows": [{k: r[k] for k in SUMMARY_COLUMNS if k in r} for r in rows]}
        return {**run_header(SWEEP_FORMAT, SUMMARY_VERSION, self.run, self.settings.parameters()),
                "rules": [r.parameters | {"variant": r.variant} for r in self.rules], "kinds": kinds,
                "notes": self.notes}

    def tables(self) -> dict[str, list[dict]]:
        return {"validity_sweep": [row for rows in self.rows.values() for row in rows]}


def rule_study(run: ProfileRun, rules: Sequence[SelectionRule] | None = None, kinds: list[str] | None = None,
               epsilons: Mapping[str, Sequence[float]] | None = None,
               settings: ValiditySettings | None = None) -> RuleStudy:
    """Run the study (see the module) for every (or the given) kind of a run profiled with groups."""
    settings = (settings or ValiditySettings()).check()
    if not has_groups(run):
        raise SparcomError(f"{run.path}: {NO_GROUPS_NOTE}")
    rules = list(rules) if rules else study_rules()
    if len({r.variant for r in rules}) != len(rules):
        raise SparcomError("a rule is named twice in the study; name each rule once")
    rows = {}
    for kind in _select_kinds(run, kinds):
        groups = run_groups(run, kind)
        kind_rows = validity_sweep(groups, rules, epsilons, settings.folds, settings.seed, settings.random_sets,
                                   settings.level)
        for row in kind_rows:
            sizes = [row[f"selected_{c}"] for c in groups.category_order]
            row["mean_fraction"] = float(np.mean(sizes)) / groups.layout.size if groups.layout.size else float("nan")
        rows[kind] = kind_rows
    notes = ["ε is a fraction for percentile, layer-percentile, lape and contrast, an absolute frequency for "
             "threshold and the minimum effect for test: compare rules at equal mean_fraction"]
    return RuleStudy(run, rules, settings, rows, notes)
