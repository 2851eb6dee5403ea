"""The instruction row format shared by HexaInst and users' own datasets (DESIGN §3).

One JSON object per line with the fields id, category, source, origin, instruction, input, output, license.
Reading validates every line and names the file and line of the first problem, so a broken dataset is
refused before any model is loaded. Files are UTF-8; a byte-order mark (as Windows editors write) and CRLF or CR
line ends are accepted and read exactly like the plain file, while other encodings (Latin-1, UTF-16) are refused
with the line and byte, never guessed.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sparcom.errors import SparcomError
from sparcom.outputs import WriteFailed, check_parent, write_problem

#: HexaInst's six categories, in the order used by tables and plots.
CATEGORIES: tuple[str, ...] = ("cls", "code", "qa", "gen", "math", "sum")
#: Display names for plots and reports.
CATEGORY_LABELS: dict[str, str] = {c: c.upper() for c in CATEGORIES}

REQUIRED_FIELDS: tuple[str, ...] = ("id", "category", "source", "origin", "instruction", "input", "output", "license")
SOURCES: tuple[str, ...] = ("ai", "human")
# Category names become artifact keys ("neuron/{cat}/{layer}"), so they must be safe path segments.
_CATEGORY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


@dataclass(frozen=True)
class InstructionRow:
    """One instruction with its optional input and its reference response."""

    id: str
    category: str
    source: str
    origin: str
    instruction: str
    input: str
    output: str
    license: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def category_label(category: str) -> str:
    """The display label of a category (CLS, CODE, …; users' own categories upper-cased)."""
    return CATEGORY_LABELS.get(category, category.upper())


def validate_category(category: object, where: str) -> str:
    if not isinstance(category, str) or not category.strip():
        raise SparcomError(f"{where}: empty category; give every row a category such as one of {', '.join(CATEGORIES)}")
    if not _CATEGORY_PATTERN.match(category):
        raise SparcomError(
            f"{where}: category {category!r} is not a lowercase name of letters, digits, '_' or '-'; rename it"
        )
    return category


def row_from_dict(obj: object, where: str, require_output: bool = False) -> InstructionRow:
    """Check one decoded JSON object against the schema; ``where`` names the file and line for errors."""
    if not isinstance(obj, dict):
        raise SparcomError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in obj]
    if missing:
        raise SparcomError(f"{where}: missing required field(s) {', '.join(missing)}; every row needs {', '.join(REQUIRED_FIELDS)}")
    for field in REQUIRED_FIELDS:
        if not isinstance(obj[field], str):
            raise SparcomError(f"{where}: field {field!r} must be a string, got {type(obj[field]).__name__}")
    if not obj["id"].strip():
        raise SparcomError(f"{where}: empty id; give every row a unique id")
    validate_category(obj["category"], where)
    if obj["source"] not in SOURCES:
        raise SparcomError(f"{where}: source {obj['source']!r} must be one of {', '.join(SOURCES)}")
    if not obj["instruction"].strip():
        raise SparcomError(f"{where}: empty instruction; fill it in or remove the row")
    if require_output and not obj["output"].strip():
        raise SparcomError(f"{where}: empty output; this use needs a reference response in every row (scope "
                           "response or all, ablate, tune): fill it in or remove the row")
    return InstructionRow(**{f: obj[f] for f in REQUIRED_FIELDS})


