"""The nulls that can fail, for the two set claims, computed with a selection and stored with it.

Generality (:mod:`sparcom.analysis.generality`): are the paper-rule "general" components general for
*instructions*, or just as top-frequent on a reference corpus that is not instructions? Needs a reference run
(``identify --reference RUN``: the reference corpus profiled raw by the same model) and applies to the paper's rule
(``percentile``: its general set is the intersection of every category's top ε; other rules make it empty or
define it otherwise).

Uniqueness (:mod:`sparcom.analysis.uniqueness`): the within − across cross-source margin with its subsampling
interval, and held-out decoding by the unique members alone against random sets. Needs counts per instruction.

Both decisions are made there, once, and stored here as values; the claims table reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparcom.analysis.generality import GeneralityNull, generality_null
from sparcom.analysis.groups import GroupCounts
from sparcom.analysis.selection import PAPER_RULE, SelectionRule
from sparcom.analysis.uniqueness import Uniqueness, uniqueness
from sparcom.errors import SparcomError

#: Why the generality null is missing, when it is.
NO_REFERENCE = ("no reference corpus compared: profile one raw with the same model ('sparcom data reference', then "
                "'sparcom profile MODEL --data reference.jsonl --template raw --group-by instruction') and pass "
                "'identify --reference RUN'")
NOT_PAPER_RULE = (f"the generality null applies to the paper's rule ({PAPER_RULE.name}), whose general set it "
                  "tests")


@dataclass(frozen=True)
class ClaimNulls:
    """One kind's generality null and uniqueness test (None where they could not run: ``notes`` say why)."""

    generality: GeneralityNull | None
    uniqueness: Uniqueness | None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"generality": self.generality.summary() if self.generality else None,
                "uniqueness": self.uniqueness.summary() if self.uniqueness else None, "notes": self.notes}


def claim_nulls(groups: GroupCounts, rule: SelectionRule, reference: GroupCounts | None, folds: int,
                random_sets: int, seed: int) -> ClaimNulls:
    """Both nulls of one kind on a run with per-instruction groups (``reference``: the reference run's groups of the
    same kind, or None)."""
    notes = []
    general = None
    if reference is None:
        notes.append(NO_REFERENCE)
    elif rule.name != PAPER_RULE.name:
        notes.append(NOT_PAPER_RULE)
    else:
        try:
            general = generality_null(groups, reference, rule.epsilon, seed=seed)
        except SparcomError as exc:  # too few rows or another model's reference: the claim stays undecided
            notes.append(f"generality null left out: {exc}")
    unique = None
    try:
        unique = uniqueness(groups, rule, folds=folds, random_sets=random_sets, seed=seed)
    except SparcomError as exc:  # e.g. a half-sample too small for the rule: the claim stays undecided
        notes.append(f"uniqueness test left out: {exc}")
    return ClaimNulls(general, unique, notes)


__all__ = ["NOT_PAPER_RULE", "NO_REFERENCE", "ClaimNulls", "claim_nulls"]
