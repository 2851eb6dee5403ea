"""``sparcom models``: the built-in models, whether their weights package is installed, and their cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparcom.cli.app import command_group, stdout_console
from sparcom.errors import SparcomError

models_app = command_group("Built-in models installed from PyPI as GGUF files and converted once.")

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
    from sparcom.models.builtin import list_builtins

    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise SparcomError(f"--cache-dir {cache_dir}: exists and is not a folder; pass a folder for the converted models")
    statuses = list_builtins(cache_dir)
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
    """Convert built-in models into the cache now (about 20-60 s each, once) and print their folders."""
    from sparcom.models.builtin import list_builtins, resolve_builtin

    chosen = names or [status.name for status in list_builtins(cache_dir) if status.installed or status.cached]
    if not chosen:
        raise SparcomError("no built-in model is installed; `sparcom models list` shows the pip commands")
    for name in chosen:
        print(resolve_builtin(name, cache_dir))
