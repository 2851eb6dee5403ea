"""The fault catalogue (docs/errors.md), the newer commands: ``evaluate`` and ``sweep`` (validity), ``profile --shard``,
and the causal check's own checkpoint: Ctrl-C and SIGTERM during ``ablate`` stop it with one line (exit 130) and
``--resume`` ends with exactly the tables of an uninterrupted check. Test names start with the case's id.

Refusals run in this process (the ``cli`` fixture); a second process holding the output (V5) and the signals run the
installed script in a subprocess.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from faults import assert_error, assert_interrupted, assert_no_litter, assert_ok, snapshot, sparcom

from sparcom.outputs import lock

# --------------------------------------------------------------------------------------------- evaluate and sweep


def test_V1_evaluate_with_a_run_counted_per_category(fault_study, tmp_path, cli):
    out = tmp_path / "evaluation"
    done = cli("evaluate", fault_study["selection"], fault_study["run"], "--out", out, "--no-plots")
    assert_error(done, f"{fault_study['run']}: evaluate decodes each instruction", "--group-by instruction")
    assert not out.exists()
    assert_no_litter(tmp_path)


def test_V2_evaluate_with_a_run_of_another_model(fault_study, tmp_path, cli):
    out = tmp_path / "evaluation"
    done = cli("evaluate", fault_study["selection"], fault_study["run-qwen2"], "--out", out, "--no-plots")
    assert_error(done, f"{fault_study['run-qwen2']} is not the measurement the selection",
                 "profile the other instructions with the same model and settings")
    assert not out.exists()


def test_V3_sweep_of_a_run_without_groups(fault_study, tmp_path, cli):
    out = tmp_path / "sweep"
    done = cli("sweep", fault_study["run"], "--out", out, "--rules", "percentile", "--no-plots")
    assert_error(done, f"{fault_study['run']}: no validity evidence", "--group-by instruction")
    assert not out.exists()


def test_V4_sweep_with_an_unknown_rule(fault_study, tmp_path, cli):
    out = tmp_path / "sweep"
    done = cli("sweep", fault_study["run-source"], "--out", out, "--rules", "percentile,entropy", "--no-plots")
    assert_error(done, "unknown rule 'entropy' for the study", "choose from", "lape")
    assert not out.exists()


def test_V5_evaluate_into_a_folder_another_process_is_writing(fault_study, tmp_path):
    out = tmp_path / "evaluation"
    with lock(out):  # this test process plays the other sparcom process
        done = sparcom("evaluate", fault_study["selection"], fault_study["run"], "--out", out, "--no-plots")
    assert_error(done, f"{out}: another sparcom process is writing it now", "wait for it to finish")
    assert not out.exists()
    assert_no_litter(tmp_path)


def test_P1_profile_shard_out_of_range(fault_study, tmp_path, cli):
    done = cli("profile", tmp_path / "no-such-model", "--data", fault_study["data"], "--out", tmp_path / "run",
                   "--shard", "4/4")
    assert_error(done, "--shard 4/4: K must be 0", "counted from 0")  # refused before the (missing) model
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------- ablate interrupted

ABLATE = ("--seeds", "6", "--batch-size", "1", "--replicates", "20", "--no-plots", "--dtype", "float32", "--quiet")


@pytest.fixture(scope="module")
def ablate_reference(fault_study, tmp_path_factory):
    """The uninterrupted check, made in-process on one thread (the subprocesses run on one thread too)."""
    from sparcom.api import ablate
    from sparcom.causal.settings import CausalSettings

    out = tmp_path_factory.mktemp("ablate") / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ablate(str(fault_study["llama"]), fault_study["selection"], fault_study["data"],
               CausalSettings(seeds=6, batch_size=1, replicates=20), out=out, dtype="float32", plots=False,
               progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def conditions(out: Path) -> int:
    from sparcom.causal.checkpoint import checkpoint_dir

    folder = checkpoint_dir(out)
    # finished conditions only: a condition being written is a hidden temporary file, which pathlib's glob matches
    return len([p for p in folder.glob("*.npz") if not p.name.startswith(".")]) if folder.is_dir() else 0


def tables(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((folder / "tables").glob("*.csv"))}


def test_A1_A2_I9_I10_interrupted_ablate_resumes_to_the_uninterrupted_tables(fault_study, ablate_reference,
                                                                             tmp_path, cli):
    """Ctrl-C (I9), a refused restart without --resume (A1) or with other settings (A2), SIGTERM on the resumed check
    (I10), then --resume to the end: exactly the tables of an uninterrupted check. The signals come at chosen conditions (the process sends them
    to itself right after checkpointing one), so the test does not race the check."""
    from sparcom.causal.checkpoint import checkpoint_dir

    out = tmp_path / "check"
    args = ["ablate", fault_study["llama"], "--selection", fault_study["selection"], "--data", fault_study["data"],
            "--out", out, *ABLATE]
    stopped = sparcom(*args, fault="sigint@condition:2")
    assert_interrupted(stopped, "SIGINT", f"{out} was not written", "the finished conditions are kept in",
                       "continue with the same command and --resume")
    assert not out.exists() and conditions(out) == 2
    assert not list(checkpoint_dir(out).glob(".*.tmp*"))  # no half-written condition
    kept = snapshot(checkpoint_dir(out))
    # A1: the same command without --resume is refused before any work; A2: so is --resume with other settings.
    assert_error(cli(*args), "2 finished conditions", "pass --resume to continue it")
    other = [a if a != "6" else "5" for a in args]  # --seeds 5
    assert_error(cli(*other, "--resume"), "the checkpoint was made with other settings")
    assert snapshot(checkpoint_dir(out)) == kept
    stopped = sparcom(*args, "--resume", fault="sigterm@condition:2")  # a scheduler stops the resumed check
    assert_interrupted(stopped, "SIGTERM", f"{out} was not written", "continue with the same command and --resume")
    assert not out.exists() and conditions(out) == 4
    resumed = sparcom(*args, "--resume")
    assert_ok(resumed)
    assert "resumed: 4 finished conditions" in resumed.stdout
    assert tables(out) == tables(ablate_reference) and len(tables(out)) >= 10
    assert not checkpoint_dir(out).exists()
    assert_no_litter(tmp_path)
