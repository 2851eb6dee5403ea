"""Helpers for the fault catalogue's tests (docs/errors.md): run sparcom as a user would, and check what it said,
its exit code and what it left on disk.

Most cases run the command line in this process (:func:`run_cli`, the ``cli`` fixture): ``sparcom.cli.main`` is
exactly what the installed script runs, and its exit code, stdout and stderr are checked the same way. The cases
whose point is the process run the installed console script in a subprocess (:func:`sparcom`, :func:`start`):
signals and ``kill -9`` at chosen points (tests/fault_injection/sitecustomize.py), a file-size limit
(``ulimit -f``) set on the subprocess, a read-only folder (permissions, or a read-only bind mount when the tests
run as root, who ignores permissions), and two processes on one folder.

Every error line a case produces is compared with the line docs/errors.md quotes for that case
(:func:`assert_catalogue_line`), so the catalogue cannot drift from what sparcom says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = Path(sys.executable).with_name("sparcom")
INJECTION = Path(__file__).parent / "fault_injection"
CATALOGUE = ROOT / "docs" / "errors.md"
#: One thread per subprocess: tiny models gain nothing from more, a busy machine loses, and the causal check's
#: numbers are compared with an in-process run on one thread.
BASE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
BASE_ENV.pop("SPARCOM_FAULT", None)


def environment(fault: str | None = None) -> dict[str, str]:
    """The subprocess environment: this checkout's sparcom, offline, and the fault plan (if any)."""
    if fault is None:
        return BASE_ENV
    return {**BASE_ENV, "SPARCOM_FAULT": fault, "PYTHONPATH": os.pathsep.join([str(INJECTION), BASE_ENV["PYTHONPATH"]])}


