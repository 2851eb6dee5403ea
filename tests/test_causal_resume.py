"""An interrupted causal check resumes to exactly the numbers of an uninterrupted one, through the console script:
SIGTERM and Ctrl-C stop it with one line and exit code 130, every finished condition is kept, --resume continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from causal_tiny import one_thread, random_masks, write_selection_dir  # noqa: F401
from tiny import tiny_model, tiny_tokenizer, write_dataset

from sparcom.api import ablate
from sparcom.causal.checkpoint import checkpoint_dir
from sparcom.causal.settings import CausalSettings
from sparcom.models.loading import load_model
from sparcom.models.sites import model_sites

CATEGORIES = ["cls", "code", "qa", "gen", "math", "sum"]
SCRIPT = Path(sys.executable).with_name("sparcom")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
SEEDS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    folder = root / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    loaded = load_model(str(folder), dtype="float32")
    selection = write_selection_dir(root / "selection", random_masks(model_sites(loaded.model), CATEGORIES, seed=2),
                                    loaded, CATEGORIES)
    data = write_dataset(root / "rows.jsonl")
    args = ["ablate", str(folder), "--selection", str(selection), "--data", str(data), "--seeds", str(SEEDS),
            "--batch-size", "1", "--replicates", "50", "--quiet", "--no-plots", "--dtype", "float32"]
    return {"root": root, "folder": folder, "selection": selection, "data": data, "args": args}


def finished(out: Path) -> int:
    folder = checkpoint_dir(out)
    # finished conditions only: a condition being written is a hidden temporary file, which pathlib's glob matches
    return len([p for p in folder.glob("*.npz") if not p.name.startswith(".")]) if folder.is_dir() else 0


def interrupt(args: list[str], out: Path, after: int, sig: int) -> subprocess.CompletedProcess:
    """Start the script, wait until ``after`` conditions are checkpointed, send ``sig``, wait for the exit."""
    process = subprocess.Popen([str(SCRIPT), *args, "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 600
    while finished(out) < after and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the check finished before it could be interrupted"
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *(str(a) for a in args)], capture_output=True, text=True, env=ENV,
                          timeout=600)


def tables(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((folder / "tables").glob("*.csv"))}


def test_interrupted_check_resumes_to_the_uninterrupted_numbers(setup):
    root, args = setup["root"], setup["args"]
    reference = root / "reference"
    ablate(str(setup["folder"]), setup["selection"], setup["data"],
           CausalSettings(seeds=SEEDS, batch_size=1, replicates=50), out=reference, dtype="float32", plots=False,
           progress=False)
    out = root / "out"
    stopped = interrupt(args, out, 3, signal.SIGTERM)
    assert stopped.returncode == 130, stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted") and "--resume" in lines[0], stopped.stderr
    assert not out.exists() and finished(out) >= 3
    assert not list(checkpoint_dir(out).glob(".*.tmp*"))  # no half-written condition

    refused = script(*args, "--out", out)  # neither --resume nor --overwrite: refused before any work
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--resume" in refused.stderr
    other = script(*[a if a != str(SEEDS) else "5" for a in args], "--out", out, "--resume")
    assert other.returncode == 2 and "other settings" in other.stderr and other.stderr.count("\n") == 1

    first = finished(out)
    again = interrupt([*args, "--resume"], out, first + 3, signal.SIGINT)  # Ctrl-C, on a resumed check
    assert again.returncode == 130 and again.stderr.count("\n") == 1, again.stderr
    resumed = script(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed:" in resumed.stdout
    assert tables(out) == tables(reference)
    assert not checkpoint_dir(out).exists()
    assert len(tables(out)) >= 10
