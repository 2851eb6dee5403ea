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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparcom.data.formatting import encode_row, in_scope
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError

#: Position classes of a formatted row's tokens: template (system prompt, role markers), user text, response.
POSITION_CLASSES: tuple[str, ...] = ("template", "user", "response")
#: Rows of logits turned into float32 log-probabilities at once (bounds memory for large vocabularies).
LOGIT_CHUNK = 1024


@dataclass(frozen=True)
class ScoredExample:
    """Token ids of prompt + reference response and which tokens are scored (the response tokens)."""

    row_id: str
    category: str
    input_ids: tuple[int, ...]
    scored: tuple[bool, ...]
    #: Each token's position class (:data:`POSITION_CLASSES`): resample ablation takes a token's donor value from
    #: the donor's token of the same class and rank.
    classes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def tokens(self) -> int:
        return sum(self.scored[1:])


def cap_scored(example: ScoredExample, max_scored: int) -> ScoredExample:
    """Score only the first ``max_scored`` response tokens and drop the tokens after the last of them: in a causal
    model nothing later changes the logits of earlier positions, so the kept tokens' NLL is unchanged."""
    kept = [t for t in range(1, len(example)) if example.scored[t]][:max_scored]
    if len(kept) == example.tokens:
        return example
    end = kept[-1] + 1
    scored = tuple(t in set(kept) for t in range(end))
    return ScoredExample(example.row_id, example.category, example.input_ids[:end], scored, example.classes[:end])


def encode_scored(
    rows: Sequence[InstructionRow],
    tokenizer,
    template: str,
    system_prompt: str | None = None,
    max_length: int | None = None,
    max_scored: int | None = None,
) -> list[ScoredExample]:
    """Format and tokenize rows with their reference responses; refuse rows with nothing to score.

    ``max_scored`` caps the scored response tokens per row (the first ones; see :func:`cap_scored`).
    """
    if max_scored is not None and max_scored < 1:
        raise SparcomError(f"the scored-token cap must be at least 1, got {max_scored}")
    examples = []
    for index, row in enumerate(rows):
        encoded = encode_row(row, index, tokenizer, template, system_prompt, with_response=True)
        classes = tuple(2 if in_scope(role, "response") else int(in_scope(role, "instruction")) for role in encoded.roles)
        example = ScoredExample(row.id, row.category, encoded.input_ids, encoded.scope_mask("response"), classes)
        if not example.tokens:
            raise SparcomError(f"row {row.id}: the reference output has no tokens to score; give it a non-empty output")
        if max_length and len(example) > max_length:
            raise SparcomError(f"row {row.id}: {len(example)} tokens (prompt + reference output) exceed the model's "
                               f"limit of {max_length}; shorten it or remove it from the dataset")
        examples.append(cap_scored(example, max_scored) if max_scored else example)
    return examples


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

