"""The one progress-bar layout every long command uses: what, bar, done/total, unit, live fields, time, ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(unit: str, *fields: str, enabled: bool = True, description_width: int = 0,
                 console: Console | None = None) -> Progress:
    """A rich bar; ``fields`` are format strings over ``task.fields`` (e.g. ``"{task.fields[tps]}"``)."""
    width = f":<{description_width}" if description_width else ""
    return Progress(
        TextColumn(f"[bold]{{task.description{width}}}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        *(TextColumn(f) for f in fields), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        disable=not enabled, transient=False, console=console,
    )
