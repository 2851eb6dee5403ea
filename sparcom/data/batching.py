"""Length-bucketed batches: the one batch planner (profiling, NLL scoring, tuning) and the profiler's collation.

:func:`length_batches` sorts examples longest first and cuts by batch size and/or a token budget; everything that
batches token sequences uses it. Profiling batches never mix categories (so each hook does one gather per batch):
:func:`plan_batches` plans each category apart. The order depends only on the data and the settings, which is what
lets a killed run resume at a batch index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparcom.data.formatting import EncodedExample
from sparcom.errors import SparcomError


@dataclass(frozen=True)
class Batch:
    """Padded tensors of one batch and which positions are counted."""

    category: str
    examples: tuple[EncodedExample, ...]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    counted: torch.Tensor  # bool [B, T]

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.attention_mask.numel())


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches: longest first (ties by index), each batch ≤ ``batch_size``
    rows and, with a budget, ≤ ``token_budget`` padded tokens (a single longer example gets a batch of its own)."""
    if batch_size < 1:
        raise SparcomError(f"--batch-size must be at least 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise SparcomError(f"--token-budget must be at least 1, got {token_budget}")
    batches: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        longest = lengths[current[0]] if current else lengths[index]  # sorted: the first is the longest
        over_budget = token_budget is not None and current and longest * (len(current) + 1) > token_budget
        if current and (len(current) >= batch_size or over_budget):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def plan_batches(
    examples: Sequence[EncodedExample],
    categories: Sequence[str],
    batch_size: int,
    token_budget: int | None = None,
) -> list[list[EncodedExample]]:
    """Group examples into batches: per category (in ``categories`` order), by :func:`length_batches`."""
    plan: list[list[EncodedExample]] = []
    for category in categories:
        members = sorted((e for e in examples if e.category == category), key=lambda e: e.row_index)
        plan += [[members[i] for i in batch]
                 for batch in length_batches([len(e) for e in members], batch_size, token_budget)]
    return plan


def collate(examples: Sequence[EncodedExample], scope: str, pad_token_id: int, padding_side: str) -> Batch:
    """Pad a planned batch; position ids count real tokens only, so left and right padding agree."""
    if padding_side not in ("left", "right"):
        raise SparcomError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    counted = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example)
        start = width - n if padding_side == "left" else 0
        ids[row, start : start + n] = torch.tensor(example.input_ids, dtype=torch.long)
        mask[row, start : start + n] = 1
        counted[row, start : start + n] = torch.tensor(example.scope_mask(scope), dtype=torch.bool)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(examples[0].category, tuple(examples), ids, mask, positions, counted)
