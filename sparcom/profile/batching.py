"""Length-bucketed batches of encoded examples, padded on either side, with per-token count masks.

Batches never mix categories (so each hook does one gather per batch) and are formed by sorting each
category's examples by length, longest first, then cutting by batch size and/or a token budget. The order
depends only on the data and the settings, which is what lets a killed run resume at a batch index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparcom.data.formatting import EncodedExample, in_scope
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


def plan_batches(
    examples: Sequence[EncodedExample],
    categories: Sequence[str],
    batch_size: int,
    token_budget: int | None = None,
) -> list[list[EncodedExample]]:
    """Group examples into batches: per category, longest first; each batch ≤ batch_size rows and ≤ budget."""
    if batch_size < 1:
        raise SparcomError(f"--batch-size must be at least 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise SparcomError(f"--token-budget must be at least 1, got {token_budget}")
    plan: list[list[EncodedExample]] = []
    for category in categories:
        members = sorted((e for e in examples if e.category == category), key=lambda e: (-len(e), e.row_index))
        current: list[EncodedExample] = []
        for example in members:
            longest = max([len(example)] + [len(e) for e in current])
            too_many = len(current) >= batch_size
            over_budget = token_budget is not None and current and longest * (len(current) + 1) > token_budget
            if current and (too_many or over_budget):
                plan.append(current)
                current = []
            current.append(example)
        if current:
            plan.append(current)
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
        counted[row, start : start + n] = torch.tensor([in_scope(r, scope) for r in example.roles], dtype=torch.bool)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(examples[0].category, tuple(examples), ids, mask, positions, counted)