def child_setup(limit: int | None = None):
    """A preexec_fn: the child starts with SIGINT and SIGTERM at their defaults, whatever the suite was started
    with (``nohup`` or ``trap '' INT`` make them ignored, and sparcom rightly leaves an ignored signal alone), and,
    with ``limit``, may write no file larger than ``limit`` bytes (``ulimit -f``; SIGXFSZ keeps its default, kill,
    so the test shows what sparcom itself does about it)."""
    def apply() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        if limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def sparcom(*args, fault: str | None = None, limit: int | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed script to the end, in a subprocess."""
    return subprocess.run([str(SCRIPT), *(str(a) for a in args)], capture_output=True, text=True,
                          env=environment(fault), cwd=cwd, timeout=timeout, preexec_fn=child_setup(limit))


def start(*args, fault: str | None = None) -> subprocess.Popen:
    """Start the installed script (for signals sent from outside and runs at the same time)."""
    return subprocess.Popen([str(SCRIPT), *(str(a) for a in args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment(fault), preexec_fn=child_setup())


def finish(process: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_cli(capfd, *args) -> subprocess.CompletedProcess:
    """Run one command in this process through ``sparcom.cli.main`` (what the console script runs): its exit code
    and what it wrote to stdout and stderr, captured at the file descriptors (so a library's log line counts too)."""
    from sparcom.cli import main

    capfd.readouterr()  # drop what the test's own set-up printed
    argv = [str(a) for a in args]
    code = main(argv)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["sparcom", *argv], code, out, err)


def lines_of(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def assert_error(done: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """One ``error:`` line on stderr containing every fragment, the exit code, no traceback, and the line is the
    one docs/errors.md quotes for the running test's case; the line."""
    lines = lines_of(done)
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert_catalogue_line(lines[0])
    return lines[0]


def assert_interrupted(done: subprocess.CompletedProcess, signal_name: str, *fragments: str) -> str:
    return assert_error(done, f"interrupted ({signal_name})", *fragments, code=130)


def assert_ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------- the catalogue's quotes

CASE = r"[A-Z]\d+"
#: The stand-ins docs/errors.md uses for the paths given on the command line.
PLACEHOLDERS = ("RUN1", "RUN2", "RUN", "OUT", "DATA", "SEL", "PARENT", "FILE", "CACHE", "TUNED", "BASE")
#: How a quoted line starts: an error, the warning of a rebuilt cache (E16), an accepted file (D3).
QUOTED = ("error: ", "sparcom: warning: ", "OK: ")


def catalogue_rows() -> dict[str, str]:
    """Case id → its table row in docs/errors.md."""
    rows = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        found = re.match(rf"\|\s*({CASE})\s*\|", line)
        if found:
            assert found.group(1) not in rows, f"case {found.group(1)} appears twice"
            rows[found.group(1)] = line
    return rows


@cache
def catalogue_quotes() -> dict[str, list[str]]:
    """Case id → the lines its "what sparcom says" cell quotes (in backticks, starting like a line sparcom prints)."""
    quotes = {}
    for case, row in catalogue_rows().items():
        says = row.split("|")[4]
        found = [text for text in re.findall(r"`([^`]+)`", says) if text.startswith(QUOTED)]
        if found:
            quotes[case] = found
    return quotes


def quote_pattern(quote: str) -> re.Pattern:
    """The quoted line as a pattern for the real one: a placeholder stands for a path, ``(...)`` and ``...`` for
    text left out; everything else must be exactly what sparcom prints."""
    words = "|".join(PLACEHOLDERS)
    parts = re.split(rf"(\(\.\.\.\)|\.\.\.|(?<![A-Za-z])(?:{words})(?![A-Za-z0-9]))", quote)
    pattern = "".join(".*" if part in ("(...)", "...") else r"\S+" if part in PLACEHOLDERS else re.escape(part)
                      for part in parts)
    return re.compile(pattern)


def cases_of(test_id: str) -> list[str]:
    """The catalogue cases a test covers, from its pytest id: a parameter id that starts with one ("C1-scope",
    "I5-SIGINT"), else the ids that start its name (test_A1_I9_I10_…, or a range test_C1_to_C5_…)."""
    name, _, param = test_id.split("::")[-1].split(" ")[0].partition("[")
    found = re.match(rf"({CASE})-", param)
    if found:
        return [found.group(1)]
    parts = name.removeprefix("test_").split("_")
    if len(parts) > 2 and parts[1] == "to":
        first, last = parts[0], parts[2]
        return [f"{first[0]}{n}" for n in range(int(first[1:]), int(last[1:]) + 1)]
    cases = []
    while parts and re.fullmatch(CASE, parts[0]):
        cases.append(parts.pop(0))
    return cases


def assert_catalogue_line(line: str) -> None:
    """``line`` is one of the lines docs/errors.md quotes for the running test's case(s), when it quotes any."""
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "")
    quotes = [q for case in cases_of(test_id) for q in catalogue_quotes().get(case, [])
              if q.split(":")[0] == line.split(":")[0]]
    if not quotes:
        return
    assert any(quote_pattern(q).fullmatch(line) for q in quotes), \
        f"docs/errors.md quotes {quotes} for {cases_of(test_id)}, but sparcom said:\n{line}"


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (relative paths), to show a folder is unchanged."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_litter(parent: Path) -> None:
    """No staging folder, replaced folder, lock or temporary file of sparcom's beside the outputs."""
    left = [p.name for p in parent.iterdir()
            if p.name.startswith(".") and p.name.endswith((".partial", ".replaced", ".lock", ".tmp"))]
    assert not left, left


def counts_of(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "counts.safetensors"))


def assert_same_counts(run: Path, reference: Path) -> None:
    """Every counter equal, and the counts files byte for byte the same (a resumed run is the uninterrupted one)."""
    got, want = counts_of(run), counts_of(reference)
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.array_equal(got[key], value), key
    assert (run / "counts.safetensors").read_bytes() == (reference / "counts.safetensors").read_bytes()
    assert json.loads((run / "manifest.json").read_text())["complete"] is True
    assert not (run / "checkpoint.safetensors").exists()


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until ``path`` exists (the process got that far), failing if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before {path} appeared: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` read-only for the subprocess: permissions for a normal user; for root (whom permissions do
    not stop) a read-only bind mount of the folder on itself, skipped where mounting is not allowed."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    if not shutil.which("mount"):
        pytest.skip("running as root without mount: a read-only folder cannot be made")
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"running as root and bind mounts are not allowed here ({bind.stderr.strip()})")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only ({remount.stderr.strip()})")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def send_when(path: Path, process: subprocess.Popen, signum: int) -> None:
    wait_for(path, process)
    process.send_signal(signum)


__all__ = ["SCRIPT", "assert_catalogue_line", "assert_error", "assert_interrupted", "assert_no_litter", "assert_ok",
           "assert_same_counts", "child_setup", "counts_of", "finish", "read_only", "run_cli", "send_when", "signal",
           "snapshot", "sparcom", "start", "wait_for"]


# --------------------------------------------------------------------------------------------- the shared study

LONG_ROW = {"id": "long-1", "category": "gen", "source": "ai", "origin": "tests",
            "instruction": "Continue this story. " + "The wind blew over the calm sea at night. " * 120,
            "input": "", "output": "ok", "license": "CC0-1.0"}


def save_model(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_study(root: Path) -> dict[str, Path]:
    """Model folders, datasets, finished runs and a selection for the catalogue's cases, made in-process (fast)."""
    import torch
    from moe_tiny import tiny_moe_model
    from tiny import tiny_model, tiny_tokenizer, write_dataset

    from sparcom import ProfileSettings, identify, profile
    from sparcom.models.loading import load_model

    paths: dict[str, Path] = {"root": root}
    data = paths["data"] = write_dataset(root / "rows.jsonl")
    rows = rows_of(data)
    tokenizer = tiny_tokenizer()
    models = root / "models"
    paths["llama"] = save_model(tiny_model("llama", seed=1), tokenizer, models / "llama")
    paths["llama-other-weights"] = save_model(tiny_model("llama", seed=2), tokenizer, models / "llama-other-weights")
    paths["llama-other-tokenizer"] = save_model(tiny_model("llama", seed=1), tiny_tokenizer(chat=False),
                                                models / "llama-other-tokenizer")
    paths["llama-wide"] = save_model(tiny_model("llama", seed=1, intermediate_size=64), tokenizer, models / "llama-wide")
    nan = tiny_model("llama", seed=1)
    with torch.no_grad():
        nan.model.layers[1].mlp.gate_proj.weight[3, 0] = float("nan")
    paths["llama-nan"] = save_model(nan, tokenizer, models / "llama-nan")
    paths["qwen2"] = save_model(tiny_model("qwen2", seed=1), tokenizer, models / "qwen2")
    paths["moe"] = save_model(tiny_moe_model("qwen2_moe", seed=3), tokenizer, models / "moe")
    broken = tiny_moe_model("mixtral", seed=1)
    with torch.no_grad():
        broken.model.layers[1].mlp.experts.gate_up_proj[2] = float("nan")
    paths["moe-nan"] = save_model(broken, tokenizer, models / "moe-nan")

    paths["half-a"] = write_rows(root / "half-a.jsonl", rows[:6])
    paths["half-b"] = write_rows(root / "half-b.jsonl", rows[6:])
    paths["overlap-b"] = write_rows(root / "overlap-b.jsonl", rows[4:])
    paths["reused-b"] = write_rows(root / "reused-b.jsonl", [dict(row, id=f"t-{i:03d}", instruction=row["instruction"]
                                                                 + " (another row)")
                                                             for i, row in enumerate(rows[6:])])
    paths["two-categories"] = write_rows(root / "two-categories.jsonl",
                                         [row for row in rows if row["category"] in ("cls", "code")])

    loaded: dict[tuple[Path, str], object] = {}  # one load per model folder and dtype

    def model_of(folder: Path, dtype: str):
        if (folder, dtype) not in loaded:
            loaded[folder, dtype] = load_model(str(folder), dtype=dtype)
        return loaded[folder, dtype]

    runs = root / "runs"
    made = {
        "run": (paths["llama"], data, ProfileSettings(), "auto"),
        "run-prompt": (paths["llama"], data, ProfileSettings(scope="prompt"), "auto"),
        "run-raw": (paths["llama"], data, ProfileSettings(template="raw"), "auto"),
        "run-bf16": (paths["llama"], data, ProfileSettings(), "bfloat16"),
        "run-source": (paths["llama"], data, ProfileSettings(group_by="source"), "auto"),
        "run-qwen2": (paths["qwen2"], data, ProfileSettings(), "auto"),
        "run-a": (paths["llama"], paths["half-a"], ProfileSettings(), "auto"),
        "run-b": (paths["llama"], paths["half-b"], ProfileSettings(), "auto"),
        "run-overlap": (paths["llama"], paths["overlap-b"], ProfileSettings(), "auto"),
        "run-reused": (paths["llama"], paths["reused-b"], ProfileSettings(), "auto"),
        "run-b-prompt": (paths["llama"], paths["half-b"], ProfileSettings(scope="prompt"), "auto"),
        "run-two-categories": (paths["llama"], paths["two-categories"], ProfileSettings(), "auto"),
        "run-wide": (paths["llama-wide"], data, ProfileSettings(), "auto"),
    }
    for name, (model, rows_path, settings, dtype) in made.items():
        paths[name] = profile(model_of(model, dtype), rows_path, runs / name, settings, progress=False).path
    paths["selection"] = root / "selection"
    identify(paths["run"], rule="percentile", epsilon=0.05, sweep=False, plots=False, out=paths["selection"])
    paths["selection-wide"] = root / "selection-wide"
    identify(paths["run-wide"], rule="percentile", epsilon=0.05, sweep=False, plots=False, out=paths["selection-wide"])
    return paths
