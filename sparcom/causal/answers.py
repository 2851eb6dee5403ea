"""Exact-match checks of greedy generations for categories with a checkable answer.

- ``cls`` (label): the reference ``output`` is the gold label. When the instruction states its label set
  (``one of: a, b, c``), the predicted label is the label mentioned first in the generation (the longest one
  when several start at the same place); for yes/no labels it is the first "yes" or "no" of the first
  sentence; otherwise it is the generation's first non-empty line. Compared after normalisation (lower case,
  punctuation and articles removed, whitespace collapsed — the SQuAD rule).
- ``math`` (number): the reference's final number follows ``Answer:`` or ``####``. The prediction is the number
  after the generation's last ``Answer:`` / ``####`` marker, or else its last number; numbers are compared as
  values (``1,200`` = ``1200.0``).
- ``qa`` (short answer): only rows whose reference has at most :data:`SHORT_ANSWER_WORDS` words after
  normalisation are checked. The prediction is the first sentence of the generation's first non-empty line;
  it is correct when the normalised reference occurs in it as whole words (instruction-tuned models answer in
  sentences: "The capital of Australia is Canberra."). Yes/no references compare the first "yes" or "no" of
  that sentence.

Rows of other categories, and rows whose reference has no checkable answer, are not scored.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import torch
from torch import nn

from sparcom.data.formatting import encode_row
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError

#: Category → kind of check.
CHECKS: dict[str, str] = {"cls": "label", "math": "number", "qa": "short"}
SHORT_ANSWER_WORDS = 5
YES_NO: tuple[str, ...] = ("yes", "no")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "“”‘’…–—")
_LABEL_SET = re.compile(r"one of\s*:?\s*([^\n]+?)(?:\.\s|\.$|\n|$)", re.IGNORECASE)
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_MARKED = re.compile(rf"(?:Answer\s*:|####)\s*\**\s*[$€£]?\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)
_SENTENCE_END = re.compile(r"(?<=[^\s.])[.!?](?:\s|$)")


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's answer normalisation)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def label_set(instruction: str) -> list[str]:
    """The labels an instruction offers as ``one of: a, b, c`` (or ``a, b or c``); empty when it names none."""
    match = _LABEL_SET.search(instruction)
    if not match:
        return []
    parts = re.split(r",|\bor\b", match.group(1))
    labels = [normalize(p) for p in parts]
    return [label for label in labels if label]


def parse_number(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def final_number(text: str, fallback_last: bool) -> Decimal | None:
    """The number after the last ``Answer:`` / ``####``; with ``fallback_last``, else the text's last number."""
    marked = _MARKED.findall(text)
    if marked:
        return parse_number(marked[-1])
    if fallback_last:
        numbers = _ANY_NUMBER.findall(text)
        return parse_number(numbers[-1]) if numbers else None
    return None


@dataclass(frozen=True)
class Check:
    """How one row is scored: the kind of check and the normalised reference answer."""

    row_id: str
    category: str
    kind: str
    reference: str
    labels: tuple[str, ...] = ()


def make_check(row: InstructionRow) -> Check | None:
    """The check of a row, or None when its category or reference has no checkable answer."""
    kind = CHECKS.get(row.category)
    if kind == "label":
        reference = normalize(row.output)
        return Check(row.id, row.category, kind, reference, tuple(label_set(row.instruction))) if reference else None
    if kind == "number":
        number = final_number(row.output, fallback_last=False)
        return None if number is None else Check(row.id, row.category, kind, str(number))
    if kind == "short":
        reference = normalize(row.output)
        if reference and len(reference.split()) <= SHORT_ANSWER_WORDS:
            return Check(row.id, row.category, kind, reference)
    return None


def _first_of(text: str, options: Sequence[str]) -> str:
    """The option mentioned first in normalised ``text`` as whole words (the longest when several start together)."""
    best: tuple[int, int, str] | None = None
    for option in options:
        match = re.search(rf"\b{re.escape(option)}\b", text)
        if match and (best is None or (match.start(), -len(option)) < best[:2]):
            best = (match.start(), -len(option), option)
    return best[2] if best else ""


def _first_sentence(generation: str) -> str:
    line = first_line(generation)
    end = _SENTENCE_END.search(line)
    return normalize(line[: end.start() + 1] if end else line)


def predicted(check: Check, generation: str) -> str:
    """The answer extracted from a generation, normalised like the reference."""
    if check.kind == "label":
        if check.labels:
            return _first_of(normalize(generation), check.labels)
        if check.reference in YES_NO:
            return _first_of(_first_sentence(generation), YES_NO)
        return normalize(first_line(generation))
    if check.kind == "number":
        number = final_number(generation, fallback_last=True)
        return "" if number is None else str(number)
    if check.reference in YES_NO:
        return _first_of(_first_sentence(generation), YES_NO)
    return _first_sentence(generation)


def is_correct(check: Check, generation: str) -> bool:
    answer = predicted(check, generation)
    if check.kind == "number":
        got, want = parse_number(answer), parse_number(check.reference)
        return got is not None and want is not None and abs(got - want) <= Decimal("1e-6") * max(Decimal(1), abs(want))
    if check.kind == "short" and check.reference not in YES_NO:
        return bool(answer) and re.search(rf"\b{re.escape(check.reference)}\b", answer) is not None
    return answer == check.reference


def greedy_generate(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int,
    pad_id: int,
) -> list[str]:
    """Greedy continuations (decoded, special tokens skipped) of tokenized prompts, left-padded in batches."""
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise SparcomError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                      *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                              eos_token_id=eos_ids or None)
    device = model.get_input_embeddings().weight.device
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    texts: list[str] = [""] * len(prompts)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(prompts[i])
                ids[row, width - n:] = torch.tensor(list(prompts[i]))
                attention[row, width - n:] = 1
            output = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                    generation_config=config)
            for row, i in enumerate(batch):
                texts[i] = tokenizer.decode(output[row, width:].tolist(), skip_special_tokens=True)
    return texts


def encode_prompts(rows: Sequence[InstructionRow], tokenizer, template: str, system_prompt: str | None) -> list[tuple]:
    """Prompt token ids (no response) of each row, formatted as for profiling."""
    return [encode_row(row, i, tokenizer, template, system_prompt, with_response=False).input_ids
            for i, row in enumerate(rows)]
