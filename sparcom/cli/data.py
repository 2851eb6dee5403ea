"""``sparcom data``: build HexaInst, validate a dataset file, and show its counts and lengths."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.cli.app import command_group, stdout_console
from sparcom.data.schema import CATEGORIES, SOURCES, InstructionRow, category_label, read_rows, write_rows
from sparcom.errors import SparcomError

data_app = command_group("Build HexaInst and check instruction datasets.")

PathArgument = Annotated[Path, typer.Argument(help="A JSON Lines dataset file.")]
TokenizerOption = Annotated[
    Path | None,
    typer.Option("--tokenizer", help="A local model or tokenizer folder, to report lengths in tokens too."),
]


def _categories(rows: Sequence[InstructionRow]) -> list[str]:
    present = {row.category for row in rows}
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def counts_table(rows: Sequence[InstructionRow], title: str = "rows") -> Table:
    """Counts per category × source (ai, human) with totals."""
    counts = Counter((row.category, row.source) for row in rows)
    table = Table(title=title)
    table.add_column("category")
    for source in SOURCES:
        table.add_column(source, justify="right")
    table.add_column("total", justify="right")
    for category in _categories(rows):
        cells = [counts.get((category, s), 0) for s in SOURCES]
        table.add_row(category_label(category), *map(str, cells), str(sum(cells)))
    totals = [sum(counts.get((c, s), 0) for c in _categories(rows)) for s in SOURCES]
    table.add_row("all", *map(str, totals), str(len(rows)), style="bold")
    return table


def origins_table(rows: Sequence[InstructionRow]) -> Table:
    """Counts per category × origin dataset (the part of ``origin`` before the first colon)."""
    counts = Counter((row.category, row.source, row.origin.split(":", 1)[0] or "-") for row in rows)
    table = Table(title="rows by origin")
    table.add_column("category")
    table.add_column("source")
    table.add_column("origin")
    table.add_column("rows", justify="right")
    order = {c: i for i, c in enumerate(_categories(rows))}
    for (category, source, origin), n in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        table.add_row(category_label(category), source, origin, str(n))
    return table


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{min(values)}/{statistics.median(values):g}/{max(values)}"


def lengths_table(rows: Sequence[InstructionRow], tokenize: Callable[[str], int] | None = None) -> Table:
    """Min/median/max of words and characters (and tokens, given ``tokenize``) per category × source.

    The prompt is the instruction and its input joined by a blank line.
    """
    table = Table(title="lengths (min/median/max)")
    table.add_column("category")
    table.add_column("source")
    columns = ["prompt words", "prompt chars", "output words", "output chars"]
    if tokenize is not None:
        columns += ["prompt tokens", "output tokens"]
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    groups = [
        (category_label(c), s, [r for r in rows if r.category == c and r.source == s])
        for c in _categories(rows)
        for s in SOURCES
    ]
    groups = [g for g in groups if g[2]]
    groups.append(("all", "all", list(rows)))
    for name, source, group in groups:
        prompts = ["\n\n".join(p for p in (r.instruction, r.input) if p) for r in group]
        outputs = [r.output for r in group]
        cells = [
            _spread([len(p.split()) for p in prompts]),
            _spread([len(p) for p in prompts]),
            _spread([len(o.split()) for o in outputs]),
            _spread([len(o) for o in outputs]),
        ]
        if tokenize is not None:
            cells += [_spread([tokenize(p) for p in prompts]), _spread([tokenize(o) for o in outputs if o])]
        table.add_row(name, source, *cells, style="bold" if name == "all" else None)
    return table


def load_tokenizer(model_dir: Path) -> Callable[[str], int]:
    """A token counter from a local tokenizer directory (no download); the folder is checked before transformers
    (and torch) are imported."""
    if not model_dir.is_dir():
        raise SparcomError(f"{model_dir}: tokenizer directory not found; pass a local model or tokenizer folder")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise SparcomError("--tokenizer needs transformers; run: pip install transformers") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:  # transformers raises many types for an unusable folder
        raise SparcomError(f"{model_dir}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _print_stats(rows: Sequence[InstructionRow], tokenize: Callable[[str], int] | None) -> None:
    console = stdout_console()
    console.print(counts_table(rows))
    console.print(origins_table(rows))
    console.print(lengths_table(rows, tokenize))


@data_app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Where to write HexaInst (JSON Lines).")] = Path(
        "data/hexainst.jsonl"
    ),
    allow_unbalanced: Annotated[
        bool,
        typer.Option("--allow-unbalanced", help="Write even if a category is short of 100 AI or 100 human rows."),
    ] = False,
    tokenizer: TokenizerOption = None,
) -> None:
    """Build HexaInst (the packaged AI half + the human half from installed data packages)."""
    from sparcom.data.hexainst import assemble_hexainst

    tokenize = load_tokenizer(tokenizer) if tokenizer is not None else None  # fail before writing
    rows, problems = assemble_hexainst(allow_unbalanced=allow_unbalanced)
    write_rows(rows, out)
    _print_stats(rows, tokenize)
    for problem in problems:
        typer.echo(f"warning: unbalanced: {problem}", err=True)
    stdout_console().print(f"wrote {len(rows)} rows to {out}" + (" (UNBALANCED)" if problems else ""))


@data_app.command()
def reference(
    out: Annotated[Path, typer.Option("--out", help="Where to write the reference rows (JSON Lines).")] = Path(
        "data/reference-xsum.jsonl"),
    corpus: Annotated[str, typer.Option("--corpus", help="xsum (BBC news leads) or wikitext (Wikipedia sentences), "
                                                         "read from an installed package (docs/analysis.md).")] = "xsum",
    rows: Annotated[int, typer.Option("--rows", help="Passages to write (in file order).")] = 100,
) -> None:
    """Write a neutral reference corpus (prose that is not an instruction) for the generality claim's null:
    profile it with --template raw --group-by instruction and pass the run to 'identify --reference'."""
    from sparcom.data.reference import reference_rows

    found = reference_rows(corpus, rows)
    write_rows(found, out)
    stdout_console().print(f"wrote {len(found)} {corpus} reference rows to {out}")


@data_app.command()
def validate(path: PathArgument) -> None:
    """Check every row of a dataset file; print OK and the counts, or the first problem."""
    rows = read_rows(path)
    counts = Counter(row.category for row in rows)
    per_category = ", ".join(f"{c} {counts[c]}" for c in _categories(rows))
    typer.echo(f"OK: {path}: {len(rows)} rows ({per_category})")


@data_app.command()
def stats(
    path: PathArgument,
    tokenizer: TokenizerOption = None,
) -> None:
    """Counts per category × source and length statistics of a dataset file."""
    tokenize = load_tokenizer(tokenizer) if tokenizer is not None else None
    rows = read_rows(path)
    _print_stats(rows, tokenize)
