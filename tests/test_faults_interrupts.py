"""The fault catalogue (docs/errors.md), interruption: Ctrl-C and SIGTERM during profile and tune, and ``kill -9`` at
several points of a profile run (dense and MoE), each followed by ``--resume``.

Signals are real: sent from outside, or sent by the process to itself at a chosen batch or step
(tests/fault_injection/sitecustomize.py), which makes the point exact. ``kill -9`` is SIGKILL at chosen points: inside
a batch, after a checkpoint's bytes are written but before the rename, right after a rename, after the finished
manifest. A resumed run must end with counts identical, byte for byte, to an uninterrupted run's. Test names start
with the case's id.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
from faults import (
    assert_interrupted,
    assert_no_litter,
    assert_ok,
    assert_same_counts,
    finish,
    send_when,
    sparcom,
    start,
)

DENSE = ("--batch-size", "1", "--checkpoint-every", "4", "--quiet")
#: MoE runs keep every kind of counter a checkpoint must restore: experts, expert neurons, bootstrap, groups.
MOE = ("--batch-size", "1", "--checkpoint-every", "2", "--bootstrap", "2", "--group-by", "instruction", "--quiet")


@pytest.fixture(scope="module")
def references(fault_study, tmp_path_factory):
    """Uninterrupted runs with the settings the cases use, made in-process."""
    from sparcom import ProfileSettings, profile

    root = tmp_path_factory.mktemp("references")
    dense = ProfileSettings(batch_size=1, checkpoint_every=4)
    moe = ProfileSettings(batch_size=1, checkpoint_every=2, bootstrap=2, group_by="instruction")
    return {"dense": profile(str(fault_study["llama"]), fault_study["data"], root / "dense", dense,
                             progress=False).path,
            "moe": profile(str(fault_study["moe"]), fault_study["data"], root / "moe", moe, progress=False).path}


def profile_args(study, run: Path, model: str = "llama", settings=DENSE) -> list:
    return ["profile", study[model], "--data", study["data"], "--out", run, *settings]


def test_I1_ctrl_c_during_profile_stops_after_the_batch_and_resumes_exactly(fault_study, references, tmp_path):
    run = tmp_path / "run"
    done = sparcom(*profile_args(fault_study, run), fault="sigint@batch:3")
    assert_interrupted(done, "SIGINT", f"{run} keeps a checkpoint after batch 3 of 12",
                       "continue with the same command and --resume")
    assert (run / "checkpoint.safetensors").is_file() and not (run / "counts.safetensors").exists()
    assert_no_litter(tmp_path)
    assert_ok(sparcom(*profile_args(fault_study, run), "--resume"))
    assert_same_counts(run, references["dense"])


def test_I2_sigterm_from_outside_during_profile(fault_study, references, tmp_path):
    run = tmp_path / "run"
    process = start(*profile_args(fault_study, run), fault="slow:0.3")
    send_when(run / "checkpoint.safetensors", process, signal.SIGTERM)  # a scheduler stops the job
    done = finish(process)
    assert_interrupted(done, "SIGTERM", f"{run} keeps a checkpoint after batch", "--resume")
    assert_ok(sparcom(*profile_args(fault_study, run), "--resume"))
    assert_same_counts(run, references["dense"])


def test_I3_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(fault_study, references, tmp_path):
    run = tmp_path / "run"
    done = sparcom(*profile_args(fault_study, run), fault="sigint2@batch:6")
    assert_interrupted(done, "SIGINT", f"{run} keeps a checkpoint after batch 4 of 12", "--resume")
    assert_ok(sparcom(*profile_args(fault_study, run), "--resume"))
    assert_same_counts(run, references["dense"])


def test_I4_ctrl_c_during_the_last_batch_lets_the_run_finish(fault_study, tmp_path):
    """Stopping after the last batch means finishing: the run writes its counts and exits 0. (The fault injection
    refuses to send a signal the process ignores, exit 97, so this cannot pass because nobody listened.)"""
    run = tmp_path / "run"
    done = sparcom("profile", fault_study["llama"], "--data", fault_study["half-a"], "--out", run, "--batch-size", "8",
                   "--quiet", fault="sigint@batch:3")  # half-a: three categories, three batches
    assert_ok(done)
    assert (run / "counts.safetensors").is_file() and not (run / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"], ids=["I5-SIGINT", "I6-SIGTERM"])
def test_I5_I6_interrupted_tune_writes_nothing_and_says_it_restarts(fault_study, tmp_path, name):
    out = tmp_path / "tuned"
    done = sparcom("tune", fault_study["llama"], "--data", fault_study["data"], "--out", out, "--max-steps", "4",
                   "--batch-size", "2", "--allow-hexainst", "--quiet", fault=f"tune-{name.lower()}@step:2")
    assert_interrupted(done, name, f"nothing was written to {out}", "tune keeps no checkpoints",
                       "trains again from step 1")
    assert not out.exists()
    assert_no_litter(tmp_path)


def kill_points(seed: int, checkpoints: int) -> list[str]:
    """Three kill -9 points in the order a run meets them, drawn from every kind of point."""
    rng = random.Random(seed)
    return [f"kill@batch:{rng.randint(2, 3)}",  # inside a batch
            f"kill@write:{rng.randint(1, 2)}",  # a checkpoint's bytes written, not yet renamed
            rng.choice([f"kill@replace:{rng.randint(1, checkpoints)}", "kill@complete"])]


@pytest.mark.parametrize(("case", "model", "settings", "seed"), [
    ("dense", "llama", DENSE, 15),
    ("moe", "moe", MOE, 16),
], ids=["I7-dense", "I8-moe"])
def test_I7_I8_kill_9_at_several_points_then_resume_gives_identical_counts(fault_study, references, tmp_path, case,
                                                                           model, settings, seed):
    run = tmp_path / "run"
    args = profile_args(fault_study, run, model, settings)
    for number, point in enumerate(kill_points(seed, checkpoints=2)):
        done = sparcom(*args, *(["--resume"] if number else []), fault=point)
        assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr[-2000:])
    assert_ok(sparcom(*args, "--resume"))
    assert_same_counts(run, references[case])
    assert not list(run.glob("*.tmp"))
    assert_no_litter(tmp_path)
