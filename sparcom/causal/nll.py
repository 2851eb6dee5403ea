"""Teacher-forced negative log-likelihood of the reference responses, per example and per category.

Each row is formatted exactly as the profiler formats it (same template and system prompt) with the reference
``output`` appended; the tokens that overlap the response's characters are the scored tokens. For a scored
token t the loss is −log p(x_t | x_<t), read from the logits at position t − 1 (natural log, nats per token).
Only those positions are projected onto the vocabulary (``logits_to_keep`` with a boolean mask), so the
memory does not grow with the vocabulary times the prompt length.

A category's mean NLL pools its tokens: (Σ over its examples of summed token NLL) / (its scored tokens).
Batches are right-padded (causal attention: padding on the right cannot influence the real tokens) and the
batch plan is fixed, so the unablated and every ablated pass see identical batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sparcom.data.formatting import encode_row
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.logits import logits_at

#: Rows of logits turned into float32 log-probabilities at once (bounds memory for large vocabularies).
LOGIT_CHUNK = 1024


@dataclass(frozen=True)
class ScoredExample:
    """Token ids of prompt + reference response and which tokens are scored (the response tokens)."""

    row_id: str
    category: str
    input_ids: tuple[int, ...]
    scored: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def tokens(self) -> int:
        return sum(self.scored[1:])


def encode_scored(
    rows: Sequence[InstructionRow],
    tokenizer,
    template: str,
    system_prompt: str | None = None,
    max_length: int | None = None,
) -> list[ScoredExample]:
    """Format and tokenize rows with their reference responses; refuse rows with nothing to score."""
    examples = []
    for index, row in enumerate(rows):
        encoded = encode_row(row, index, tokenizer, template, system_prompt, with_response=True)
        example = ScoredExample(row.id, row.category, encoded.input_ids, encoded.scope_mask("response"))
        if not example.tokens:
            raise SparcomError(f"row {row.id}: the reference output has no tokens to score; give it a non-empty output")
        if max_length and len(example) > max_length:
            raise SparcomError(f"row {row.id}: {len(example)} tokens (prompt + reference output) exceed the model's "
                               f"limit of {max_length}; shorten it or remove it from the dataset")
        examples.append(example)
    return examples


def example_nll(
    model: nn.Module,
    examples: Sequence[ScoredExample],
    plan: Sequence[Sequence[int]],
    pad_id: int,
    on_batch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the summed NLL of its scored tokens (float64) and their number."""
    sums = np.zeros(len(examples), dtype=np.float64)
    counts = np.zeros(len(examples), dtype=np.int64)
    with torch.no_grad():
        for batch in plan:
            width = max(len(examples[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                n = len(examples[i])
                ids[row, :n] = torch.tensor(examples[i].input_ids)
                attention[row, :n] = 1
                scored[row, :n] = torch.tensor(examples[i].scored)
            scored[:, 0] = False  # the first token has no context to be predicted from
            keep = torch.zeros_like(scored)
            keep[:, :-1] = scored[:, 1:]  # position t - 1 predicts token t
            targets = ids[:, 1:][scored[:, 1:]]
            owner = torch.arange(len(batch))[:, None].expand_as(scored)[:, 1:][scored[:, 1:]]
            logits = logits_at(model, ids, attention, keep)
            losses = torch.empty(targets.shape[0], dtype=torch.float64)
            for start in range(0, targets.shape[0], LOGIT_CHUNK):
                chunk = logits[start:start + LOGIT_CHUNK].to(torch.float32)
                target = targets[start:start + LOGIT_CHUNK].to(chunk.device)
                losses[start:start + LOGIT_CHUNK] = torch.nn.functional.cross_entropy(
                    chunk, target, reduction="none").to("cpu", torch.float64)
            per_row = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, owner, losses)
            for row, i in enumerate(batch):
                sums[i] = float(per_row[row])
                counts[i] = int((owner == row).sum())
            if on_batch is not None:
                on_batch()
    return sums, counts


def category_means(
    examples: Sequence[ScoredExample], sums: np.ndarray, counts: np.ndarray, categories: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Per category: pooled mean NLL (nats/token), scored tokens and instructions."""
    result = {}
    for category in categories:
        members = [i for i, e in enumerate(examples) if e.category == category]
        tokens = int(counts[members].sum()) if members else 0
        result[category] = {"nll": float(sums[members].sum() / tokens) if tokens else float("nan"),
                            "tokens": tokens, "instructions": len(members)}
    return result


def mean_nll_matrix(examples: Sequence[ScoredExample], sums: np.ndarray, counts: np.ndarray,
                    categories: Sequence[str]) -> np.ndarray:
    """The pooled mean NLL of each category as a vector (order of ``categories``)."""
    means = category_means(examples, sums, counts, categories)
    return np.array([means[c]["nll"] for c in categories], dtype=np.float64)