def numbered_rows(lines: Iterable[str], file: str, require_output: bool = False
                  ) -> Iterator[tuple[int, str, InstructionRow]]:
    """Each non-blank line of a JSON Lines file decoded and checked as a row: (line number, ``file:line`` for the
    caller's own errors, row)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SparcomError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); fix or remove the line") from None
        yield number, where, row_from_dict(obj, where, require_output=require_output)


def read_rows(
    path: str | Path,
    categories: Sequence[str] | None = None,
    require_output: bool = False,
) -> list[InstructionRow]:
    """Read and validate a JSON Lines dataset.

    ``categories`` restricts the accepted category names (rows outside it are an error, not silently dropped);
    ``require_output`` demands a non-empty reference response in every row.
    """
    path = Path(path)
    rows: list[InstructionRow] = []
    seen: dict[str, int] = {}
    for number, where, row in numbered_rows(dataset_lines(path), str(path), require_output):
        if categories is not None and row.category not in categories:
            raise SparcomError(
                f"{where}: unknown category {row.category!r}; expected one of {', '.join(categories)}"
            )
        if row.id in seen:
            raise SparcomError(f"{where}: duplicate id {row.id!r} (first on line {seen[row.id]}); ids must be unique")
        seen[row.id] = number
        rows.append(row)
    if not rows:
        raise SparcomError(f"{path}: dataset is empty; it needs at least one instruction row")
    return rows


def dataset_lines(path: Path) -> list[str]:
    """The text lines of a UTF-8 dataset file (a leading byte-order mark dropped, CRLF and CR read as line ends);
    a file that is missing, unreadable or not UTF-8 is a one-line error naming the line and the byte."""
    if not path.is_file():
        raise SparcomError(f"{path}: dataset file not found; build HexaInst with 'sparcom data build' or pass --data FILE")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SparcomError(f"{path}: cannot read the dataset ({exc.strerror or exc})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SparcomError(f"{path}: the file is UTF-16; save it as UTF-8 (JSON Lines are UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        offset = exc.start + bom
        line = data.count(b"\n", 0, offset) + 1
        column = offset - max(data.rfind(b"\n", 0, offset) + 1, bom) + 1
        raise SparcomError(f"{path}:{line}: not UTF-8 (byte 0x{data[offset]:02x} at column {column}); save the file "
                           "as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    return io.StringIO(text, newline=None).read().split("\n")


def first_rows_per_category(rows: Sequence[InstructionRow], per_category: int | None = None,
                            exclude: Collection[str] = ()) -> tuple[list[InstructionRow], list[str]]:
    """The first ``per_category`` rows of each category in file order (all with None), skipping ``exclude`` ids,
    and the categories of the remaining rows in first-seen order."""
    categories: list[str] = []
    kept: list[InstructionRow] = []
    taken: dict[str, int] = {}
    for row in rows:
        if row.id in exclude:
            continue
        if row.category not in categories:
            categories.append(row.category)
        if per_category is None or taken.get(row.category, 0) < per_category:
            kept.append(row)
            taken[row.category] = taken.get(row.category, 0) + 1
    return kept, categories


def source_balanced_rows(rows: Sequence[InstructionRow], per_category: int | None = None,
                         exclude: Collection[str] = ()) -> tuple[list[InstructionRow], list[str]]:
    """``per_category`` rows of each category taken equally from its sources (AI-written and human-written), each
    source's first rows in file order, ``exclude`` ids skipped; and the categories in first-seen order.

    The first rows of a HexaInst category are all AI-written (the file lists AI before human), so "the first N"
    scores one source only. Here the quota is shared evenly (sources in sorted order get the remainder first);
    a source with too few rows leaves its shortfall to the others. The kept rows stay in file order. With
    ``per_category`` None every row is kept (the same as :func:`first_rows_per_category`).
    """
    if per_category is None:
        return first_rows_per_category(rows, None, exclude)
    available: dict[str, dict[str, list[int]]] = {}
    categories: list[str] = []
    for position, row in enumerate(rows):
        if row.id in exclude:
            continue
        if row.category not in categories:
            categories.append(row.category)
        available.setdefault(row.category, {}).setdefault(row.source, []).append(position)
    kept: set[int] = set()
    for by_source in available.values():
        sources = sorted(by_source)
        need, taken = per_category, dict.fromkeys(sources, 0)
        while need > 0:
            open_sources = [s for s in sources if taken[s] < len(by_source[s])]
            if not open_sources:
                break
            for source in open_sources[:need]:
                kept.add(by_source[source][taken[source]])
                taken[source] += 1
                need -= 1
    return [row for position, row in enumerate(rows) if position in kept], categories


def balanced_rows(rows: Sequence[InstructionRow], per_category: int) -> list[InstructionRow]:
    """``per_category`` rows of each category shared evenly over its sources (the first sources seen get the
    remainder), each source's first rows in file order: a subset that keeps HexaInst's AI/human halves, so the
    cross-source measures have both (the first rows of a category are often all of one source)."""
    sources: dict[str, list[str]] = {}
    for row in rows:
        seen = sources.setdefault(row.category, [])
        if row.source not in seen:
            seen.append(row.source)
    quota = {(c, source): per_category // len(seen) + (i < per_category % len(seen))
             for c, seen in sources.items() for i, source in enumerate(seen)}
    taken: dict[tuple[str, str], int] = {}
    kept = []
    for row in rows:
        key = (row.category, row.source)
        if taken.get(key, 0) < quota[key]:
            kept.append(row)
            taken[key] = taken.get(key, 0) + 1
    return kept


def write_rows(rows: Iterable[InstructionRow | dict], path: str | Path) -> None:
    """Write rows as JSON Lines atomically (a partial file never appears under ``path``)."""
    path = Path(path)
    if path.is_dir():
        raise SparcomError(f"{path}: is a folder; --out must be a .jsonl file path")
    check_parent(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                data = row.to_dict() if isinstance(row, InstructionRow) else row
                handle.write(json.dumps(data, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path}: {write_problem(exc)}; nothing was written", write_problem(exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
