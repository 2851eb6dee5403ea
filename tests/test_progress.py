"""Progress of long steps: a live bar with an ETA on a terminal; plain lines in a log, at least every interval.

The interval is driven by a fake clock (the display's own time source) or set to 0 through
``SPARCOM_PROGRESS_SECONDS`` for the commands, so nothing here waits or times anything.
"""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console
from tiny import tiny_model, tiny_tokenizer, write_dataset

from sparcom.errors import SparcomError
from sparcom.progress import (
    INTERVAL_VARIABLE,
    LogProgress,
    StepProgress,
    clock,
    log_interval,
    progress_bar,
    remaining_seconds,
)

#: A log line: "<what>: <done>/<total> <unit>[, fields], H:MM:SS elapsed, ETA H:MM:SS|-:--:--".
LINE = re.compile(r"^(?P<what>.+?): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+)(?:, .*)?, "
                  r"\d+:\d\d:\d\d elapsed, ETA (?:\d+:\d\d:\d\d|-:--:--)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_progress(interval: float, fake: FakeClock, *fields: str) -> tuple[LogProgress, io.StringIO]:
    sink = io.StringIO()
    return LogProgress("batches", fields, interval, Console(file=sink), get_time=fake), sink


def test_log_lines_follow_the_clock():
    fake = FakeClock()
    bar, sink = log_progress(60.0, fake, "{task.fields[rate]}")
    task = bar.add_task("scoring", total=10, rate="")
    assert sink.getvalue().splitlines() == ["scoring: 0/10 batches, 0:00:00 elapsed, ETA -:--:--"]
    fake.now += 59
    bar.update(task, advance=1, rate="3 tok/s")
    bar.tick()
    assert len(sink.getvalue().splitlines()) == 1  # under a minute since the last line: nothing new
    fake.now += 1  # a minute since the first line: the next update writes one
    bar.update(task, advance=1, rate="4 tok/s")
    assert sink.getvalue().splitlines()[-1] == "scoring: 2/10 batches, 4 tok/s, 0:01:00 elapsed, ETA 0:04:00"
    fake.now += 61  # a batch longer than the interval: the ticker's call writes the line without an update
    bar.tick()
    assert sink.getvalue().splitlines()[-1] == "scoring: 2/10 batches, 4 tok/s, 0:02:01 elapsed, ETA 0:08:04"
    bar.update(task, advance=8)
    bar.stop()  # the end is always written, once
    bar.stop()
    lines = sink.getvalue().splitlines()
    assert lines[-1] == "scoring: 10/10 batches, 4 tok/s, 0:02:01 elapsed, ETA 0:00:00" and len(lines) == 4
    assert all(LINE.match(line) for line in lines)


def test_ticker_writes_while_a_step_does_not_update():
    fake = FakeClock()
    bar, sink = log_progress(0.01, fake)
    ticked = threading.Event()
    original = bar.tick

    def tick() -> None:
        fake.now += 1.0  # each wake-up of the ticker sees the interval passed
        original()
        ticked.set()

    bar.tick = tick
    with bar:
        bar.add_task("profiling", total=4)
        assert ticked.wait(30)  # the ticker thread called it; no update happened
    lines = sink.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("profiling: 0/4 batches") for line in lines)


def test_eta_is_the_mean_rate_since_the_step_started_not_since_a_resume():
    fake = FakeClock()
    bar = StepProgress(get_time=fake, auto_refresh=False, console=Console(file=io.StringIO()))
    task = bar.add_task("profiling", total=100, completed=40)  # resumed after 40
    assert remaining_seconds(bar.tasks[0]) is None
    fake.now += 30
    bar.update(task, advance=10)
    assert remaining_seconds(bar.tasks[0]) == pytest.approx(50 * 30 / 10)
    bar.update(task, completed=100)
    assert remaining_seconds(bar.tasks[0]) == 0.0
    assert clock(None) == "-:--:--" and clock(3725.4) == "1:02:05"


def test_a_terminal_gets_a_live_bar_with_an_eta(monkeypatch):
    terminal = Console(file=io.StringIO(), force_terminal=True, width=160)
    bar = progress_bar("instructions", "{task.fields[tps]}", console=terminal)
    assert isinstance(bar, StepProgress) and not isinstance(bar, LogProgress)
    with bar:
        task = bar.add_task("profiling", total=4, tps="")
        bar.update(task, advance=2, tps="9 tok/s")
    shown = terminal.file.getvalue()
    assert "2/4" in shown and "ETA" in shown and "9 tok/s" in shown
    assert isinstance(progress_bar("instructions", console=Console(file=io.StringIO())), LogProgress)
    assert not isinstance(progress_bar("x", enabled=False, console=Console(file=io.StringIO())), LogProgress)


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_a_bad_interval_is_one_error(monkeypatch, value):
    monkeypatch.setenv(INTERVAL_VARIABLE, value)
    with pytest.raises(SparcomError, match=INTERVAL_VARIABLE):
        log_interval()
    monkeypatch.setenv(INTERVAL_VARIABLE, "0.5")
    assert log_interval() == 0.5


def step_lines(output: str, what: str) -> list[re.Match]:
    return [m for m in map(LINE.match, output.splitlines()) if m and m["what"] == what]


def test_commands_write_progress_lines_to_a_log(cli, tmp_path, monkeypatch):
    """profile, ablate and examples, their output captured (not a terminal): a line per update at interval 0, each
    with the counts and an ETA, the last one complete."""
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    folder = tmp_path / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    data = write_dataset(tmp_path / "rows.jsonl")
    done = cli("profile", folder, "--data", data, "--out", tmp_path / "run", "--batch-size", 2, "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    lines = step_lines(done.stdout, "profiling")
    assert len(lines) >= 3 and lines[0]["done"] == "0" and lines[-1]["done"] == lines[-1]["total"]
    assert [int(m["done"]) for m in lines] == sorted(int(m["done"]) for m in lines)
    assert cli("identify", tmp_path / "run", "--out", tmp_path / "sel", "--no-plots").returncode == 0
    done = cli("ablate", folder, "--selection", tmp_path / "sel", "--data", data, "--out", tmp_path / "abl",
               "--seeds", 1, "--dtype", "float32", "--no-plots", "--batch-size", 4)
    assert done.returncode == 0, done.stderr
    lines = [m for m in map(LINE.match, done.stdout.splitlines()) if m and m["unit"] == "batches"]
    assert len(lines) >= 3 and lines[-1]["done"] == lines[-1]["total"], done.stdout
    done = cli("examples", folder, "--selection", tmp_path / "sel", "--data", data, "--out", tmp_path / "ex",
               "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    lines = step_lines(done.stdout, "recording")
    assert len(lines) >= 2 and lines[-1]["done"] == lines[-1]["total"], done.stdout
    done = cli("profile", folder, "--data", data, "--out", tmp_path / "quiet", "--quiet")
    assert done.returncode == 0 and not step_lines(done.stdout, "profiling")
