"""The fault catalogue (docs/errors.md), the environment: full disk, read-only folders, two processes on one folder,
output folders that must not be replaced, a damaged model cache, damaged resume state of the demo.

A full disk is a file-size limit on the subprocess (``ulimit -f``): sparcom ignores SIGXFSZ, so the write fails with
EFBIG and is reported like ENOSPC instead of killing the process. Test names start with the case's id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faults import (
    assert_catalogue_line,
    assert_error,
    assert_no_litter,
    assert_ok,
    assert_same_counts,
    finish,
    read_only,
    snapshot,
    sparcom,
    start,
    wait_for,
)

from sparcom.outputs import lock

#: Profile settings whose checkpoints are large (bootstrap counters) next to a small manifest.
BIG_CHECKPOINTS = ("--batch-size", "1", "--checkpoint-every", "4", "--bootstrap", "20", "--quiet")


@pytest.fixture(scope="module")
def partial_run(fault_study, tmp_path_factory):
    """A profile run stopped after batch 5 (checkpoint after 4) and the uninterrupted run, made in-process."""
    from sparcom import ProfileSettings, profile

    root = tmp_path_factory.mktemp("partial")
    settings = ProfileSettings(batch_size=1, checkpoint_every=4, bootstrap=20)
    reference = profile(str(fault_study["llama"]), fault_study["data"], root / "reference", settings,
                        progress=False).path

    class Stop(Exception):
        pass

    def stop(done: int) -> None:
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        profile(str(fault_study["llama"]), fault_study["data"], root / "partial", settings, progress=False,
                on_batch_end=stop)
    manifest = (root / "partial" / "manifest.json").stat().st_size
    checkpoint = (root / "partial" / "checkpoint.safetensors").stat().st_size
    assert checkpoint > 4 * manifest  # room for a limit between them
    return {"reference": reference, "partial": root / "partial", "limit": 2 * manifest}


def identify_args(study, out: Path) -> list:
    return ["identify", study["run"], "--out", out, "--no-plots", "--epsilon", "0.05", "--sweep", "off"]


# --------------------------------------------------------------------------------------------- output folders


def test_E1_out_below_a_file(fault_study, tmp_path, cli):
    (tmp_path / "file").write_text("keep")
    done = cli(*identify_args(fault_study, tmp_path / "file" / "out"))
    assert_error(done, f"cannot create {tmp_path / 'file' / 'out'}", "is not a folder", "choose another --out")
    assert (tmp_path / "file").read_text() == "keep"


def test_E2_overwrite_refuses_a_folder_that_is_not_a_sparcom_output(fault_study, tmp_path, cli):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    done = cli(*identify_args(fault_study, out), "--overwrite")
    assert_error(done, f"{out}: exists and is not a sparcom analysis output (no summary.json)", "choose another --out")
    assert snapshot(out) == {"chapter1.tex": snapshot(out)["chapter1.tex"]}
    assert (out / "chapter1.tex").read_text() == "precious"


# --------------------------------------------------------------------------------------------- full disk


def test_E3_full_disk_while_writing_an_analysis_folder(fault_study, tmp_path):
    out = tmp_path / "selection"
    done = sparcom(*identify_args(fault_study, out), limit=1024)
    assert_error(done, f"cannot write {out}: file too large", "nothing was written")
    assert not out.exists()
    assert_no_litter(tmp_path)


def test_E4_full_disk_while_replacing_an_analysis_folder_keeps_the_previous_one(fault_study, tmp_path):
    out = tmp_path / "selection"
    assert_ok(sparcom(*identify_args(fault_study, out)))
    before = snapshot(out)
    done = sparcom(*identify_args(fault_study, out), "--overwrite", "--epsilon", "0.2", limit=1024)
    assert_error(done, f"cannot write {out}: file too large", "the previous version is unchanged")
    assert snapshot(out) == before
    assert_no_litter(tmp_path)


def test_E5_full_disk_at_a_checkpoint_keeps_the_previous_checkpoint(fault_study, partial_run, tmp_path):
    run = shutil.copytree(partial_run["partial"], tmp_path / "run")
    before = snapshot(run)
    args = ["profile", fault_study["llama"], "--data", fault_study["data"], "--out", run, *BIG_CHECKPOINTS]
    done = sparcom(*args, "--resume", limit=partial_run["limit"])
    assert_error(done, f"cannot write {run / 'checkpoint.safetensors'}: file too large",
                 f"{run} keeps a checkpoint after batch 4 of 12: continue with the same command and --resume")
    assert snapshot(run) == before  # the checkpoint is the previous one, whole; no temporary file
    assert_ok(sparcom(*args, "--resume"))  # with room again, it ends as if never stopped
    assert_same_counts(run, partial_run["reference"])


def test_E6_full_disk_at_the_first_checkpoint_leaves_no_folder(fault_study, partial_run, tmp_path):
    run = tmp_path / "run"
    done = sparcom("profile", fault_study["llama"], "--data", fault_study["data"], "--out", run, *BIG_CHECKPOINTS,
                   limit=partial_run["limit"])
    assert_error(done, "file too large", f"nothing was kept ({run} is removed")
    assert not run.exists()
    assert_no_litter(tmp_path)


def test_E7_full_disk_while_writing_the_html_report(fault_study, tmp_path):
    page = tmp_path / "report.html"
    done = sparcom("report", fault_study["selection"], fault_study["run"], "--out", page, limit=64 * 1024)
    assert_error(done, f"cannot write {page}: file too large", "nothing was written")
    assert not page.exists()
    assert_no_litter(tmp_path)


def test_E8_full_disk_while_merging(fault_study, tmp_path):
    out = tmp_path / "merged"
    done = sparcom("merge", fault_study["run-a"], fault_study["run-b"], "--out", out, limit=2048)
    assert_error(done, f"cannot write {out}", "file too large")
    assert not out.exists()
    assert_no_litter(tmp_path)


# --------------------------------------------------------------------------------------------- read-only folders


@pytest.mark.readonly
def test_E9_read_only_output_folder(fault_study, tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    with read_only(parent):
        done = sparcom(*identify_args(fault_study, parent / "selection"))
    assert_error(done, f"cannot write into {parent}: permission denied", "choose another --out")
    assert list(parent.iterdir()) == []


@pytest.mark.readonly
def test_E10_resume_in_a_read_only_run_folder(fault_study, partial_run, tmp_path):
    run = shutil.copytree(partial_run["partial"], tmp_path / "run")
    before = snapshot(run)
    with read_only(run):
        done = sparcom("profile", fault_study["llama"], "--data", fault_study["data"], "--out", run,
                       *BIG_CHECKPOINTS, "--resume")
    assert_error(done, f"{run}: not writable", "make it writable or copy the run elsewhere")
    assert snapshot(run) == before


# --------------------------------------------------------------------------------------------- two processes


def test_E11_two_profile_runs_on_one_folder(fault_study, tmp_path):
    from sparcom import ProfileSettings, profile

    run = tmp_path / "run"
    args = ["profile", fault_study["llama"], "--data", fault_study["data"], "--out", run, "--batch-size", "1",
            "--quiet"]
    go_on = tmp_path / "go-on"
    first = start(*args, fault=f"hold:{go_on}")
    wait_for(run / "manifest.json", first)  # the first run is counting (held in its first batch)
    second = sparcom(*args, "--resume")
    go_on.touch()
    assert_error(second, f"{run}: another sparcom process is writing it now", "wait for it to finish")
    assert_ok(finish(first))
    reference = profile(str(fault_study["llama"]), fault_study["data"], tmp_path / "reference",
                        ProfileSettings(batch_size=1), progress=False).path
    assert_same_counts(run, reference)
    assert_no_litter(tmp_path)


def test_E12_analysis_into_a_folder_another_process_is_writing(fault_study, tmp_path):
    out = tmp_path / "selection"
    with lock(out):  # this test process plays the other sparcom process
        done = sparcom(*identify_args(fault_study, out))
    assert_error(done, f"{out}: another sparcom process is writing it now")
    assert not out.exists()
    assert_no_litter(tmp_path)


def test_E13_tune_into_a_folder_another_process_is_writing(fault_study, tmp_path):
    out = tmp_path / "tuned"
    with lock(out):
        done = sparcom("tune", fault_study["llama"], "--data", fault_study["data"], "--out", out, "--max-steps", "1",
                       "--allow-hexainst", "--quiet")
    assert_error(done, f"{out}: another sparcom process is writing it now")
    assert not out.exists()


# --------------------------------------------------------------------------------------------- the demo and the models


def test_E14_demo_out_is_a_file(tmp_path, cli):
    (tmp_path / "results").write_text("keep")
    done = cli("demo", "--out", tmp_path / "results", "--data", tmp_path / "h.jsonl")
    assert_error(done, f"{tmp_path / 'results'}: exists and is a file", "--out must be a directory")
    assert (tmp_path / "results").read_text() == "keep"


def test_E15_demo_resumed_with_a_damaged_step_record(tmp_path, cli):
    steps = tmp_path / "demo" / "steps"
    steps.mkdir(parents=True)
    (steps / "01-hexainst.json").write_text('{"seconds": 1.0, "res')
    done = cli("demo", "--out", tmp_path / "demo", "--data", tmp_path / "h.jsonl")
    assert_error(done, f"{steps / '01-hexainst.json'}: damaged step record", "delete it to run step 01-hexainst again")
    assert not (tmp_path / "h.jsonl").exists()


def test_E18_demo_resumed_in_a_folder_made_with_other_settings(tmp_path, cli):
    from sparcom.demo import DemoConfig

    out, data = tmp_path / "demo", tmp_path / "h.jsonl"
    (out / "steps").mkdir(parents=True)
    earlier = {**json.loads(json.dumps(DemoConfig(out=out, data=data).resolved().to_json())), "control": "frequency"}
    (out / "config.json").write_text(json.dumps(earlier), encoding="utf-8")
    (out / "steps" / "26-ablate-smollm2-135m-instruct-paper-neurons.json").write_text("{}", encoding="utf-8")
    before = snapshot(out)
    for done in (cli("demo", "--out", out, "--data", data), sparcom("demo", "--out", out, "--data", data)):
        assert_error(done, "control: 'frequency' → 'frequency-bin'", f"delete {out / 'steps'}/*-ablate-*.json")
        assert snapshot(out) == before and not data.exists()


@pytest.mark.smoke
@pytest.mark.slow
def test_E16_damaged_model_cache_is_rebuilt(smol_cache, tmp_path, cli):
    """The suite's one rebuild of real weights (tests/test_builtin_models.py checks the detection of damaged weights
    without converting again): one warning line, and a rebuilt cache identical to the session's conversion."""
    from sparcom.zoo.builtin import MANIFEST, check_cache

    name = "smollm2-135m-instruct"
    cache = tmp_path / "cache"
    shutil.copytree(smol_cache / name, cache / name)
    tokenizer = cache / name / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:1000])
    done = cli("models", "prepare", name, "--cache-dir", cache)
    assert_ok(done)
    # One warning line; the rest of stderr is the conversion's progress bars.
    warning = [line for line in done.stderr.splitlines() if "warning" in line or "error" in line]
    assert len(warning) == 1 and "is invalid (tokenizer.json has size 1000" in warning[0], done.stderr
    assert "rebuilding" in warning[0]
    assert_catalogue_line(warning[0])
    assert done.stdout.strip() == str(cache / name)
    assert check_cache(name, cache / name, "full") == ""
    rebuilt, session = (json.loads((folder / name / MANIFEST).read_text()) for folder in (cache, smol_cache))
    assert rebuilt["files"] == session["files"]  # the conversion is deterministic: every file's sha256 is the same
    assert_no_litter(cache)


@pytest.mark.readonly
def test_E17_models_prepare_into_a_read_only_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with read_only(cache):
        done = sparcom("models", "prepare", "smollm2-135m-instruct", "--cache-dir", cache)
    assert_error(done, f"cannot write into {cache}: permission denied")
    assert list(cache.iterdir()) == []
