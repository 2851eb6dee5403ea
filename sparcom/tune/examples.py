"""Training examples for supervised fine-tuning: token ids, the response-token loss mask, batches and the loss.

Rows are formatted by :func:`sparcom.data.formatting.encode_row` with the response, so the prompt is exactly
what ``sparcom profile`` feeds the model. The loss covers the tokens of scope ``response`` — the reference
response — plus one end-of-sequence token after it (so the tuned model learns to stop); nothing of the template
or the user text is trained on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from sparcom.data.batching import length_batches
from sparcom.data.formatting import encode_row
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.logits import logits_at


@dataclass(frozen=True)
class TrainExample:
    """One formatted row: its token ids and which of them the loss is computed on."""

    row_id: str
    input_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def response_tokens(self) -> int:
        return sum(self.loss_mask)


def encode_examples(
    rows: Sequence[InstructionRow],
    tokenizer,
    template: str,
    max_tokens: int | None = None,
    add_eos: bool = True,
) -> tuple[list[TrainExample], list[str]]:
    """Encode rows (``template`` resolved to chat or raw); returns the examples and the ids of rows dropped.

    A row longer than ``max_tokens`` is dropped, never cut (cutting would train on half a response); a row whose
    response has no token of its own is an error.
    """
    eos = tokenizer.eos_token_id if add_eos else None
    examples, dropped = [], []
    for index, row in enumerate(rows):
        if not row.output.strip():
            raise SparcomError(f"row {row.id}: empty output; supervised tuning needs a reference response in every row")
        encoded = encode_row(row, index, tokenizer, template, with_response=True)
        ids = list(encoded.input_ids)
        mask = list(encoded.scope_mask("response"))
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            mask.append(True)
        if not any(mask[1:]):
            raise SparcomError(f"row {row.id}: its response has no token of its own after the prompt; check the row")
        mask[0] = False  # the first token has no context to predict it from
        if max_tokens is not None and len(ids) > max_tokens:
            dropped.append(row.id)
            continue
        examples.append(TrainExample(row.id, tuple(ids), tuple(mask)))
    return examples, dropped


@dataclass(frozen=True)
class Batch:
    """Right-padded ids, attention mask, and the positions whose next token is a response token."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    predict: torch.Tensor  # [B, L] bool: position t predicts token t + 1, which is in the loss
    targets: torch.Tensor  # [N] the token ids predicted at the True positions of ``predict``, row-major

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def loss_tokens(self) -> int:
        return int(self.targets.numel())


def collate(examples: Sequence[TrainExample], pad_id: int) -> Batch:
    length = max(len(e) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), length), dtype=torch.long)
    labelled = torch.zeros((len(examples), length), dtype=torch.bool)
    for b, example in enumerate(examples):
        ids[b, : len(example)] = torch.tensor(example.input_ids)
        attention[b, : len(example)] = 1
        labelled[b, : len(example)] = torch.tensor(example.loss_mask)
    predict = torch.zeros_like(labelled)
    predict[:, :-1] = labelled[:, 1:]
    targets = ids[:, 1:][labelled[:, 1:]]
    return Batch(ids, attention, predict, targets)


#: Batches are formed from groups of this many batches' worth of examples sorted by length (less padding).
GROUP_BATCHES = 8


def batch_plan(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices per batch for one epoch.

    A seeded shuffle; each run of ``GROUP_BATCHES * batch_size`` examples is sorted by length and cut into
    batches (so a batch holds examples of similar length and little padding), and the batches are shuffled.
    """
    rng = random.Random(f"sparcom-tune:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = GROUP_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group])  # ties in length are broken by example index
        batches.extend([chunk[i] for i in batch] for batch in length_batches([lengths[i] for i in chunk], batch_size))
    rng.shuffle(batches)
    return batches


def predicted_logits(model, batch: Batch) -> torch.Tensor:
    """Logits [N, V] at the positions that predict a response token, in the order of ``batch.targets``.

    Only those positions go through the LM head (:func:`sparcom.models.logits.logits_at`).
    """
    return logits_at(model, batch.input_ids, batch.attention_mask, batch.predict)


def batch_loss_sum(model, batch: Batch) -> torch.Tensor:
    """Sum of the cross-entropy of the response tokens of ``batch`` (float32)."""
    logits = predicted_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets.to(logits.device), reduction="sum")


@torch.no_grad()
def response_loss(model, examples: Sequence[TrainExample], pad_id: int, batch_size: int = 8) -> float:
    """Mean cross-entropy per response token of ``examples`` (evaluation mode, no gradients)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        total += float(batch_loss_sum(model, batch))
        count += batch.loss_tokens
    model.train(was_training)
    return total / max(count, 1)


def iterate_steps(
    lengths: Sequence[int], batch_size: int, grad_accum: int, seed: int, total_steps: int
) -> Iterator[tuple[int, int, list[list[int]]]]:
    """(step, epoch, micro-batches) for each optimizer step; epochs reshuffle; the last step of an epoch may be short."""
    step, epoch = 0, 0
    while step < total_steps:
        batches = batch_plan(lengths, batch_size, seed, epoch)
        for start in range(0, len(batches), grad_accum):
            if step >= total_steps:
                return
            yield step, epoch, batches[start : start + grad_accum]
            step += 1
        epoch += 1
