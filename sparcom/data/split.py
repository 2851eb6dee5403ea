"""A development split of a dataset: choose the rule and ε on one part, report validity on the other.

Choosing the recommended rule on the same 1,200 rows that then measure its validity reuses the data (statistics
review §1e). The split is stratified by category × source and deterministic: within every stratum the rows are
ordered by SHA-256("{salt}:{seed}:{id}") and the first round(fraction · size) are the development part. It
depends on the ids only (not on file order), and :meth:`DevelopmentSplit.record` is what a result stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sparcom.errors import SparcomError

#: Salt of the split key; changing it changes the split.
SPLIT_SALT = "sparcom-development-v1"
DEFAULT_FRACTION = 0.5


@dataclass(frozen=True)
class DevelopmentSplit:
    """The ids of the development part and of the evaluation part (the rest), and how they were drawn."""

    development: tuple[str, ...]
    evaluation: tuple[str, ...]
    fraction: float
    seed: int

    def part(self, identifier: str) -> str:
        """"development" or "evaluation"."""
        return "development" if identifier in set(self.development) else "evaluation"

    def record(self) -> dict[str, Any]:
        return {"salt": SPLIT_SALT, "fraction": self.fraction, "seed": self.seed,
                "stratified_by": ["category", "source"], "development": list(self.development),
                "evaluation": list(self.evaluation)}


def _key(identifier: str, seed: int) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}:{seed}:{identifier}".encode()).hexdigest()


def development_split(ids: Sequence[str], categories: Sequence[str], sources: Sequence[str],
                      fraction: float = DEFAULT_FRACTION, seed: int = 0) -> DevelopmentSplit:
    """Split rows (parallel ``ids``, ``categories``, ``sources``) into development and evaluation parts, stratified
    by (category, source); both parts keep at least one row of every stratum with two or more rows."""
    if not 0 < fraction < 1:
        raise SparcomError(f"the development fraction must be in (0, 1), got {fraction}")
    if not len(ids) == len(categories) == len(sources):
        raise SparcomError("ids, categories and sources must have one entry per row")
    if len(set(ids)) != len(ids):
        raise SparcomError("row ids are not unique; the split needs one id per row")
    strata: dict[tuple[str, str], list[str]] = {}
    for identifier, category, source in zip(ids, categories, sources, strict=True):
        strata.setdefault((category, source), []).append(identifier)
    development: set[str] = set()
    for members in strata.values():
        ordered = sorted(members, key=lambda i: _key(i, seed))
        take = round(fraction * len(ordered))
        if len(ordered) >= 2:
            take = min(max(take, 1), len(ordered) - 1)
        development.update(ordered[:take])
    return DevelopmentSplit(tuple(i for i in ids if i in development), tuple(i for i in ids if i not in development),
                            fraction, seed)
