"""``sparcom-sft``: a supervised fine-tuning set drawn from the same installed sources as HexaInst, never its rows.

``sparcom tune`` needs instruction rows to tune a base model on, and the tuned model is then profiled on
HexaInst, so the tuning rows must not be HexaInst's own. This module builds them from the *other* items of the
same data packages that :mod:`sparcom.data.human` reads (GSM8K, XSum, BoolQ, NQ-open, BBC News, IMDB, FiQA,
HumanEval), at run time, with nothing copied into the repository.

Recipe (deterministic; same installed packages, same rows and bytes):

1. Build HexaInst's human half (:func:`sparcom.data.human.build_human_rows`) and collect its ``origin`` values,
   its ``(instruction, input)`` pairs and its inputs; collect the AI half's instructions too.
2. For every source, drop each candidate whose origin, input (whitespace-normalised) or prompt coincides with a
   HexaInst row — so no tuning row is a HexaInst row, and no HexaInst input (BBC News repeats some articles)
   reappears under another index.
3. Key the rest by ``sha256("sparcom-sft-v1:{source}:{split}:{index}")``, take them in key order and keep the
   first that fit the length policy (instruction + input at most :data:`MAX_PROMPT_CHARS` characters, output
   non-empty and at most :data:`MAX_OUTPUT_CHARS`; short enough for about 256 tokens) until each source's quota
   in :data:`PLAN` is filled, per label where the source has labels. A source with fewer eligible items gives
   what it has (HumanEval: only 164 problems, 100 of them in HexaInst) — the counts are reported, not padded.
4. Reword the instruction: every source has its own paraphrases (:data:`PARAPHRASES`), one chosen per row by
   the key, none equal to any HexaInst instruction. The reference outputs are the sources' own, formatted
   exactly as in HexaInst (GSM8K ends in ``Answer: N``, labels are the stated label words).

Rows have ids ``sparcom-sft-{cat}-NNN``, ``source`` "human", ``origin`` ``source:split:index`` as in HexaInst.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sparcom.data import human
from sparcom.data.human import BBC_LABELS, IMDB_LABELS, Candidate
from sparcom.data.schema import CATEGORIES, InstructionRow
from sparcom.errors import SparcomError

#: The name ``sparcom tune --data`` accepts for this set.
NAME = "sparcom-sft"
#: Salt of the selection key (different from HexaInst's, so the order is unrelated to HexaInst's choice).
SELECTION_SALT = "sparcom-sft-v1"
#: Upper bound on instruction + input, in characters.
MAX_PROMPT_CHARS = 700
#: Upper bound on the reference output, in characters.
MAX_OUTPUT_CHARS = 400
#: Rows per category the default set aims for.
DEFAULT_PER_CATEGORY = 50

#: Reworded instructions per source; none is a HexaInst instruction (a test checks it).
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "gsm8k": (
        "Work through this word problem step by step, then write the result on a final line as 'Answer: N'.",
        "Solve the problem below, explaining each step. Finish with a line of the form 'Answer: N'.",
        "Reason step by step to solve this arithmetic word problem and end with 'Answer: N' on its own line.",
    ),
    "xsum": (
        "Write a one-sentence summary of this news story.",
        "Give the main point of the article below in a single sentence.",
        "Sum up the following report in one sentence.",
    ),
    "boolq": (
        "Using the passage, answer the question. Reply with yes or no.",
        "Based only on the text below, is the answer to the question yes or no? Answer with one word.",
        "Read the text and decide: yes or no? Give just the word.",
    ),
    "nq_open": (
        "Give a brief answer (a few words at most) to this question.",
        "Reply to the question below with just the answer: a name, number, date or short phrase.",
        "Answer in as few words as possible.",
    ),
    "bbcnews": tuple(
        f"{lead} Choose one of: {', '.join(BBC_LABELS)}. Answer with the label only."
        for lead in (
            "Which topic does this BBC article belong to?",
            "Assign the news story below to a section.",
            "What is the subject area of the following article?",
        )
    ),
    "imdb": tuple(
        f"{lead} Answer with one word: {' or '.join(IMDB_LABELS)}."
        for lead in (
            "Is this film review positive or negative?",
            "Decide whether the reviewer liked the movie.",
            "What is the overall sentiment of the review below?",
        )
    ),
    "fiqa": (
        "Answer this personal-finance question in a short paragraph.",
        "Give practical advice on the money question below, in a few sentences.",
        "Respond to this question about personal finance as a knowledgeable forum member would, briefly.",
    ),
    "humaneval": (
        "Implement the Python function below so that it does what its docstring says. Give the whole function.",
        "Write the body of this Python function and return the complete definition.",
        "Finish this Python function according to its docstring.",
    ),
}


@dataclass(frozen=True)
class SourceQuota:
    """How many rows one source gives a category at most, and its per-label split."""

    reader: Callable[[], Iterator[Candidate]]
    count: int
    labels: tuple[str, ...] = ()


def plan(per_category: int = DEFAULT_PER_CATEGORY) -> dict[str, tuple[SourceQuota, ...]]:
    """Which sources fill each category and their quotas (half and half where a category has two sources)."""
    half, rest = per_category // 2, per_category - per_category // 2
    return {
        "cls": (SourceQuota(human.bbc_news, rest, BBC_LABELS), SourceQuota(human.imdb, half, IMDB_LABELS)),
        "code": (SourceQuota(human.humaneval, per_category),),
        "qa": (SourceQuota(human.boolq, rest, ("yes", "no")), SourceQuota(human.nq_open, half)),
        "gen": (SourceQuota(human.fiqa, per_category),),
        "math": (SourceQuota(human.gsm8k, per_category),),
        "sum": (SourceQuota(human.xsum, per_category),),
    }


#: The default plan (see :func:`plan`).
PLAN = plan()


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _key(cand: Candidate) -> str:
    return hashlib.sha256(f"{SELECTION_SALT}:{cand.origin}".encode()).hexdigest()


@dataclass(frozen=True)
class HexaInstFootprint:
    """What of HexaInst a tuning row must not repeat."""

    origins: frozenset[str]
    prompts: frozenset[tuple[str, str]]
    inputs: frozenset[str]
    instructions: frozenset[str]


@functools.cache
def hexainst_footprint(include_human: bool = True) -> HexaInstFootprint:
    """Origins, prompts, inputs and instructions of HexaInst (the human half built from the installed packages).

    ``include_human=False`` covers the packaged AI half only (for machines without the source packages).
    """
    from sparcom.data.hexainst import load_ai_rows

    rows = load_ai_rows() + (human.build_human_rows() if include_human else [])
    return HexaInstFootprint(
        origins=frozenset(r.origin for r in rows if r.source == "human"),
        prompts=frozenset((_normal(r.instruction), _normal(r.input)) for r in rows),
        inputs=frozenset(_normal(r.input) for r in rows if r.input.strip()),
        instructions=frozenset(_normal(r.instruction) for r in rows),
    )


def overlapping_rows(rows: Sequence[InstructionRow], footprint: HexaInstFootprint | None = None) -> list[str]:
    """Ids of rows that repeat a HexaInst row: same id prefix, origin (human rows), prompt or input."""
    footprint = footprint or hexainst_footprint()
    found = []
    for row in rows:
        if (
            row.id.startswith("hexainst-")
            or (row.source == "human" and row.origin in footprint.origins)
            or (_normal(row.instruction), _normal(row.input)) in footprint.prompts
            or (row.input.strip() and _normal(row.input) in footprint.inputs)
        ):
            found.append(row.id)
    return found


def _select(quota: SourceQuota, footprint: HexaInstFootprint, seen: set[str]) -> list[Candidate]:
    candidates = sorted(quota.reader(), key=_key)
    if quota.labels:
        base, extra = divmod(quota.count, len(quota.labels))
        left = {label: base + (1 if i < extra else 0) for i, label in enumerate(quota.labels)}
    else:
        left = {"": quota.count}
    chosen = []
    for cand in candidates:
        if left.get(cand.label, 0) <= 0:
            continue
        text = _normal(cand.input)
        if cand.origin in footprint.origins or text in footprint.inputs or text in seen:
            continue
        if not cand.input.strip() or len(cand.instruction) + len(cand.input) > MAX_PROMPT_CHARS:
            continue
        if not cand.output.strip() or len(cand.output.strip()) > MAX_OUTPUT_CHARS:
            continue
        seen.add(text)
        left[cand.label] -= 1
        chosen.append(cand)
    return chosen


def build_tuning_rows(
    per_category: int = DEFAULT_PER_CATEGORY,
    categories: Sequence[str] = CATEGORIES,
    footprint: HexaInstFootprint | None = None,
) -> list[InstructionRow]:
    """The ``sparcom-sft`` rows (see the module docstring), category by category.

    Raises :class:`SparcomError` naming the pip command when a source package is missing.
    """
    if per_category < 1:
        raise SparcomError(f"per_category must be at least 1, got {per_category}")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise SparcomError(f"unknown category {unknown[0]!r} for {NAME}; choose from {', '.join(CATEGORIES)}")
    footprint = footprint or hexainst_footprint()
    recipe = plan(per_category)
    rows: list[InstructionRow] = []
    seen: set[str] = set()
    for category in categories:
        chosen = [cand for quota in recipe[category] for cand in _select(quota, footprint, seen)]
        for number, cand in enumerate(chosen, start=1):
            options = PARAPHRASES[cand.source]
            instruction = options[int(_key(cand), 16) % len(options)]
            rows.append(InstructionRow(
                id=f"{NAME}-{category}-{number:03d}", category=category, source="human", origin=cand.origin,
                instruction=instruction, input=cand.input, output=cand.output, license=cand.license,
            ))
    clash = overlapping_rows(rows, footprint) + [r.id for r in rows if _normal(r.instruction) in footprint.instructions]
    if clash:  # the recipe above rules this out; a guard against future edits
        raise SparcomError(f"{NAME}: rows {', '.join(clash[:3])} repeat HexaInst rows; this is a bug in the recipe")
    return rows


def rows_bytes(rows: Sequence[InstructionRow]) -> bytes:
    """The JSON Lines bytes of ``rows`` exactly as :func:`sparcom.data.schema.write_rows` writes them."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
    return buffer.getvalue().encode("utf-8")


def summary(rows: Sequence[InstructionRow]) -> dict[str, dict[str, int]]:
    """Rows per category and per source name (the part of ``origin`` before the first colon)."""
    table: dict[str, Counter] = {}
    for row in rows:
        table.setdefault(row.category, Counter())[row.origin.split(":", 1)[0]] += 1
    return {category: dict(counts) for category, counts in table.items()}

