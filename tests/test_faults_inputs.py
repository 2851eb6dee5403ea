"""The fault catalogue (docs/errors.md), bad and damaged input: datasets, limits, runs, selections, mismatches.

Every test runs the command line in this process (``sparcom.cli.main``, what the installed script runs; the ``cli``
fixture) and checks one ``error:`` line (what, where, what to do) — the line the catalogue quotes —, exit code 2, no
traceback, and that nothing was written; a case sparcom accepts checks that the result is the same as for the plain
input. Test names start with the case's id in the catalogue.
"""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from faults import (
    LONG_ROW,
    assert_catalogue_line,
    assert_error,
    assert_no_litter,
    assert_ok,
    counts_of,
    rows_of,
    snapshot,
    write_rows,
)


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def copy_run(study, name: str, to: Path) -> Path:
    shutil.copytree(study[name], to)
    return to


@pytest.fixture
def weight_loads(monkeypatch) -> list[str]:
    """Every model whose weights a command loads: a loader that records the call and fails, for the cases whose
    arguments must be refused before any weights load (the model's files, config and tokenizer are enough)."""
    from transformers import AutoModelForCausalLM

    loads: list[str] = []

    def refuse(source, *args, **kwargs):
        loads.append(str(source))
        raise AssertionError(f"the weights of {source} were loaded before the arguments were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    return loads


# --------------------------------------------------------------------------------------------- datasets


def test_D1_latin1_bytes_in_a_dataset(fault_study, tmp_path, cli):
    rows = rows_of(fault_study["data"])
    rows[1]["instruction"] = "Is this café message spam?"
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(lines(rows).encode("latin-1"))
    assert_error(cli("data", "validate", path), f"{path}:2: not UTF-8", "byte 0xe9", "save the file as UTF-8")


def test_D2_utf16_dataset(fault_study, tmp_path, cli):
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(fault_study["data"].read_text(encoding="utf-8").encode("utf-16"))
    assert_error(cli("data", "validate", path), f"{path}: the file is UTF-16", "save it as UTF-8")


def test_D3_byte_order_mark_is_read_like_the_plain_file(fault_study, tmp_path, cli):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + fault_study["data"].read_bytes())
    done = cli("data", "validate", path)
    assert_ok(done)
    assert done.stdout.startswith(f"OK: {path}: 12 rows")
    assert_catalogue_line(done.stdout.splitlines()[0])


def test_D4_crlf_line_ends_profile_to_the_same_counts(fault_study, tmp_path, cli):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + fault_study["data"].read_bytes().replace(b"\n", b"\r\n"))
    done = cli("profile", fault_study["llama"], "--data", path, "--out", tmp_path / "run", "--quiet")
    assert_ok(done)
    assert (tmp_path / "run" / "counts.safetensors").read_bytes() == \
        (fault_study["run"] / "counts.safetensors").read_bytes()


def test_D5_duplicate_ids(fault_study, tmp_path, cli):
    rows = rows_of(fault_study["data"])
    rows[2]["id"] = rows[1]["id"]
    path = write_rows(tmp_path / "dup.jsonl", rows)
    assert_error(cli("data", "validate", path), f"{path}:3: duplicate id 't-001' (first on line 2)",
                 "ids must be unique")


def test_D6_profile_refuses_a_latin1_dataset_before_loading_the_model(fault_study, tmp_path, cli):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(fault_study["data"].read_text().replace("sea", "s\u00e9a").encode("latin-1"))
    done = cli("profile", tmp_path / "no-such-model", "--data", path, "--out", tmp_path / "run")
    assert_error(done, f"{path}:1: not UTF-8")  # the missing model is never reached
    assert not (tmp_path / "run").exists()
    assert_no_litter(tmp_path)


def test_D7_empty_instruction(fault_study, tmp_path, cli):
    rows = rows_of(fault_study["data"])
    rows[4]["instruction"] = "   "
    path = write_rows(tmp_path / "empty.jsonl", rows)
    assert_error(cli("data", "stats", path), f"{path}:5: empty instruction", "fill it in or remove the row")


def test_D8_tune_rows_without_a_reference_output(fault_study, tmp_path, cli):
    rows = rows_of(fault_study["data"])
    rows[3]["output"] = ""
    path = write_rows(tmp_path / "train.jsonl", rows)
    done = cli("tune", fault_study["llama"], "--data", path, "--out", tmp_path / "tuned", "--allow-hexainst")
    assert_error(done, f"{path}:4: empty output", "fill it in or remove the row")
    assert not (tmp_path / "tuned").exists()


