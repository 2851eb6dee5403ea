"""The demo's step scheduler: steps numbered in listed order whatever finishes first, each run once after the steps
it needs, the longest chain first, the same records with one process or two, and a failing step's own error."""

from __future__ import annotations

import json
import os
import time

import pytest

from sparcom.demo.lanes import Task, check_tasks, critical_paths, run_tasks, schedule
from sparcom.demo.steps import Steps
from sparcom.errors import SparcomError


def write_mark(folder: str, name: str, needs: tuple[str, ...] = (), pause: float = 0.0) -> dict:
    """A step that checks its inputs exist, then leaves its mark (with the worker's pid) after ``pause``."""
    for other in needs:
        if not os.path.exists(os.path.join(folder, other)):
            raise SparcomError(f"{name} ran before {other}")
    time.sleep(pause)
    with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    return {"pid": os.getpid()}


def fail(message: str) -> None:
    raise SparcomError(message)


def tasks_in(folder) -> list[Task]:
    def task(name, after=(), cost=1.0, pause=0.3):
        return Task(name, write_mark, {"folder": str(folder), "name": name, "needs": after, "pause": pause},
                    after, cost)

    return [task("a"), task("b"), task("c", ("a",), cost=6.0), task("d", ("a", "b")), task("e", ("c", "d"))]


def test_critical_paths_and_the_ready_order_by_hand():
    tasks = tasks_in("/nowhere")
    assert critical_paths(tasks) == {"a": 8.0, "b": 3.0, "c": 7.0, "d": 2.0, "e": 1.0}
    assert [t.name for t in schedule(tasks, set(), set())] == ["a", "b"]
    assert [t.name for t in schedule(tasks, {"a"}, {"b"})] == ["c"]  # d waits for b
    assert [t.name for t in schedule(tasks, {"a", "b"}, set())] == ["c", "d"]  # the long chain first


def test_a_list_out_of_order_or_with_a_repeated_step_is_refused():
    a, b = Task("a", fail), Task("b", fail, after=("a",))
    check_tasks([a, b])
    with pytest.raises(SparcomError, match="needs a, which is not listed before it"):
        check_tasks([b, a])
    with pytest.raises(SparcomError, match="listed twice"):
        check_tasks([a, a])


@pytest.mark.parametrize("workers", [1, 2])
def test_every_step_runs_once_after_its_inputs_with_the_same_records(tmp_path, workers):
    marks = tmp_path / "marks"
    marks.mkdir()
    steps = Steps(tmp_path / "out")
    steps.run("first", lambda: {"kept": True})
    run_tasks(steps, tasks_in(marks), workers)
    records = sorted(p.name for p in (tmp_path / "out" / "steps").glob("*.json"))
    assert records == ["01-first.json", "02-a.json", "03-b.json", "04-c.json", "05-d.json", "06-e.json"]
    assert sorted(steps.timings) == [r[:-5] for r in records]
    pids = {json.loads((tmp_path / "out" / "steps" / r).read_text())["result"]["pid"] for r in records[1:]}
    assert (os.getpid() in pids) == (workers == 1) and len(pids) <= workers
    if workers == 2:
        assert len(pids) == 2  # a and b side by side
    before = {r: (tmp_path / "out" / "steps" / r).stat().st_mtime_ns for r in records}
    again = Steps(tmp_path / "out")
    again.run("first", lambda: {"kept": True})
    run_tasks(again, tasks_in(marks), workers)  # every record reused, none rewritten
    assert {r: (tmp_path / "out" / "steps" / r).stat().st_mtime_ns for r in records} == before


def test_a_failing_step_stops_the_demo_with_its_own_error_and_its_dependents_never_run(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = tasks_in(marks)
    tasks[1] = Task("b", fail, {"message": "b cannot be done: do this instead"})
    with pytest.raises(SparcomError, match="b cannot be done: do this instead"):
        run_tasks(Steps(tmp_path / "out"), tasks, 2)
    assert not (marks / "d").exists() and not (marks / "e").exists()
    assert not any(p.name.endswith("-b.json") for p in (tmp_path / "out" / "steps").glob("*.json"))


UNGUARDED = """
import os, sys
from sparcom.demo.lanes import Task, run_tasks
from sparcom.demo.steps import Steps

def mark(folder: str) -> dict:
    return {"pid": os.getpid()}

run_tasks(Steps(__import__("pathlib").Path(sys.argv[1])), [Task("a", mark, {"folder": sys.argv[1]})], 2)
"""


def test_a_script_without_the_main_guard_gets_one_line_that_names_it(tmp_path):
    """Spawned workers re-run a script's top level: without ``if __name__ == "__main__":`` the pool breaks; the
    error says what to do instead of multiprocessing's bootstrapping traceback."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED, encoding="utf-8")
    code = ("import sys, runpy\nfrom sparcom.errors import SparcomError\nsys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SparcomError as e:\n    print('error:', e)\n    sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", code, str(script), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "__main__" in done.stdout and "--workers 1" in done.stdout
