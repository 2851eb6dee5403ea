"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_model, tiny_tokenizer, write_dataset

from sparcom.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()  # drop what the test's own set-up printed
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good_row(**changes) -> dict:
    row = {"id": "r1", "category": "qa", "source": "ai", "origin": "t", "instruction": "Why is the sky blue?",
           "input": "", "output": "Rayleigh scattering.", "license": "CC0-1.0"}
    row.update(changes)
    return row


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        ([json.dumps(good_row()), '{"id": "r2", "category": '], ["rows.jsonl:2", "malformed JSON"]),
        ([json.dumps({k: v for k, v in good_row().items() if k != "output"})], ["rows.jsonl:1", "missing", "output"]),
        ([json.dumps(good_row(category=""))], ["rows.jsonl:1", "empty category"]),
        ([json.dumps(good_row(category="Code Tasks"))], ["rows.jsonl:1", "Code Tasks"]),
        ([], ["dataset is empty"]),
    ],
    ids=["malformed-json", "missing-field", "empty-category", "bad-category-name", "empty-dataset"],
)
def test_bad_dataset(capsys, tmp_path, model_dir, lines, fragments):
    data = write_lines(tmp_path / "rows.jsonl", lines)
    code, err = run_cli(capsys, "profile", model_dir, "--data", data, "--out", tmp_path / "out")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_unknown_category(capsys, tmp_path, model_dir):
    data = write_lines(tmp_path / "rows.jsonl", [json.dumps(good_row()), json.dumps(good_row(id="r2", category="poem"))])
    code, err = run_cli(capsys, "profile", model_dir, "--data", data, "--out", tmp_path / "out", "--categories",
                        "cls,qa")
    assert_one_line_error(code, err, "rows.jsonl:2", "unknown category 'poem'")
    assert not (tmp_path / "out").exists()


def test_response_scope_needs_outputs(capsys, tmp_path, model_dir):
    data = write_lines(tmp_path / "rows.jsonl", [json.dumps(good_row(output=""))])
    code, err = run_cli(capsys, "profile", model_dir, "--data", data, "--out", tmp_path / "out", "--scope", "response")
    assert_one_line_error(code, err, "rows.jsonl:1", "empty output")
    # The same rows are fine for the default scope, which does not read the output.
    code, _ = run_cli(capsys, "profile", model_dir, "--data", data, "--out", tmp_path / "ok", "--quiet")
    assert code == 0


def test_missing_model_path(capsys, tmp_path, dataset):
    code, err = run_cli(capsys, "profile", tmp_path / "no-such-model", "--data", dataset, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "does not exist")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(capsys, tmp_path, dataset):
    from transformers import BloomConfig, BloomForCausalLM

    folder = tmp_path / "bloom"
    BloomForCausalLM(BloomConfig(vocab_size=400, hidden_size=32, n_layer=1, n_head=4)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    code, err = run_cli(capsys, "profile", folder, "--data", dataset, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "unsupported architecture 'bloom'", "llama", "Family entry")
    assert not (tmp_path / "out").exists()


def test_tokenizer_without_offsets(capsys, tmp_path, dataset):
    from transformers import ByT5Tokenizer

    folder = tmp_path / "slow"
    tiny_model("llama", vocab=384).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    code, err = run_cli(capsys, "profile", folder, "--data", dataset, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "offset mapping")
    assert not (tmp_path / "out").exists()


def test_output_dir_exists(capsys, tmp_path, model_dir, dataset):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "profile", model_dir, "--data", dataset, "--out", out)
    assert_one_line_error(code, err, "exists", "--resume", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dtype", "float16"], ["float16", "not supported on device cpu"]),
        (["--dtype", "int3"], ["unknown dtype"]),
        (["--device", "cuda:7"], ["cuda:7"]),
        (["--per-category", "0"], ["--per-category must be at least 1"]),
        (["--scope", "everything"], ["--scope must be one of"]),
        (["--template", "fancy"], ["--template must be one of"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--resume", "--overwrite"], ["exclude each other"]),
    ],
    ids=["fp16-cpu", "unknown-dtype", "missing-device", "per-category-0", "scope", "template", "batch", "resume"],
)
def test_bad_options(capsys, tmp_path, model_dir, dataset, args, fragments):
    code, err = run_cli(capsys, "profile", model_dir, "--data", dataset, "--out", tmp_path / "out", *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_merge_and_show_errors(capsys, tmp_path):
    code, err = run_cli(capsys, "merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m")
    assert_one_line_error(code, err, "not found")
    code, err = run_cli(capsys, "show", tmp_path / "nothing")
    assert_one_line_error(code, err, "not found")


def test_console_script_exit_code_and_no_traceback(tmp_path):
    data = write_dataset(tmp_path / "rows.jsonl")
    result = subprocess.run(
        [sys.executable, "-m", "sparcom.cli", "profile", str(tmp_path / "missing"), "--data", str(data), "--out",
         str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


def test_profile_cli_end_to_end(capsys, tmp_path, model_dir, dataset):
    code = main(["profile", str(model_dir), "--data", str(dataset), "--out", str(tmp_path / "run"), "--quiet",
                 "--per-category", "1", "--scope", "prompt"])
    out = capsys.readouterr().out
    assert code == 0
    assert "CODE" in out and "counted tokens" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["instructions"] == {c: 1 for c in ("cls", "code", "qa", "gen", "math", "sum")}
    assert manifest["model"]["source"] == "folder" and len(manifest["model"]["fingerprint"]) == 64
    assert main(["show", str(tmp_path / "run")]) == 0