def test_D9_data_build_into_a_path_below_a_file(tmp_path, cli):
    (tmp_path / "file").write_text("not a folder")
    done = cli("data", "build", "--out", tmp_path / "file" / "hexainst.jsonl")
    assert_error(done, f"{tmp_path / 'file'} is not a folder", "choose another --out")
    assert (tmp_path / "file").read_text() == "not a folder"


# --------------------------------------------------------------------------------------------- limits


def test_L1_row_longer_than_the_model_positions_is_refused_with_its_id(fault_study, tmp_path, cli, weight_loads):
    path = write_rows(tmp_path / "long.jsonl", [*rows_of(fault_study["data"]), LONG_ROW])
    done = cli("profile", fault_study["llama"], "--data", path, "--out", tmp_path / "run", "--quiet")
    assert_error(done, "row 'long-1'", "exceed the model's limit of 512 positions", "shorten the row or remove it")
    assert not (tmp_path / "run").exists()
    assert weight_loads == []


def test_L2_empty_response_under_scope_response(fault_study, tmp_path, cli):
    rows = rows_of(fault_study["data"])
    rows[6]["output"] = " \n"
    path = write_rows(tmp_path / "rows.jsonl", rows)
    done = cli("profile", fault_study["llama"], "--data", path, "--out", tmp_path / "run", "--scope", "response")
    assert_error(done, f"{path}:7: empty output", "fill it in or remove the row")
    assert not (tmp_path / "run").exists()


def test_L3_non_finite_activations_are_refused_with_the_layer(fault_study, tmp_path, cli):
    done = cli("profile", fault_study["llama-nan"], "--data", fault_study["data"], "--out", tmp_path / "run",
                   "--quiet")
    assert_error(done, "layer 1: non-finite values (NaN) in the MLP activations of row 't-000'",
                 "check the model's weights", "nothing was kept")
    assert not (tmp_path / "run").exists()
    assert_no_litter(tmp_path)


def test_L4_non_finite_expert_activations_are_refused_with_the_layer(fault_study, tmp_path, cli):
    done = cli("profile", fault_study["moe-nan"], "--data", fault_study["data"], "--out", tmp_path / "run",
                   "--quiet")
    assert_error(done, "layer 1: non-finite values", "routed experts'", "nothing was kept")
    assert not (tmp_path / "run").exists()


def test_L5_no_rows_left_after_excluding_the_profiled_ones(fault_study, tmp_path, cli):
    done = cli("ablate", fault_study["llama"], "--selection", fault_study["selection"], "--data",
                   fault_study["data"], "--out", tmp_path / "check", "--exclude-profiled", "--per-category", "1",
                   "--seeds", "0", "--quiet")
    assert_error(done, "no rows left to evaluate")
    assert not (tmp_path / "check").exists()


# --------------------------------------------------------------------------------------------- damaged runs


