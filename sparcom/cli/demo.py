"""``sparcom demo``: the whole method on the built-in real models, resumable step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparcom.cli.app import app
from sparcom.cli.options import Plots


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Where results go.")] = Path("results/demo"),
    data: Annotated[Path, typer.Option(help="HexaInst file (built when missing).")] = Path("data/hexainst.jsonl"),
    full: Annotated[bool, typer.Option("--full", help="All 1,200 instructions and a larger causal check.")] = False,
    per_category: Annotated[int | None, typer.Option(help="Rows per category to profile (default 24).")] = None,
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter folder for the tuned Gemma.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Dtype of every model (default fast: bfloat16 where the CPU "
                                                   "computes it natively, else float32; every number in SUMMARY.md "
                                                   "names it).")] = None,
    plots: Plots = True,
) -> None:
    """Run the whole pipeline on the built-in real models; finished steps are reused on a second run."""
    from sparcom.demo import DemoConfig, run_demo

    changes = {"out": out, "data": data, "plots": plots}
    if dtype is not None:
        changes["dtype"] = dtype
    if per_category is not None:
        changes["per_category"] = per_category
    if adapter is not None:
        changes["adapter"] = adapter
    run_demo(DemoConfig.full(**changes) if full else DemoConfig(**changes))

