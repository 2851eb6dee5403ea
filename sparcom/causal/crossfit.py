"""Cross-fitting: every profiled instruction is scored with sets selected without it.

A causal check needs rows its sets were not selected on. When every row of the data was profiled (the full
demo profiles all 1,200), no row is left over; cross-fitting makes them all usable. The instructions of a run
profiled with ``--group-by instruction`` are split into k folds, stratified by category and source
(:func:`sparcom.analysis.groups.stratified_folds`); for each fold f the rule is applied to the counts pooled over
the other k − 1 folds (exact integer sums of the per-instruction counts, the moments of the same groups for the
``test`` rule, the effects of the same instructions for the ``attribution`` rule), and the rows of fold f are scored with fold f's sets and with random sets of their shape. The
per-row results of the folds are pooled and tested as one check (docs/causal.md, "Cross-fitting").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.analysis.attribution import attributed_kinds, attribution_of, fold_effects
from sparcom.analysis.groups import partition_sums, stratified_folds
from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import ProfileRun
from sparcom.artifacts.selection import Selection, masks_by_key
from sparcom.errors import SparcomError
from sparcom.kinds import kinds_in
from sparcom.provenance import measurement


@dataclass
class FoldSelections:
    """One selection per fold, made without that fold's instructions, and which fold each instruction is in."""

    run: ProfileRun
    rule: SelectionRule
    folds: int
    seed: int
    fold_of: dict[str, int]  # instruction id → its fold
    selections: list[Selection]  # [k]: selection f was made on every fold but f

    def summary(self) -> dict[str, Any]:
        sizes = {kind: [{c: s.size(kind, c) for c in s.categories} for s in self.selections]
                 for kind in self.selections[0].kinds}
        per_fold = np.bincount(list(self.fold_of.values()), minlength=self.folds)
        return {"folds": self.folds, "seed": self.seed, "rule": self.rule.parameters,
                "description": self.rule.describe(), "run": str(self.run.path),
                "instructions_per_fold": [int(n) for n in per_fold], "set_sizes": sizes,
                "scheme": "folds stratified by category and source; each fold's rows are scored with the sets "
                          "selected on the other folds; the folds' per-row results are pooled"}


def fold_selections(run: ProfileRun, rule: SelectionRule, folds: int, seed: int = 0,
                    kinds: list[str] | None = None) -> FoldSelections:
    """Apply ``rule`` to the pooled counts of every k − 1 folds of ``run``'s instructions, for every kind."""
    from sparcom.analysis.groups import load_groups

    groups_meta = run.manifest.get("groups")
    if run.manifest.get("group_by") != "instruction" or not groups_meta:
        raise SparcomError(f"{run.path}: --crossfit-folds needs per-instruction counts, but this run was profiled with "
                           f"--group-by {run.manifest.get('group_by') or 'category'}; re-profile with "
                           "'sparcom profile ... --group-by instruction'")
    present = kinds_in(run.counts)
    kinds = [k for k in present if kinds is None or k in kinds]
    if not kinds:
        raise SparcomError(f"{run.path}: the run has none of the kinds {', '.join(kinds or [])}")
    attribution = attribution_of(rule, run)  # rule 'attribution': each fold ranks its training rows' effects
    if attribution is not None:
        kinds = attributed_kinds(attribution, kinds)
    categories = list(run.categories)
    masks: list[dict[str, np.ndarray]] = [{} for _ in range(folds)]
    assignment = None
    for kind in kinds:
        groups = load_groups(run.counts, groups_meta, kind, categories)
        if assignment is None:
            assignment = stratified_folds(groups, folds, seed)
            _check_training_splits(groups.category_index, assignment, folds, categories)
        sums = partition_sums(groups, assignment, folds)
        effects = None if attribution is None else fold_effects(
            attribution, kind, groups.labels, groups.category_index, len(categories), assignment, folds)
        for f in range(folds):
            train = [p for p in range(folds) if p != f]
            freqs = sums.frequencies(kind, groups.layout, train)
            mask = rule.apply(freqs.p, freqs.layout, sums.moments_of(train), None if effects is None else effects[f])
            masks[f].update(masks_by_key(groups.layout, categories, mask))
        labels = groups.labels
    fold_of = {label: int(assignment[i]) for i, label in enumerate(labels)}
    meta = {"rule": rule.name, "epsilon": rule.epsilon, "parameters": rule.parameters,
            "description": rule.describe(), "categories": categories, "kinds": kinds,
            "source_run": str(Path(run.path).resolve()), "manifest": measurement(run.manifest)}
    selections = [Selection(Path(run.path), masks[f], {**meta, "fold": f, "folds": folds}) for f in range(folds)]
    return FoldSelections(run, rule, folds, seed, fold_of, selections)


def _check_training_splits(category_index: np.ndarray, assignment: np.ndarray, folds: int,
                           categories: list[str]) -> None:
    for f in range(folds):
        present = np.bincount(category_index[assignment != f], minlength=len(categories))
        if (present == 0).any():
            missing = categories[int(np.argmin(present))]
            raise SparcomError(f"category {missing} has too few profiled instructions for {folds} folds (a training "
                               "split has none of them); use fewer --crossfit-folds")
