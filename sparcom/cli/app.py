"""The ``sparcom`` command group and its one error path.

Every command raises :class:`~sparcom.errors.SparcomError` for a problem with the user's input or environment;
:class:`SparcomGroup` turns it — anywhere below the root group — into one ``error:`` line on stderr and exit code 2,
and an interrupt (Ctrl-C or SIGTERM, :mod:`sparcom.interrupts`) into one line saying what was kept and exit code
130. Usage errors keep click's own message and code. There is no other place that prints errors, so a script
chaining commands always sees a failure in the exit code. The catalogue of cases is docs/errors.md.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

from sparcom.errors import SparcomError
from sparcom.interrupts import EXIT_CODE as INTERRUPTED
from sparcom.interrupts import interrupted, signals_as_interrupts


class SparcomGroup(TyperGroup):
    """A typer group whose invocation turns sparcom's errors into one line and an exit code."""

    def invoke(self, ctx):
        try:
            with signals_as_interrupts():  # the one place SIGTERM becomes an interrupt, for every command
                return super().invoke(ctx)
        except SparcomError as exc:
            if not getattr(exc, "silent", False):  # a torchrun job's failure is printed by rank 0 alone
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (sparcom.interrupts)
            typer.echo(f"error: {interrupted(exc)}", err=True)
            raise typer.Exit(INTERRUPTED) from None


def command_group(help_text: str) -> typer.Typer:
    """A sub-group (``sparcom data …``) that shares the error path (the root group catches for it)."""
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


app = typer.Typer(
    cls=SparcomGroup,
    help="Find, compare and causally test the instruction-specific neurons and experts of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def stdout_console() -> Console:
    """Where tables go: the terminal's width, or a wide page when piped (no wrapping at 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=200)
