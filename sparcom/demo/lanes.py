"""The demo's steps on several worker processes: each step once, after the steps it reads, longest path first.

On a 2-core CPU one process with two torch threads keeps both cores busy only in the large matrix products;
profiling, identification and the examples pass spend much of their time in Python and NumPy on one core (their
records show 1.2–1.6 CPU-seconds per second). Two worker processes with one thread each run two independent steps
side by side — SmolLM2's causal check beside Gemma's profiles, say — so both cores work all the time.

A :class:`Task` names its step, the top-level function that does it (with picklable arguments: worker processes
are spawned), the steps it needs, and a rough cost. :func:`run_tasks` numbers the steps in their listed order
(a topological order, which is also the order one process runs them in), so records keep their names whatever
finishes first; then it hands each free worker the ready step with the longest chain of work after it. A step's
record is written by the worker that ran it (:class:`sparcom.demo.steps.Steps`), so a second run reuses it as
before. A step that fails stops the demo once the running ones are done, with its own error.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparcom.demo.steps import Steps
from sparcom.errors import SparcomError


@dataclass(frozen=True)
class Task:
    """One demo step: ``work(**kwargs)`` (top-level, picklable arguments), after the steps named in ``after``."""

    name: str
    work: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    #: A rough relative cost (the causal checks are the longest): only orders the ready steps.
    cost: float = 1.0


def check_tasks(tasks: Sequence[Task]) -> None:
    """Refuse a list whose names repeat or whose dependencies are unknown or listed after the step."""
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise SparcomError(f"demo step {task.name!r} is listed twice")
        missing = [name for name in task.after if name not in seen]
        if missing:
            raise SparcomError(f"demo step {task.name!r} needs {', '.join(missing)}, which is not listed before it")
        seen.add(task.name)


def critical_paths(tasks: Sequence[Task]) -> dict[str, float]:
    """Per step, its cost plus the longest chain of costs of the steps that need it (directly or not)."""
    after: dict[str, list[str]] = {t.name: [] for t in tasks}
    for task in tasks:
        for name in task.after:
            after[name].append(task.name)
    cost = {t.name: t.cost for t in tasks}
    path: dict[str, float] = {}
    for task in reversed(tasks):  # listed in topological order: every dependent is done first
        path[task.name] = cost[task.name] + max((path[n] for n in after[task.name]), default=0.0)
    return path


def schedule(tasks: Sequence[Task], done: set[str], running: set[str]) -> list[Task]:
    """The steps that may start now, the longest remaining path first (ties: listed order)."""
    paths = critical_paths(tasks)
    ready = [t for t in tasks if t.name not in done and t.name not in running and all(a in done for a in t.after)]
    return sorted(ready, key=lambda t: -paths[t.name])


class _Prefixed(io.TextIOBase):
    """A text stream that starts every line with ``[step]``: the workers' progress lines share one terminal."""

    def __init__(self, stream, prefix: str) -> None:
        self.stream, self.prefix, self.fresh = stream, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.fresh and piece.strip():
                self.stream.write(self.prefix)
            self.stream.write(piece)
            self.fresh = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _start_worker(threads: int) -> None:
    """A worker: ``threads`` torch threads, progress as plain lines (two live bars cannot share a terminal)."""
    os.environ["TERM"] = "dumb"
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(out: Path, numbered: str, work: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one step in a worker; returns its timing (the record is written by :class:`Steps`)."""
    plain_out, plain_err = sys.stdout, sys.stderr
    tag = f"[{numbered}] "
    sys.stdout, sys.stderr = _Prefixed(plain_out, tag), _Prefixed(plain_err, tag)
    try:
        steps = Steps(out)
        steps.run(numbered, lambda: work(**kwargs), numbered=True)
        return steps.timings[numbered]
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = plain_out, plain_err


def run_tasks(steps: Steps, tasks: Sequence[Task], workers: int) -> None:
    """Run every task once through ``steps`` (a :class:`sparcom.demo.steps.Steps`): in listed order in this process
    when ``workers`` is 1, else on ``workers`` spawned processes sharing the CPU's cores."""
    check_tasks(tasks)
    numbered = {t.name: steps.number(t.name) for t in tasks}
    if workers <= 1:
        for task in tasks:
            steps.run(numbered[task.name], lambda task=task: task.work(**task.kwargs), numbered=True)
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    done: set[str] = set()
    running: dict[Future, Task] = {}
    failure: BaseException | None = None
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(threads,)) as pool:
        while len(done) < len(tasks):
            if failure is None:
                for task in schedule(tasks, done, {t.name for t in running.values()})[:workers - len(running)]:
                    running[pool.submit(_run_in_worker, steps.out, numbered[task.name], task.work,
                                        task.kwargs)] = task
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    steps.timings[numbered[task.name]] = future.result()
                    done.add(task.name)
                except BaseException as error:  # kept, and raised once the running steps have ended
                    failure = failure or error
    if isinstance(failure, BrokenProcessPool):
        raise SparcomError("a worker process of the demo died before its step ended (killed, out of memory, or — in "
                           "a Python script that calls run_demo — no `if __name__ == \"__main__\":` guard around the "
                           "call); run again with --workers 1 to see the step's own error") from None
    if failure is not None:
        raise failure


__all__ = ["Task", "check_tasks", "critical_paths", "run_tasks", "schedule"]
