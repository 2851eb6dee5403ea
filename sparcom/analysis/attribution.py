"""The effects the ``attribution`` rule ranks, read from an attribution run and lined up with a profile run.

An attribution run (``sparcom attribute``) holds, per category and component, the summed linear estimate of what
deactivating the component does to the category's response NLL; the rule ranks e_c = sum / scored tokens. Here they
are put in the profile run's category order and layout (refusing a run of another model), for all rows
(:func:`rule_effects`) or for the training folds of a cross-fit (:func:`fold_effects`, from the per-instruction sums
of a run attributed with ``--group-by instruction``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparcom.analysis.frequencies import kind_frequencies
from sparcom.analysis.selection import EFFECTS_NEEDED, SelectionRule
from sparcom.artifacts.attribution import AttributionRun, from_fixed, load_attribution
from sparcom.artifacts.run import ProfileRun
from sparcom.errors import SparcomError
from sparcom.kinds import GROUP_TOKENS_KEY, group_key
from sparcom.provenance import mismatches

#: What an attribution run must share with the profile run whose components it ranks.
SAME_MODEL = ("model", "weights", "tokenizer")


def attribution_of(rule: SelectionRule, run: ProfileRun) -> AttributionRun | None:
    """The attribution run ``rule`` names, checked against ``run``; None for rules that rank frequencies."""
    if not rule.needs_effects:
        return None
    if not rule.attribution:
        raise SparcomError(EFFECTS_NEEDED)
    return checked_attribution(rule.attribution, run)


def checked_attribution(path: str, run: ProfileRun) -> AttributionRun:
    """The attribution run at ``path``, refused unless it was made on ``run``'s model and covers its categories."""
    attribution = load_attribution(path)
    reasons = mismatches(run.manifest, attribution.manifest, SAME_MODEL, ("profile run", "attribution run"))
    if reasons:
        raise SparcomError(f"{attribution.path} was not attributed on the model of {run.path}: {reasons[0]}")
    missing = [c for c in run.categories if c not in attribution.categories]
    if missing:
        raise SparcomError(f"{attribution.path} has no rows of {', '.join(missing)}; attribute every category the "
                           f"profile run {run.path} has")
    return attribution


def attributed_kinds(attribution: AttributionRun, kinds: Sequence[str]) -> list[str]:
    """The kinds among ``kinds`` that the attribution run estimated (refusing an explicit request it cannot meet)."""
    present = [k for k in kinds if k in attribution.manifest.get("kinds", [])]
    if not present:
        raise SparcomError(f"{attribution.path} estimated {', '.join(attribution.manifest.get('kinds', []))}, none "
                           f"of {', '.join(kinds)}; rule 'attribution' selects those kinds only")
    return present


def rule_effects(run: ProfileRun, attribution: AttributionRun, kind: str) -> np.ndarray:
    """Effects per scored token [K, N], rows in ``run``'s category order, columns in its layout of ``kind``."""
    layout = kind_frequencies(run.counts, run.categories, kind).layout
    effects = attribution.effects(kind, run.categories)
    if effects.layout != layout:
        raise SparcomError(f"{attribution.path}: its {kind} layers or widths differ from {run.path}'s; the runs "
                           "belong to different models")
    return effects.per_token


def fold_effects(attribution: AttributionRun, kind: str, labels: Sequence[str], category_index: np.ndarray,
                 categories: int, assignment: np.ndarray, folds: int) -> list[np.ndarray]:
    """Per fold f: effects per scored token [K, N] over the instructions outside fold f.

    ``labels`` are the profile run's instruction ids (groups), ``category_index`` their categories' rows, and
    ``assignment`` their folds; each is looked up in the attribution run's per-instruction sums.
    """
    groups = attribution.manifest.get("groups")
    if attribution.manifest.get("group_by") != "instruction" or not groups:
        raise SparcomError(f"{attribution.path}: cross-fitting rule 'attribution' needs per-instruction effects; "
                           "attribute with 'sparcom attribute ... --group-by instruction'")
    row_of = {label: i for i, label in enumerate(groups["labels"])}
    missing = [label for label in labels if label not in row_of]
    if missing:
        raise SparcomError(f"{attribution.path} did not attribute instruction {missing[0]!r} (and {len(missing) - 1} "
                           "more); attribute the rows the profile run counted")
    rows = np.array([row_of[label] for label in labels])
    layers = sorted(int(key.rsplit("/", 1)[1]) for key in attribution.sums if key.startswith(f"groups/{kind}/"))
    per_row = np.concatenate([attribution.sums[group_key(kind, j)][rows].reshape(len(rows), -1) for j in layers],
                             axis=1)  # fixed point, each layer flattened like the counts
    tokens = attribution.sums[GROUP_TOKENS_KEY][rows]
    result = []
    for f in range(folds):
        train = assignment != f
        sums = np.zeros((categories, per_row.shape[1]), dtype=np.int64)
        np.add.at(sums, category_index[train], per_row[train])
        counted = np.bincount(category_index[train], weights=tokens[train], minlength=categories)
        result.append(from_fixed(sums) / np.maximum(counted, 1)[:, None])
    return result
