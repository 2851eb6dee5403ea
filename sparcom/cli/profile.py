"""``sparcom profile``, ``merge`` and ``show``: count activations into run directories, add runs, summarise one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.cli.app import app, stdout_console


@app.command("profile")
def profile_command(
    model: Annotated[str, typer.Argument(help="A hub id, a local model folder, a .gguf file or a built-in name.")],
    data: Annotated[Path, typer.Option("--data", help="Instruction rows (JSON Lines, DESIGN §3).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write counts and manifest into.")],
    scope: Annotated[str, typer.Option(help="Counted tokens: instruction, prompt, response or all.")] = "instruction",
    template: Annotated[str, typer.Option(help="Prompt format: auto, chat or raw.")] = "auto",
    system_prompt: Annotated[str | None, typer.Option(help="System prompt to put before each instruction.")] = None,
    batch_size: Annotated[int, typer.Option(help="Instructions per batch (length-bucketed).")] = 8,
    token_budget: Annotated[int | None, typer.Option(help="Max padded tokens per batch.")] = None,
    padding_side: Annotated[str | None, typer.Option(help="left or right (default: the tokenizer's).")] = None,
    per_category: Annotated[int | None, typer.Option(help="Use only the first N rows of each category.")] = None,
    categories: Annotated[str | None, typer.Option(help="Comma-separated categories the data may contain.")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    device_map: Annotated[str | None, typer.Option(help="'auto' spreads a large model over devices.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint counts every N batches.")] = 20,
    expert_neurons: Annotated[str, typer.Option(
        help="MoE expert neurons: auto (captured, verified), recompute (from the weights) or off (experts only).",
    )] = "auto",
    group_by: Annotated[str, typer.Option(
        help="Also keep counts below the category: per source half (source) or per instruction (instruction).",
    )] = "category",
    bootstrap: Annotated[int, typer.Option(help="Poisson bootstrap replicates for confidence intervals (0: off).")] = 0,
    bootstrap_seed: Annotated[int, typer.Option(help="Seed of the bootstrap weights.")] = 0,
    shard: Annotated[str | None, typer.Option(
        help="K/N: count only shard K (0-based) of N, a token-balanced share of the batches; "
             "'sparcom merge' of all N shards equals the whole run.",
    )] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Count, per category, how often every MLP neuron (and expert) is active on the counted tokens.

    Under torchrun (torchrun --nproc-per-node N -m sparcom profile ...) the ranks share the batches; rank 0 writes.
    """
    from sparcom.distributed import is_main_process
    from sparcom.profile.runner import ProfileSettings, profile

    settings = ProfileSettings(
        scope=scope, template=template, system_prompt=system_prompt, batch_size=batch_size,
        token_budget=token_budget, padding_side=padding_side, per_category=per_category,
        categories=tuple(c.strip() for c in categories.split(",")) if categories else None,
        checkpoint_every=checkpoint_every, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
        expert_neurons=expert_neurons, group_by=group_by, shard=shard,
    )
    run = profile(model, data, out, settings, dtype=dtype, device=device, device_map=device_map,
                  resume=resume, overwrite=overwrite, progress=not quiet)
    if is_main_process():
        print_run_summary(run)


@app.command("merge")
def merge_command(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories of the same model and settings.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the merged run.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Add the counts of compatible runs (same model, tokenizer and settings; disjoint instructions)."""
    from sparcom.artifacts.run import merge_runs

    print_run_summary(merge_runs(runs, out, overwrite=overwrite))


@app.command("show")
def show_command(run: Annotated[Path, typer.Argument(help="A profile run directory.")]) -> None:
    """Summarise a profile run: model, settings, counted tokens and mean activation frequency per category."""
    from sparcom.artifacts.run import load_run

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
