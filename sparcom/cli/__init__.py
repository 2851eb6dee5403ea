"""The ``sparcom`` command line: thin commands over the public Python API (:mod:`sparcom.api`), one module per
command group, one error path (:mod:`sparcom.cli.app`)."""

from __future__ import annotations

import sys

import typer

from sparcom.cli import (  # noqa: F401  (registers the commands)
    analysis,
    attribution,
    causal,
    data,
    demo,
    models,
    profile,
    report,
    tune,
    validity,
)
from sparcom.cli.app import app

app.add_typer(data.data_app, name="data")
app.add_typer(models.models_app, name="models")


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code: 0, 2 for a sparcom error, click's code for usage errors, 130 interrupted."""
    from sparcom.cli.options import renamed_flag
    from sparcom.errors import SparcomError

    try:
        renamed_flag(sys.argv[1:] if argv is None else argv)
    except SparcomError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="sparcom", standalone_mode=False)
    except typer.exceptions.TyperException as exc:  # usage errors: click's own message and code
        show = getattr(exc, "show", None)
        show() if show else typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # an interrupt before a command ran (click's Abort)
            from sparcom.interrupts import EXIT_CODE, interrupted

            typer.echo(f"error: {interrupted(exc.__cause__)}", err=True)
            return EXIT_CODE
        typer.echo("error: aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point (and ``python -m sparcom``); signals are handled by the one error path
    (:class:`sparcom.cli.app.SparcomGroup`)."""
    sys.exit(main())