def test_R1_truncated_counts_file(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run", tmp_path / "run")
    counts = run / "counts.safetensors"
    counts.write_bytes(counts.read_bytes()[: counts.stat().st_size // 2])
    assert_error(cli("show", run), f"{counts}: unreadable counts file", "re-run 'sparcom profile'")


def test_R2_edited_counts_are_refused(fault_study, tmp_path, cli):
    from safetensors.numpy import save_file

    run = copy_run(fault_study, "run", tmp_path / "run")
    counts = counts_of(run)
    counts["neuron/code/0"] = counts["neuron/code/0"].copy()
    counts["neuron/code/0"][0] += 1  # still a valid, plausible counts file
    save_file(counts, str(run / "counts.safetensors"), metadata={"format": "sparcom-counts/1"})
    done = cli("identify", run, "--out", tmp_path / "selection", "--no-plots")
    assert_error(done, "counts.safetensors: the file differs from the one manifest.json records", "edited or damaged")
    assert not (tmp_path / "selection").exists()


def test_R3_manifest_contradicting_the_counts(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run", tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["counted_tokens"]["code"] += 5
    (run / "manifest.json").write_text(json.dumps(manifest))
    done = cli("identify", run, "--out", tmp_path / "selection", "--no-plots")
    assert_error(done, f"{run}: manifest.json says counted_tokens code =", "but the counts say",
                 "restore the run or re-run 'sparcom profile'")
    assert not (tmp_path / "selection").exists()


def test_R4_manifest_listing_other_categories(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run-a", tmp_path / "a")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["categories"] = manifest["categories"][:-1]
    (run / "manifest.json").write_text(json.dumps(manifest))
    done = cli("merge", run, fault_study["run-b"], "--out", tmp_path / "merged")
    assert_error(done, f"{run}: manifest.json lists categories", "but the counts hold")
    assert not (tmp_path / "merged").exists()


def test_R5_malformed_manifest(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run", tmp_path / "run")
    (run / "manifest.json").write_text((run / "manifest.json").read_text()[:-40])
    done = cli("compare", fault_study["run"], run, "--out", tmp_path / "cmp", "--no-plots")
    assert_error(done, f"{run / 'manifest.json'}: malformed JSON")
    assert not (tmp_path / "cmp").exists()


def test_R6_incomplete_run(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run", tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    done = cli("identify", run, "--out", tmp_path / "selection")
    assert_error(done, f"{run}: the run is not complete", "--resume")


def test_R7_resume_from_a_damaged_checkpoint(fault_study, tmp_path, cli):
    from sparcom import ProfileSettings, profile

    class Stop(Exception):
        pass

    def stop_after_three(done: int) -> None:
        if done == 3:
            raise Stop

    run = tmp_path / "run"
    with pytest.raises(Stop):
        profile(str(fault_study["llama"]), fault_study["data"], run, ProfileSettings(batch_size=1, checkpoint_every=2),
                progress=False, on_batch_end=stop_after_three)
    checkpoint = run / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    before = snapshot(run)
    done = cli("profile", fault_study["llama"], "--data", fault_study["data"], "--out", run, "--batch-size", 1,
                   "--checkpoint-every", 2, "--resume", "--quiet")
    assert_error(done, f"{checkpoint}: unreadable checkpoint", "start again with --overwrite")
    assert snapshot(run) == before


def test_R8_counts_file_of_another_tool(fault_study, tmp_path, cli):
    from safetensors.numpy import save_file

    run = copy_run(fault_study, "run", tmp_path / "run")
    save_file({key: value.astype(np.float32) for key, value in counts_of(run).items()}, str(run / "counts.safetensors"))
    done = cli("identify", run, "--out", tmp_path / "selection")
    assert_error(done, "counts.safetensors: counter", "is float32, not int64", "not a sparcom counts file")


# --------------------------------------------------------------------------------------------- selections


def test_S1_ablate_with_a_selection_made_on_other_weights(fault_study, tmp_path, cli, weight_loads):
    done = cli("ablate", fault_study["llama-other-weights"], "--selection", fault_study["selection"], "--data",
                   fault_study["data"], "--out", tmp_path / "check", "--seeds", 0, "--quiet")
    assert_error(done, f"{fault_study['selection']}: selection made on another model", "model.fingerprint differs",
                 "pass --force")
    assert not (tmp_path / "check").exists()
    assert weight_loads == []


def test_S2_ablate_with_a_selection_made_with_another_tokenizer(fault_study, tmp_path, cli, weight_loads):
    done = cli("ablate", fault_study["llama-other-tokenizer"], "--selection", fault_study["selection"], "--data",
                   fault_study["data"], "--out", tmp_path / "check", "--seeds", 0, "--quiet")
    assert_error(done, "selection made on another model", "tokenizer_hash differs")
    assert not (tmp_path / "check").exists()
    assert weight_loads == []


def test_S3_selection_whose_layer_widths_do_not_match_even_with_force(fault_study, tmp_path, cli, weight_loads):
    done = cli("ablate", fault_study["llama"], "--selection", fault_study["selection-wide"], "--data",
                   fault_study["data"], "--out", tmp_path / "check", "--seeds", 0, "--force", "--quiet")
    assert_error(done, "mask of layer 0 has shape (64,), but this model's layer 0 has (48,)",
                 "the selection belongs to another model")
    assert not (tmp_path / "check").exists()
    assert weight_loads == []


def test_S4_examples_with_a_run_lacking_a_category_of_the_selection(fault_study, tmp_path, cli):
    done = cli("examples", fault_study["llama"], "--selection", fault_study["selection"], "--data",
                   fault_study["data"], "--run", fault_study["run-two-categories"], "--out", tmp_path / "examples",
                   "--quiet")
    assert_error(done, f"{fault_study['run-two-categories']}: the run has no", "rows but the selection",
                 "pass the selection's own profile run (--run)")
    assert not (tmp_path / "examples").exists()


def test_S5_truncated_selection_masks(fault_study, tmp_path, cli):
    selection = shutil.copytree(fault_study["selection"], tmp_path / "selection")
    masks = selection / "selection.safetensors"
    masks.write_bytes(masks.read_bytes()[:64])
    done = cli("ablate", fault_study["llama"], "--selection", selection, "--data", fault_study["data"],
                   "--out", tmp_path / "check", "--seeds", 0, "--quiet")
    assert_error(done, f"{masks}: unreadable", "re-run 'sparcom identify'")
    assert not (tmp_path / "check").exists()


def test_S7_mean_ablation_with_a_run_without_activation_sums(fault_study, tmp_path, cli):
    run = copy_run(fault_study, "run", tmp_path / "old-run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["sums_sha256"]  # what a run of an older sparcom looks like: no sums file, no record of one
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "sums.safetensors").unlink()
    assert_ok(cli("identify", run, "--out", tmp_path / "selection", "--rule", "percentile", "--no-plots"))
    done = cli("ablate", fault_study["llama"], "--selection", tmp_path / "selection", "--data", fault_study["data"],
               "--out", tmp_path / "check", "--seeds", 0, "--intervention", "mean", "--quiet")
    assert_error(done, f"{run}: the run has no activation sums", "re-run 'sparcom profile'")
    assert not (tmp_path / "check").exists()


def _selection_without_its_run(fault_study, tmp_path) -> Path:
    selection = shutil.copytree(fault_study["selection"], tmp_path / "selection")
    meta = json.loads((selection / "selection.json").read_text())
    meta["source_run"] = str(tmp_path / "moved-run")
    (selection / "selection.json").write_text(json.dumps(meta))
    return selection


def test_S8_default_mean_ablation_of_a_selection_whose_run_is_gone(fault_study, tmp_path, cli):
    done = cli("ablate", fault_study["llama"], "--selection", _selection_without_its_run(fault_study, tmp_path),
               "--data", fault_study["data"], "--out", tmp_path / "check", "--seeds", 1, "--quiet")
    assert_error(done, "--intervention mean", f"{tmp_path / 'moved-run'}", "or pass --intervention zero")
    assert not (tmp_path / "check").exists()


def test_S9_default_frequency_bin_control_of_a_selection_whose_run_is_gone(fault_study, tmp_path, cli):
    done = cli("ablate", fault_study["llama"], "--selection", _selection_without_its_run(fault_study, tmp_path),
               "--data", fault_study["data"], "--out", tmp_path / "check", "--seeds", 1, "--intervention", "zero",
               "--quiet")
    assert_error(done, "--control frequency-bin", "or pass --control shape")
    assert not (tmp_path / "check").exists()


def test_S6_examples_with_a_selection_made_on_another_model(fault_study, tmp_path, cli, weight_loads):
    done = cli("examples", fault_study["llama-other-weights"], "--selection", fault_study["selection"],
                   "--data", fault_study["data"], "--out", tmp_path / "examples", "--quiet")
    assert_error(done, "selection made on another model", "model.fingerprint differs",
                 "the model the selection was made on")
    assert not (tmp_path / "examples").exists()
    assert weight_loads == []


# --------------------------------------------------------------------------------------------- mismatches


@pytest.mark.parametrize(("case", "other", "field"), [
    ("C1", "run-prompt", "scope differs"),
    ("C2", "run-raw", "template differs"),
    ("C3", "run-bf16", "dtype differs"),
    ("C4", "run-source", "group_by differs"),
    ("C5", "run-qwen2", "model.architecture differs"),
], ids=["C1-scope", "C2-template", "C3-dtype", "C4-groups", "C5-family"])
def test_C1_to_C5_compare_of_runs_that_are_not_the_same_measurement(fault_study, tmp_path, case, other, field, cli):
    done = cli("compare", fault_study["run"], fault_study[other], "--out", tmp_path / "cmp", "--no-plots")
    assert_error(done, f"cannot compare {fault_study[other]} with {fault_study['run']}", field, "--force")
    assert not (tmp_path / "cmp").exists()


def test_M1_merge_of_overlapping_shards(fault_study, tmp_path, cli):
    done = cli("merge", fault_study["run-a"], fault_study["run-overlap"], "--out", tmp_path / "merged")
    assert_error(done, "both counted instruction 't-004'", "merge only runs over disjoint rows")
    assert not (tmp_path / "merged").exists()


def test_M2_merge_of_runs_reusing_an_id_for_another_row(fault_study, tmp_path, cli):
    done = cli("merge", fault_study["run-a"], fault_study["run-reused"], "--out", tmp_path / "merged")
    assert_error(done, "both counted instruction 't-00", "ids are unique across merged runs")
    assert not (tmp_path / "merged").exists()


def test_M3_merge_of_runs_with_other_settings(fault_study, tmp_path, cli):
    done = cli("merge", fault_study["run-a"], fault_study["run-b-prompt"], "--out", tmp_path / "merged")
    assert_error(done, f"cannot merge {fault_study['run-b-prompt']} with {fault_study['run-a']}", "scope differs")
    assert not (tmp_path / "merged").exists()


def test_the_weight_loader_guard_sees_a_command_that_loads(fault_study, tmp_path, cli, weight_loads):
    """The guard of the cases above is not vacuous: a valid command does reach the weights."""
    with pytest.raises(AssertionError, match="were loaded before the arguments were checked"):
        cli("profile", fault_study["llama"], "--data", fault_study["data"], "--out", tmp_path / "run", "--quiet")
    assert weight_loads == [str(fault_study["llama"])]
