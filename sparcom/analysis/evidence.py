"""Validity evidence as the analysis commands report it: the settings, a run's groups, and the per-component table.

:mod:`sparcom.analysis.validity` computes the evidence from groups below the category; this module is the glue
that ``identify``, ``evaluate`` and the rule study share: which groups a run has (and the one note when it has
none), the user's validity settings, bootstrap resamples of the instructions, and the ``selected_components``
rows with their specificity scores (so a user can sort a selection by how specific each member is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.analysis import sets
from sparcom.analysis.groups import GroupCounts, load_groups
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.validity import (
    DEFAULT_FOLDS,
    DEFAULT_RANDOM_SETS,
    Specificity,
    check_settings,
    resampled_selections,
)
from sparcom.artifacts.run import ProfileRun
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.settings import check, options, setting
from sparcom.stats import LEVEL

#: What every output says when a run has no counts below the category.
NO_GROUPS_NOTE = ("no validity evidence (held-out decoding against random sets, cross-source agreement, stability): "
                  "the run keeps counts per category only; profile with 'sparcom profile ... --group-by instruction'")

@dataclass(frozen=True)
class ValiditySettings:
    """How validity is measured: k folds, R random sets per fold, the seed of folds and draws, the CI level."""

    enabled: bool = setting(True, flag="--validity/--no-validity", help=(
        "On runs profiled with --group-by instruction: held-out decoding against random sets, stability, "
        "cross-source agreement."))
    folds: int = setting(DEFAULT_FOLDS, flag="--folds", help=(
        "Folds of the held-out decoding (stratified by category and source)."))
    random_sets: int = setting(DEFAULT_RANDOM_SETS, flag="--random-sets", help=(
        "Random sets of the selection's per-layer shape per fold (the null of the decoding p-value)."))
    seed: int = setting(0, flag="--validity-seed", help=(
        "Seed of the validity folds, the random sets and the resampled instructions."))
    level: float = setting(LEVEL, keyword="validity_level", help="Level of the validity intervals.")
    probing: bool = setting(False, flag="--probing/--no-probing", help=(
        "Also sparse-probing curves (held-out decoding with k = 1 … 256 components per category for every rule's "
        "ranking and supervised baselines, against random and frequency-matched random sets) and the bag-of-tokens "
        "baseline on the same folds (loads the run's tokenizer and dataset; docs/validity.md)."))

    def check_together(self) -> None:
        if self.enabled:
            try:
                check_settings(self.folds, self.random_sets, self.level)
            except SparcomError as exc:
                names = ", ".join(flat.option.label for flat in options(ValiditySettings)
                                  if flat.path[-1] in ("folds", "random_sets", "level"))
                raise SparcomError(f"{exc} ({names})") from None

    def check(self) -> ValiditySettings:
        return check(self)

    def parameters(self) -> dict[str, Any]:
        result = {"folds": self.folds, "random_sets": self.random_sets, "seed": self.seed, "level": self.level}
        return {**result, "probing": True} if self.probing else result


def has_groups(run: ProfileRun) -> bool:
    """True when the run keeps counts below the category (``--group-by source`` or ``instruction``)."""
    return bool(run.manifest.get("groups"))


def run_groups(run: ProfileRun, kind: str, categories: Sequence[str] | None = None) -> GroupCounts | None:
    """The groups of one kind of ``run``, in the order of ``categories`` (default: the run's), or None.

    With ``categories`` a subset of the run's, the groups of the other categories are left out.
    """
    groups = load_groups(run.counts, run.manifest.get("groups"), kind)
    if groups is None:
        return None
    categories = tuple(categories) if categories is not None else tuple(run.categories)
    keep = np.isin(np.asarray(groups.categories), list(categories))
    missing = sorted(set(categories) - set(groups.categories))
    if missing:
        raise SparcomError(f"{run.path}: the run's groups have no {', '.join(missing)} instructions")
    return (groups if keep.all() else groups.subset(keep)).ordered(categories)


def resample_masks(groups: GroupCounts, rule: SelectionRule, replicates: int, seed: int = 0) -> np.ndarray:
    """[B, K, N] selections of ``rule`` on B resamples of the instructions within (category, source).

    The same resamples as :func:`sparcom.analysis.validity.bootstrap_stability` with the same seed (resample r is
    :func:`~sparcom.analysis.groups.resample_weights` (groups, r, seed)), so the masks serve both the intervals of
    the set statistics and the bootstrap stability.
    """
    if replicates < 2:
        raise SparcomError(f"--resamples must be 0 (off) or at least 2, got {replicates}")
    return resampled_selections(groups, rule, replicates, seed)


def component_rows(mask: np.ndarray, p: np.ndarray, layout: Layout, categories: Sequence[str],
                   scores: Specificity) -> list[dict]:
    """Every selected (category, component) — layer, expert, index, p, how many sets hold it — with its
    specificity: contrast p_c − max other p, contrast against the mean of the others, entropy specificity, the
    category where it fires most, and (with groups) the Welch effect and BH q-value of c against the rest."""
    rows = sets.selected_components(mask, p, layout, categories)
    top = np.argmax(p, axis=0) if p.size else np.zeros(0, dtype=np.int64)
    flat = [n for c in range(len(categories)) for n in np.flatnonzero(mask[c])]
    owner = [c for c in range(len(categories)) for _ in range(int(mask[c].sum()))]
    for row, c, n in zip(rows, owner, flat, strict=True):
        row.update(contrast=float(scores.contrast_max[c, n]), contrast_mean=float(scores.contrast_mean[c, n]),
                   entropy_specificity=float(scores.entropy[n]), top_category=categories[int(top[n])])
        if scores.effect is not None and scores.qvalue is not None:
            row.update(effect=float(scores.effect[c, n]), q_value=float(scores.qvalue[c, n]))
    return rows
