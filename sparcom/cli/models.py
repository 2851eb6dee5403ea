"""``sparcom models``: the built-in models, whether their weights package is installed, and their cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.cli.app import command_group, stdout_console
from sparcom.cli.options import Overwrite, Quiet, out_option
from sparcom.errors import SparcomError

models_app = command_group("Built-in models (GGUF conversions and a MoE made from one), and building MoE models.")

CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Folder holding the converted models (default: $SPARCOM_CACHE/models or ~/.cache/sparcom/models).",
    ),
]


@models_app.command("list")
def list_command(cache_dir: CacheOption = None) -> None:
    """List the built-in models: package, installed, cached, cache path, and the pip command when missing."""
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise SparcomError(f"--cache-dir {cache_dir}: exists and is not a folder; pass a folder for the converted models")
    from sparcom.zoo.catalog import statuses as builtin_statuses  # imports torch: after the arguments' checks

    statuses = builtin_statuses(cache_dir)
    table = Table(title="sparcom built-in models")
    table.add_column("name", no_wrap=True)
    for column in ("role", "package", "installed", "cached", "path"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        table.add_row(
            status.name,
            status.role,
            f"{status.package}=={status.version}",
            "yes" if status.installed else "[red]no[/red]",
            "yes" if status.cached else "no",
            str(status.path),
        )
    console = stdout_console()
    console.print(table)
    for status in statuses:
        if status.detail:
            console.print(f"{status.name}: {status.detail}", markup=False, highlight=False)
        if not status.installed:
            console.print(f"install {status.name} with: {status.pip_command}", markup=False, highlight=False)


@models_app.command("prepare")
def prepare_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Built-in model names (default: every installed one).")
    ] = None,
    cache_dir: CacheOption = None,
) -> None:
    """Convert or build built-in models into the cache now (GGUF: 20-60 s each; the MoE: minutes), print their folders."""
    from sparcom.zoo.catalog import resolve, statuses

    chosen = names or [status.name for status in statuses(cache_dir) if status.installed or status.cached]
    if not chosen:
        raise SparcomError("no built-in model is installed; `sparcom models list` shows the pip commands")
    for name in chosen:
        print(resolve(name, cache_dir))


@models_app.command("build-moe")
def build_moe_command(
    model: Annotated[str, typer.Argument(help="Dense Llama model: folder, .gguf, hub id or built-in name.")] = (
        "smollm2-135m-instruct"),
    out: out_option("Folder to write (default: ./<model>-moe<E>k<k>)", optional=True) = None,
    experts: Annotated[int, typer.Option(
        "--experts", help="Routed experts per layer (must divide the MLP width minus the shared neurons).")] = 64,
    top_k: Annotated[int, typer.Option("--top-k", help="Experts each token is routed to.")] = 16,
    shared_neurons: Annotated[int, typer.Option(
        "--shared-neurons", help="Neurons per layer in a shared expert every token uses (0: none).")] = 512,
    shared_by: Annotated[str, typer.Option(
        "--shared-by", help="Shared neurons: largest mean contribution ('magnitude') or firing rate ('frequency').")] = (
        "magnitude"),
    refit: Annotated[float, typer.Option(
        "--refit", help="Ridge penalty of the down-projection refit (recovery); 0: exact slices.")] = 0.3,
    calibration: Annotated[str, typer.Option(
        "--calibration", help="Calibration rows, not HexaInst: 'sparcom-sft' or a JSON Lines file.")] = "sparcom-sft",
    calibration_tokens: Annotated[int, typer.Option("--calibration-tokens", help="Calibration token budget.")] = 8192,
    distill_epochs: Annotated[int, typer.Option(
        "--distill-epochs", help="Epochs of end-to-end recovery: the dense model distilled into the down projections "
        "(0: none; docs/moe.md).")] = 0,
    distill_tokens: Annotated[int, typer.Option(
        "--distill-tokens", help="Calibration token budget of the distillation.")] = 16384,
    coactivation: Annotated[str, typer.Option(
        "--coactivation", help="Neuron feature clustered into experts: 'magnitude' or 'firing'.")] = "magnitude",
    clustering_seed: Annotated[int, typer.Option("--clustering-seed", help="Seed of the balanced clustering.")] = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """MoEfy a dense Llama model: a shared expert of its heaviest neurons, the rest in equal experts of co-activated
    neurons, a top-k router per layer, optionally refitted down projections; saved as a GraniteMoE(Shared) folder that
    plain transformers loads (docs/moe.md). Prints the folder."""
    from sparcom.api import build_moe
    from sparcom.zoo.moefy import MoefySettings

    settings = MoefySettings(num_experts=experts, top_k=top_k, shared_neurons=shared_neurons, shared_by=shared_by,
                             refit=refit, seed=clustering_seed, calibration_tokens=calibration_tokens,
                             coactivation=coactivation, distill_epochs=distill_epochs, distill_tokens=distill_tokens)
    settings.check()
    target = out if out is not None else Path(f"{Path(model).name}-moe{experts}k{top_k}")
    print(build_moe(model, target, settings, calibration=calibration, overwrite=overwrite, progress=not quiet))
