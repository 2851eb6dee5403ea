"""``sparcom profile``, ``merge`` and ``show``: count activations into run directories, add runs, summarise one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.cli.app import app, stdout_console
from sparcom.cli.model_pass import model_pass_command
from sparcom.cli.options import (
    Overwrite,
    RunArgument,
    out_option,
)
from sparcom.profile.settings import ProfileSettings


def _profile_api():
    from sparcom.api import profile

    return profile


profile_command = model_pass_command(
    "profile", ProfileSettings, "Run directory to write counts and manifest into", _profile_api,
    lambda run: print_run_summary(run),
    """Count, per category, how often every MLP neuron (and expert) is active on the counted tokens.

    Under torchrun (torchrun --nproc-per-node N -m sparcom profile ...) the ranks share the batches; rank 0 writes.
    """)


@app.command("merge")
def merge_command(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories (profile or attribution runs) of the "
                                                    "same model and settings.")],
    out: out_option("Directory for the merged run"),
    overwrite: Overwrite = False,
) -> None:
    """Add the counts of compatible runs (same model, tokenizer and settings; disjoint instructions); attribution
    runs ('sparcom attribute') merge the same way."""
    from sparcom.api import merge_runs
    from sparcom.artifacts.run import ProfileRun
    from sparcom.cli.attribution import print_attribution_summary

    merged = merge_runs(runs, out, overwrite=overwrite)
    print_run_summary(merged) if isinstance(merged, ProfileRun) else print_attribution_summary(merged)


@app.command("show")
def show_command(run: RunArgument) -> None:
    """Summarise a profile run: model, settings, counted tokens and mean activation frequency per category."""
    from sparcom.api import load_run

    print_run_summary(load_run(run, require_complete=False))


def print_run_summary(run) -> None:
    """A short table of what a run counted."""
    from sparcom.data.schema import category_label

    manifest = run.manifest
    model = manifest.get("model", {})
    out = stdout_console()
    out.print(f"[bold]{run.path}[/]  model {model.get('name_or_path')} ({model.get('architecture')}, "
              f"{model.get('sizes', {}).get('layers')} layers)  scope {manifest.get('scope')}  "
              f"template {manifest.get('template')}  dtype {manifest.get('dtype')}")
    table = Table()
    for column in ("category", "instructions", "counted tokens", "mean neuron frequency"):
        table.add_column(column, justify="left" if column == "category" else "right")
    layers = run.layers("neuron")
    for category in run.categories:
        tokens = run.tokens(category)
        total = sum(int(run.count("neuron", category, j).sum()) for j in layers)
        width = sum(int(run.count("neuron", category, j).size) for j in layers)
        mean = f"{total / (tokens * width):.4f}" if tokens and width else "-"
        table.add_row(category_label(category), str(run.instructions(category)), f"{tokens:,}", mean)
    out.print(table)
    padding = manifest.get("padding")
    if padding:
        out.print(f"padding waste {padding['waste']:.1%}; wall time {manifest.get('wall_time_seconds', 0):.1f} s; "
                  f"{manifest.get('tokens_per_second') or 0:,.0f} tokens/s")
