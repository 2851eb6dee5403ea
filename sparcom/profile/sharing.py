"""Who counts which batch: token-balanced shares of the one batch plan, for shards and for the ranks of a job.

A run's counts are exact integer sums over its batches, whoever computes them, so a job can be split at batch
granularity and still end with the counts of one process — as long as every batch is the very batch a single
process would form (padding changes the float activations slightly, so batches are never re-formed; they are
only handed out). Both splits here depend only on the plan, never on timing:

- a **shard** (``--shard K/N``) is the batches that :func:`balanced_owners` gives part K over the whole plan;
- the ranks of a job share the plan **round by round**: a round is ``checkpoint_every × world_size`` consecutive
  batches (rounds end at multiples of that size, so a resumed job rejoins the same rounds), shared by
  :func:`balanced_owners`; after each round the counts are summed over the ranks and checkpointed. A checkpoint
  therefore always holds exactly the batches before an index of the plan, which any number of ranks can resume.

Cost of a batch: its padded tokens (rows × longest row), which is what the forward pass computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sparcom.errors import SparcomError


def balanced_owners(costs: Sequence[int], parts: int) -> list[int]:
    """The part (0 … parts−1) of every item: largest cost first to the least loaded part (ties: lower index).

    Greedy longest-processing-time scheduling; no part gets more than the mean load plus one item's cost.
    """
    if parts < 1:
        raise SparcomError(f"cannot share work over {parts} parts")
    load = [0] * parts
    owners = [0] * len(costs)
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        part = min(range(parts), key=lambda p: (load[p], p))
        owners[item] = part
        load[part] += costs[item]
    return owners


def batch_cost(batch: Sequence) -> int:
    """Padded tokens of a planned batch (its rows × its longest row)."""
    return len(batch) * max(len(example) for example in batch)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: one part of the whole run, for schedulers without torchrun."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` with 0 ≤ K < N (e.g. ``$SLURM_ARRAY_TASK_ID/4`` for an array ``--array=0-3``)."""
        parts = str(text).strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise SparcomError(f"--shard {text!r} is not K/N (shard K of N, counted from 0, e.g. 0/4)")
        index, count = (int(p) for p in parts)
        if count < 1 or index >= count:
            raise SparcomError(f"--shard {text}: K must be 0 … N−1 (shards are counted from 0); "
                               f"for N = {count} use 0/{count} … {count - 1}/{count}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def batches(self, plan: Sequence[Sequence]) -> list[int]:
        """Indices (in plan order) of the batches this shard counts."""
        owners = balanced_owners([batch_cost(b) for b in plan], self.count)
        return [i for i, owner in enumerate(owners) if owner == self.index]


def round_bounds(total: int, start: int, size: int) -> list[tuple[int, int]]:
    """Rounds [begin, end) from ``start`` to ``total``, ending at multiples of ``size`` (and at ``total``)."""
    if size < 1:
        raise SparcomError(f"a round needs at least one batch, got {size}")
    bounds = []
    begin = start
    while begin < total:
        end = min(total, (begin // size + 1) * size)
        bounds.append((begin, end))
        begin = end
    return bounds


def round_share(costs: Sequence[int], begin: int, end: int, rank: int, world_size: int) -> list[int]:
    """The plan indices of round [begin, end) that ``rank`` counts, in plan order."""
    owners = balanced_owners(costs[begin:end], world_size)
    return [begin + i for i, owner in enumerate(owners) if owner == rank]


__all__ = ["Shard", "balanced_owners", "batch_cost", "round_bounds", "round_share"]
