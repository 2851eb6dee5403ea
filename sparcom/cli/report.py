"""``sparcom report`` and ``sparcom examples``: one self-contained HTML page per study, and the token-level pass
behind its neuron and expert cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparcom.cli.app import app, stdout_console


@app.command("report")
def report_command(
    studies: Annotated[list[Path], typer.Argument(help="Output folders (identify, compare, ablate, examples, profile "
                                                       "runs) or folders that hold them.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (self-contained, opens offline).")],
    title: Annotated[str | None, typer.Option("--title", help="Page title (default: the model names).")] = None,
    cards: Annotated[int, typer.Option("--cards", help="Neuron/expert cards per category and ranking.")] = 6,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Gather a study's outputs into one self-contained HTML page with neuron and expert cards."""
    from sparcom.api import report

    path = report(studies, out, title=title, cards_per_category=cards, overwrite=overwrite)
    stdout_console().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command("examples")
def examples_command(
    model: Annotated[str, typer.Argument(help="The model the selection was made on.", show_default=False)],
    selection: Annotated[Path, typer.Option("--selection", help="A 'sparcom identify' output folder.")],
    data: Annotated[Path, typer.Option("--data", help="Instruction rows (JSON Lines).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for examples.json.")],
    component: Annotated[list[str] | None, typer.Option(
        "--component", help="kind/layer/index or expert_neuron/layer/expert/index (repeat); default: the top "
                            "members of each category's set.")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="The selection's profile run (default: its "
                                                            "recorded source run).")] = None,
    per_category: Annotated[int, typer.Option("--per-category", help="Default components per category and "
                                                                     "ranking.")] = 6,
    top_k: Annotated[int, typer.Option("--top-k", help="Instructions kept per component.")] = 5,
    window: Annotated[int, typer.Option("--window", help="Tokens of context on each side.")] = 12,
    rows_per_category: Annotated[int | None, typer.Option("--rows-per-category", help="Scan only the first N rows "
                                                                                      "of each category.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Record where each selected component fires most (top instructions and tokens) for the report's cards."""
    from sparcom.examples.recording import run_examples

    result = run_examples(model, selection, data, out, component or None, overwrite=overwrite, run=run,
                          top_k=top_k, window=window, per_category=per_category,
                          rows_per_category=rows_per_category, batch_size=batch_size, dtype=dtype, device=device,
                          progress=not quiet)
    stdout_console().print(f"wrote {out}: {len(result.components)} components, top {top_k} instructions each")
