"""The one progress display every long command uses: what, done/total, unit, live fields, elapsed time and ETA.

On a terminal it is a live bar (redrawn twice a second: a busier redraw takes CPU from the counting on a small
machine). When the output is a file or a pipe — a log of a batch job — a bar cannot be redrawn, so the same facts
are written as plain lines instead: one when a step starts, one at least every :func:`log_interval` seconds
while it runs (also when a single batch takes longer than that), and one when it ends. ``SPARCOM_PROGRESS_SECONDS``
sets that interval (default 30; 0 writes a line at every update, which the tests use instead of waiting).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from sparcom.errors import SparcomError

#: Seconds between two progress lines in a log (the environment variable that overrides it).
INTERVAL_VARIABLE = "SPARCOM_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0
#: Redraws per second of the live bar on a terminal.
REFRESH_PER_SECOND = 2


def log_interval() -> float:
    """Seconds between progress lines when the output is not a terminal (:data:`INTERVAL_VARIABLE`)."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not value:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise SparcomError(f"{INTERVAL_VARIABLE}={value!r}: must be a number of seconds ≥ 0 (0: a line at every "
                           "update); unset it for the default of 30")
    return seconds


def remaining_seconds(task: Task) -> float | None:
    """ETA of a task from its mean rate since it started (the work done before a resume does not count)."""
    if task.finished:
        return 0.0
    done = task.completed - task.fields.get("first", 0)
    elapsed = task.elapsed
    if task.total is None or not elapsed or done <= 0:
        return None
    return (task.total - task.completed) * elapsed / done


def clock(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class EtaColumn(ProgressColumn):
    """``ETA H:MM:SS`` from :func:`remaining_seconds` (rich's own estimate needs two updates within 30 s, which a
    slow step never makes)."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        return Text(f"ETA {clock(remaining_seconds(task))}", style="progress.remaining")


class StepProgress(Progress):
    """A rich progress whose tasks remember where they started (for the ETA of a resumed step)."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields) -> TaskID:
        return super().add_task(description, start, total, completed, visible, first=completed, **fields)


class LogProgress(StepProgress):
    """The same progress as plain lines for a file or pipe: no redrawing, a line per task at the start, at least
    every ``interval`` seconds (a ticker thread covers steps that update rarely) and at the end."""

    def __init__(self, unit: str, fields: tuple[str, ...], interval: float, console: Console | None = None,
                 get_time: Callable[[], float] | None = None) -> None:
        super().__init__(console=console, auto_refresh=False, get_time=get_time)
        self.unit, self.formats, self.interval = unit, fields, interval
        self._last: dict[TaskID, float] = {}  # when each task's last line was written
        self._shown: dict[TaskID, float] = {}  # the completed count each task's last line showed
        self._ended: set[TaskID] = set()
        self._write_lock = threading.Lock()
        self._halt = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._ticker is None:
            self._halt.clear()
            self._ticker = threading.Thread(target=self._tick_until_halted, name="sparcom-progress", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._halt.set()
            self._ticker.join()
            self._ticker = None
        with self._write_lock:
            for task in self.tasks:
                if task.id not in self._ended:
                    self._ended.add(task.id)
                    if self._shown.get(task.id) != task.completed:
                        self._write(task)

    def refresh(self) -> None:
        """Nothing to redraw: lines are written by :meth:`tick`."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields) -> TaskID:
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        with self._write_lock:
            self._last[task_id] = self.get_time()
            self._write(self._tasks[task_id])
        return task_id

    def update(self, task_id: TaskID, **changes) -> None:
        super().update(task_id, **changes)
        self.tick()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.tick()

    def tick(self) -> None:
        """Write a line for every running task whose last line is ``interval`` seconds old."""
        with self._write_lock:
            now = self.get_time()
            for task in self.tasks:
                if task.id not in self._ended and now - self._last.get(task.id, now) >= self.interval:
                    self._last[task.id] = now
                    self._write(task)

    def _tick_until_halted(self) -> None:
        while not self._halt.wait(min(self.interval, 5.0)):
            self.tick()

    def _write(self, task: Task) -> None:
        """One line (the caller holds the write lock)."""
        self._shown[task.id] = task.completed
        total = "?" if task.total is None else f"{task.total:,.0f}"
        parts = [f"{task.description}: {task.completed:,.0f}/{total} {self.unit}"]
        parts += [text for text in (f.format(task=task).strip() for f in self.formats) if text]
        parts.append(f"{clock(task.elapsed or 0.0)} elapsed")
        parts.append(f"ETA {clock(remaining_seconds(task))}")
        file = self.console.file
        file.write(", ".join(parts) + "\n")
        file.flush()


def progress_bar(unit: str, *fields: str, enabled: bool = True, description_width: int = 0,
                 console: Console | None = None) -> Progress:
    """The progress of one long step; ``fields`` are format strings over ``task.fields`` (e.g.
    ``"{task.fields[tps]}"``). A live bar on a terminal, plain lines otherwise (see the module's note)."""
    console = console or Console()
    if enabled and not (console.is_terminal and not console.is_dumb_terminal):
        return LogProgress(unit, fields, log_interval(), console)
    width = f":<{description_width}" if description_width else ""
    return StepProgress(
        TextColumn(f"[bold]{{task.description{width}}}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        *(TextColumn(f) for f in fields), TimeElapsedColumn(), EtaColumn(),
        disable=not enabled, transient=False, console=console, refresh_per_second=REFRESH_PER_SECOND,
    )
