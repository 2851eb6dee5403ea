"""The demo's steps, each done once and recorded in ``out/steps/NN-name.json`` (wall time, CPU time, result); a
second run reuses a step's record instead of running it again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from sparcom.errors import SparcomError

console = Console(stderr=True)


def step_records(out: Path, kind: str) -> list[Path]:
    """The records of the finished steps of one kind (``ablate``, ``report``, …: a step name's first word) in the
    demo folder ``out``; ``kind`` ``*``: every record."""
    return sorted((out / "steps").glob("[0-9][0-9]-*.json" if kind == "*" else f"[0-9][0-9]-{kind}-*.json"))


class Steps:
    """Runs named steps once; records wall time, CPU time and result of each in ``out/steps/{NN-name}.json``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out / "steps"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, dict[str, float]] = {}
        self.count = 0

    def number(self, name: str) -> str:
        """The step's record name ``NN-name``: its earlier record's (its number moves when steps are added), else
        the next number."""
        self.count += 1
        earlier = sorted(self.folder.glob(f"[0-9][0-9]-{name}.json"))
        return earlier[0].stem if earlier else f"{self.count:02d}-{name}"

    def run(self, name: str, work: Callable[[], Any], numbered: bool = False) -> Any:
        """Run ``work`` as step ``name`` unless its record exists; ``numbered``: ``name`` is already ``NN-name``
        (:meth:`number`, the steps run by :func:`sparcom.demo.lanes.run_tasks`)."""
        name = name if numbered else self.number(name)
        record_path = self.folder / f"{name}.json"
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                self.timings[name] = {"seconds": float(record["seconds"]), "cpu_seconds": record.get("cpu_seconds")}
            except (ValueError, KeyError, TypeError):
                raise SparcomError(f"{record_path}: damaged step record; delete it to run step {name} again") from None
            console.print(f"[dim]✓ {name}: done before ({record['seconds']:.0f} s), reused[/]")
            return record.get("result")
        console.rule(f"[bold]{name}")
        started, cpu = time.perf_counter(), time.process_time()
        result = work()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        self.timings[name] = {"seconds": seconds, "cpu_seconds": cpu_seconds}
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                                   "result": result}, indent=2, default=str), encoding="utf-8")
        tmp.replace(record_path)
        console.print(f"[green]✓ {name}[/] in {seconds:.0f} s (CPU {cpu_seconds:.0f} s)")
        return result


__all__ = ["Steps"]
