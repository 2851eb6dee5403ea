"""One NLL pass per condition at the cost of one forward: the batches are built once and reused by every condition.

The causal check scores the same rows under many conditions (unablated, each selected set, every random set). All
that does not depend on the condition — tokenisation, padding, the batch plan, the attention mask, which positions
keep logits, the target ids and which row owns each scored token — is computed once into a :class:`ScoringPlan`;
a condition only runs the model (with its hooks) and the loss. The numbers are those of
:func:`example_nll` (which is a plan built and run once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sparcom.causal.nll import LOGIT_CHUNK, ScoredExample
from sparcom.models.logits import logits_at


@dataclass(frozen=True)
class ScoringBatch:
    """The tensors of one batch: right-padded ids, attention mask, kept positions, targets and their rows."""

    rows: tuple[int, ...]  # positions of the batch's examples in the scored list
    input_ids: torch.Tensor  # [B, T]
    attention: torch.Tensor  # [B, T]
    keep: torch.Tensor  # [B, T] bool: position t − 1 of each scored token t
    targets: torch.Tensor  # [n_scored] the scored token ids, row-major
    owner: torch.Tensor  # [n_scored] batch row of each scored token

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens of the batch: what a forward pass processes usefully."""
        return int(self.attention.sum())


def build_batch(examples: Sequence[ScoredExample], rows: Sequence[int], pad_id: int) -> ScoringBatch:
    """Right-padded tensors of ``rows`` (causal attention: padding on the right never reaches real tokens)."""
    width = max(len(examples[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, i in enumerate(rows):
        n = len(examples[i])
        ids[row, :n] = torch.tensor(examples[i].input_ids)
        attention[row, :n] = 1
        scored[row, :n] = torch.tensor(examples[i].scored)
    scored[:, 0] = False  # the first token has no context to be predicted from
    keep = torch.zeros_like(scored)
    keep[:, :-1] = scored[:, 1:]  # position t - 1 predicts token t
    targets = ids[:, 1:][scored[:, 1:]]
    owner = torch.arange(len(rows))[:, None].expand_as(scored)[:, 1:][scored[:, 1:]]
    return ScoringBatch(tuple(int(i) for i in rows), ids, attention, keep, targets, owner)


@dataclass(frozen=True)
class ScoringPlan:
    """The batches of a list of scored examples, built once; :meth:`run` is one NLL pass of any model state."""

    size: int  # number of examples
    batches: tuple[ScoringBatch, ...]
    counts: np.ndarray  # [size] scored tokens per example

    @classmethod
    def build(cls, examples: Sequence[ScoredExample], plan: Sequence[Sequence[int]], pad_id: int) -> ScoringPlan:
        batches = tuple(build_batch(examples, batch, pad_id) for batch in plan)
        counts = np.zeros(len(examples), dtype=np.int64)
        for batch in batches:
            per_row = torch.bincount(batch.owner, minlength=len(batch.rows))
            for row, i in enumerate(batch.rows):
                counts[i] = int(per_row[row])
        return cls(len(examples), batches, counts)

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.batches)

    def run(self, model: nn.Module, on_batch: Callable[[], None] | None = None,
            before_batch: Callable[[ScoringBatch], None] | None = None) -> np.ndarray:
        """Per example: the summed NLL (float64, nats) of its scored tokens under the model's current state
        (``before_batch`` is called with each batch before its forward: resample ablation runs its donors)."""
        sums = np.zeros(self.size, dtype=np.float64)
        with torch.no_grad():
            for batch in self.batches:
                if before_batch is not None:
                    before_batch(batch)
                per_row = batch_nll(model, batch)
                sums[list(batch.rows)] = per_row.numpy()
                if on_batch is not None:
                    on_batch()
        return sums


def batch_nll(model: nn.Module, batch: ScoringBatch) -> torch.Tensor:
    """Summed NLL per batch row [B] (float64): the LM head only at kept positions, the loss in float32 chunks."""
    logits = logits_at(model, batch.input_ids, batch.attention, batch.keep)
    losses = torch.empty(batch.targets.shape[0], dtype=torch.float64)
    for start in range(0, batch.targets.shape[0], LOGIT_CHUNK):
        chunk = logits[start:start + LOGIT_CHUNK].to(torch.float32)
        target = batch.targets[start:start + LOGIT_CHUNK].to(chunk.device)
        losses[start:start + LOGIT_CHUNK] = torch.nn.functional.cross_entropy(
            chunk, target, reduction="none").to("cpu", torch.float64)
    return torch.zeros(len(batch.rows), dtype=torch.float64).index_add_(0, batch.owner, losses)


def example_nll(
    model: nn.Module,
    examples: Sequence[ScoredExample],
    plan: Sequence[Sequence[int]],
    pad_id: int,
    on_batch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the summed NLL of its scored tokens (float64) and their number (one pass; a check that scores
    many conditions builds the :class:`ScoringPlan` once and runs it per condition)."""
    scoring = ScoringPlan.build(examples, plan, pad_id)
    return scoring.run(model, on_batch), scoring.counts.copy()
