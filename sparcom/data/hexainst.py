"""HexaInst: 1,200 instructions in six categories, half written for this project, half by people.

The AI-written half ships inside the package (``sparcom/data/hexainst_ai/{cat}.jsonl``, 100 rows a category).
The human-written half is built at run time from installed data packages (:mod:`sparcom.data.human`), so no
source text lives in this repository. :func:`build_hexainst` joins both halves, checks the balance and writes
one JSON Lines file; the same installed packages give the same bytes on every machine.
"""

from __future__ import annotations

import importlib.resources
import warnings
from collections import Counter
from pathlib import Path

from sparcom.data.human import ROWS_PER_CATEGORY, build_human_rows
from sparcom.data.schema import CATEGORIES, InstructionRow, numbered_rows, read_rows, write_rows
from sparcom.errors import SparcomError

#: Where ``sparcom data build`` writes HexaInst by default (relative to the working directory; git-ignored).
DEFAULT_PATH = Path("data/hexainst.jsonl")
#: The packaged folder of the AI-written half, inside ``sparcom.data``.
AI_FOLDER = "hexainst_ai"


def _ai_file(category: str):
    return importlib.resources.files("sparcom.data").joinpath(AI_FOLDER, f"{category}.jsonl")


def load_ai_rows(categories: tuple[str, ...] = CATEGORIES) -> list[InstructionRow]:
    """The AI-written half as packaged: every row validated, in file order, categories in ``categories`` order.

    A category whose file is absent contributes no rows (the balance check reports it); a malformed row is
    an error naming the file and line.
    """
    rows: list[InstructionRow] = []
    for category in categories:
        resource = _ai_file(category)
        if not resource.is_file():
            continue
        lines = resource.read_text(encoding="utf-8").splitlines()
        for _, where, row in numbered_rows(lines, f"sparcom/data/{AI_FOLDER}/{category}.jsonl"):
            if row.category != category or row.source != "ai":
                raise SparcomError(
                    f"{where}: row {row.id!r} has category {row.category!r} and source {row.source!r}; "
                    f"this file holds category {category!r}, source 'ai'"
                )
            rows.append(row)
    return rows


def balance_problems(rows: list[InstructionRow], per_source: int = ROWS_PER_CATEGORY) -> list[str]:
    """What keeps ``rows`` from being balanced HexaInst: one message per (category, source) off target."""
    counts = Counter((row.category, row.source) for row in rows)
    problems = []
    for category in CATEGORIES:
        for source in ("ai", "human"):
            n = counts.get((category, source), 0)
            if n != per_source:
                word = "short by" if n < per_source else "over by"
                problems.append(f"{category}/{source}: {n} rows, {word} {abs(n - per_source)} (expected {per_source})")
    extra = sorted({row.category for row in rows} - set(CATEGORIES))
    problems.extend(f"{category}: not a HexaInst category" for category in extra)
    return problems


def _check_unique(rows: list[InstructionRow]) -> None:
    ids = Counter(row.id for row in rows)
    dup_ids = sorted(i for i, n in ids.items() if n > 1)
    if dup_ids:
        raise SparcomError(f"HexaInst has duplicate ids: {', '.join(dup_ids[:5])}")
    first: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row.instruction.strip(), row.input.strip())
        if key in first:
            raise SparcomError(f"HexaInst rows {first[key]} and {row.id} have the same instruction and input")
        first[key] = row.id


def assemble_hexainst(allow_unbalanced: bool = False) -> tuple[list[InstructionRow], list[str]]:
    """Both halves in a fixed order (category, then AI before human, then id) and the balance problems.

    With ``allow_unbalanced`` a category whose source package is missing is left out of the human half (and
    reported) instead of failing the build.
    """
    rows = load_ai_rows()
    missing: list[str] = []
    for category in CATEGORIES:
        try:
            rows.extend(build_human_rows((category,)))
        except SparcomError as exc:
            if not allow_unbalanced:
                raise
            missing.append(f"{category}/human: {exc}")
    order = {category: i for i, category in enumerate(CATEGORIES)}
    rows.sort(key=lambda r: (order.get(r.category, len(order)), r.source != "ai", r.id))
    _check_unique(rows)
    problems = balance_problems(rows)
    if problems and not allow_unbalanced:
        raise SparcomError(
            "HexaInst is unbalanced (" + "; ".join(problems) + "); fix the missing rows or pass --allow-unbalanced"
        )
    return rows, problems + missing


def build_hexainst(
    out_path: str | Path | None = DEFAULT_PATH,
    allow_unbalanced: bool = False,
) -> list[InstructionRow]:
    """Build HexaInst and write it atomically to ``out_path`` (``None``: build in memory only).

    Refuses an unbalanced set unless ``allow_unbalanced``; then it writes what there is and warns with
    exactly what is short. The output is byte-identical for the same installed packages.
    """
    rows, problems = assemble_hexainst(allow_unbalanced=allow_unbalanced)
    if problems:
        warnings.warn("HexaInst written unbalanced: " + "; ".join(problems), stacklevel=2)
    if out_path is not None:
        write_rows(rows, out_path)
    return rows


def load_hexainst(path: str | Path | None = None, as_dataset: bool = False):
    """HexaInst rows from ``path`` (default: :data:`DEFAULT_PATH` if it exists, else built in memory).

    With ``as_dataset`` the rows come as a ``datasets.Dataset`` (needs ``pip install datasets``).
    """
    if as_dataset:
        try:
            import datasets
        except ImportError:
            raise SparcomError("as_dataset=True needs the 'datasets' package; run: pip install datasets") from None
    if path is None:
        rows = read_rows(DEFAULT_PATH) if DEFAULT_PATH.is_file() else build_hexainst(out_path=None)
    else:
        rows = read_rows(path)
    if as_dataset:
        return datasets.Dataset.from_list([row.to_dict() for row in rows])
    return rows
