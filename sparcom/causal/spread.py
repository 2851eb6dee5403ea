"""The causal check over the ranks of a torchrun job: the plan's conditions shared out, their results gathered.

The conditions of a check (:mod:`sparcom.causal.plan`) do not depend on each other, so each rank takes every
``world_size``-th of the conditions still to compute, computes them exactly as one process would (same batches,
same code), and the results are exchanged. Every rank then holds every condition's numbers and assembles the same
result; rank 0 writes it (and keeps the checkpoint: ``causal.check.run_plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sparcom.distributed import Ranks, current

T = TypeVar("T")
R = TypeVar("R")


def my_conditions(count: int, ranks: Ranks) -> list[int]:
    """The condition indices this rank computes: every ``world_size``-th."""
    return list(range(ranks.rank, count, ranks.world_size))


def run_shared(conditions: Sequence[T], compute: Callable[[T], R], ranks: Ranks | None = None,
               where: str = "running the causal check's conditions") -> list[R]:
    """``[compute(c) for c in conditions]``, each computed by one rank, the results (picklable) on every rank."""
    ranks = ranks or current()
    if ranks.world_size == 1:
        return [compute(condition) for condition in conditions]
    mine: dict[int, R] = {}
    with ranks.step(where):
        for index in my_conditions(len(conditions), ranks):
            mine[index] = compute(conditions[index])
    results: dict[int, R] = {}
    for theirs in ranks.gather(mine, where):
        results.update(theirs)
    return [results[index] for index in range(len(conditions))]


__all__ = ["my_conditions", "run_shared"]
