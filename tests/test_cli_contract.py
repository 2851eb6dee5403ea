"""The exit-code contract, as a user meets it: every error of every command is one ``error:`` line on stderr and exit
code 2 (usage errors: click's code), with no traceback and nothing left in ``--out``; success is exit code 0.

The cases run through ``sparcom.cli.main`` in this process (the ``cli`` fixture): it is exactly what the console
script runs, and its return value is the script's exit code. (typer's ``CliRunner`` once hid commands that printed an
error and exited 0; ``main`` does not go through it.) One case per command, usage errors, ``python -m sparcom`` and a
shell chain also run the installed script in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from faults import BASE_ENV as ENV
from faults import SCRIPT, assert_error, sparcom
from tiny import tiny_model, tiny_tokenizer, write_dataset


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny model folder, a dataset, a finished profile run and a selection, made by the commands in-process."""
    from sparcom.cli import main

    root = tmp_path_factory.mktemp("contract")
    model = root / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    data = write_dataset(root / "rows.jsonl")
    assert main(["profile", str(model), "--data", str(data), "--out", str(root / "run"), "--quiet", "--per-category",
                 "1"]) == 0
    assert main(["identify", str(root / "run"), "--out", str(root / "selection"), "--no-plots", "--epsilon",
                 "0.05"]) == 0
    (root / "broken.jsonl").write_text(json.dumps(GOOD_ROW) + "\n{broken\n")
    return {"root": root, "model": model, "data": data, "run": root / "run", "selection": root / "selection"}


GOOD_ROW = {"id": "a", "category": "qa", "source": "ai", "origin": "t", "instruction": "Why?", "input": "",
            "output": "Because.", "license": "CC0-1.0"}


def test_the_script_is_the_installed_entry_point():
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install sparcom (make setup)"
    done = sparcom("--help")
    assert done.returncode == 0 and "identify" in done.stdout


#: (case, command line, fragments of the one error line); {…} are filled from the study fixture.
ERROR_CASES = [
    ("profile", ["profile", "{model}", "--data", "{root}/missing.jsonl", "--out", "{out}"], ["dataset file not found"]),
    ("merge", ["merge", "{run}", "--out", "{out}"], ["at least two runs"]),
    ("show", ["show", "/no/such/run"], ["profile run directory not found"]),
    ("identify-missing-run", ["identify", "/no/such/run", "--out", "{out}"], ["profile run directory not found"]),
    ("identify-bad-epsilon", ["identify", "{run}", "--epsilon", "2", "--out", "{out}"], ["epsilon must be in (0, 1]"]),
    ("compare", ["compare", "/no/such/run", "{run}", "--out", "{out}"], ["profile run directory not found"]),
    ("ablate", ["ablate", "{model}", "--selection", "{root}/nope", "--data", "{data}", "--out", "{out}"],
     ["selection directory not found"]),
    ("tune", ["tune", "{model}", "--out", "{out}"], ["--data is required"]),
    ("data-build", ["data", "build", "--out", "{out}/h.jsonl", "--tokenizer", "{root}/nope"],
     ["tokenizer directory not found"]),
    ("data-validate", ["data", "validate", "{root}/broken.jsonl"], ["broken.jsonl:2", "malformed JSON"]),
    ("data-stats", ["data", "stats", "{root}/missing.jsonl"], ["dataset file not found"]),
    ("data-reference", ["data", "reference", "--corpus", "nope", "--out", "{out}/r.jsonl"],
     ["unknown reference corpus 'nope'", "xsum"]),
    ("models-list", ["models", "list", "--cache-dir", "{data}"], ["not a folder"]),
    ("models-prepare", ["models", "prepare", "no-such-model", "--cache-dir", "{root}/cache"],
     ["unknown built-in model"]),
    ("models-build-moe-top-k", ["models", "build-moe", "{model}", "--experts", "4", "--top-k", "9", "--out", "{out}"],
     ["--top-k must be between 1 and the number of experts (4)"]),
    ("models-build-moe-experts", ["models", "build-moe", "{model}", "--experts", "7", "--top-k", "2",
                                  "--shared-neurons", "0", "--out", "{out}"],
     ["do not split into 7 equal experts"]),
    ("models-build-moe-calibration", ["models", "build-moe", "{model}", "--calibration", "{root}/nope.jsonl",
                                      "--out", "{out}"], ["nope.jsonl: file not found"]),
    ("models-build-moe-distill-tokens", ["models", "build-moe", "{model}", "--distill-epochs", "1",
                                         "--distill-tokens", "100", "--out", "{out}"],
     ["--distill-tokens 100 is below --calibration-tokens 8192"]),
    ("demo", ["demo", "--out", "{out}", "--adapter", "{root}/nope"], ["not a LoRA adapter folder"]),
    ("report", ["report", "{root}/nope", "--out", "{out}/r.html"], ["nope"]),
    ("examples", ["examples", "{model}", "--selection", "{root}/nope", "--data", "{data}", "--out", "{out}"],
     ["selection directory not found"]),
    ("attribute", ["attribute", "{model}", "--data", "{root}/missing.jsonl", "--out", "{out}"],
     ["dataset file not found"]),
    ("identify-test-without-groups", ["identify", "{run}", "--rule", "test", "--out", "{out}"],
     ["rule 'test' needs per-instruction counts", "--group-by instruction"]),
    ("identify-bad-folds", ["identify", "{run}", "--folds", "1", "--out", "{out}"], ["at least 2 folds"]),
    ("identify-bad-against", ["identify", "{run}", "--rule", "contrast", "--against", "median", "--out", "{out}"],
     ["unknown contrast 'median'"]),
    ("identify-bad-fdr", ["identify", "{run}", "--rule", "test", "--fdr", "0", "--out", "{out}"], ["FDR must be in"]),
    ("identify-reference-without-groups", ["identify", "{run}", "--reference", "{run}", "--out", "{out}"],
     ["--reference compares counts per instruction", "--group-by instruction"]),
    ("identify-resamples-without-groups", ["identify", "{run}", "--resamples", "5", "--out", "{out}"],
     ["--resamples", "--group-by instruction"]),
    ("evaluate-missing-selection", ["evaluate", "{root}/nope", "{run}", "--out", "{out}"],
     ["selection directory not found"]),
    ("evaluate-category-run", ["evaluate", "{selection}", "{run}", "--out", "{out}"],
     ["keeps counts per category", "--group-by instruction"]),
    ("evaluate-bad-random-sets", ["evaluate", "{selection}", "{run}", "--random-sets", "0", "--out", "{out}"],
     ["random sets must be at least 1"]),
    ("sweep-without-groups", ["sweep", "{run}", "--out", "{out}"], ["--group-by instruction"]),
    ("sweep-unknown-rule", ["sweep", "{run}", "--rules", "percentile,nope", "--out", "{out}"],
     ["unknown rule 'nope'"]),
]


@pytest.mark.parametrize(("name", "args", "fragments"), ERROR_CASES)
def test_every_command_fails_with_one_line_and_exit_code_2(study, tmp_path, cli, name, args, fragments):
    out = tmp_path / "out"
    assert_error(cli(*filled(args, study, out)), *fragments)
    assert not out.exists(), f"{name} left {out} behind"


def filled(args: list[str], study, out: Path) -> list[str]:
    values = {"model": study["model"], "root": study["root"], "run": study["run"], "data": study["data"],
              "selection": study["selection"], "out": out}
    return [a.format(**{k: str(v) for k, v in values.items()}) for a in args]


def first_case_per_command() -> list:
    """The first error case of each command in the table above."""
    cases = {}
    for _, args, fragments in ERROR_CASES:
        command = " ".join(args[:2]) if args[0] in ("data", "models") else args[0]
        cases.setdefault(command, pytest.param(args, fragments, id=command.replace(" ", "-")))
    return list(cases.values())


@pytest.mark.parametrize(("args", "fragments"), first_case_per_command())
def test_every_command_fails_the_same_through_the_console_script(study, tmp_path, args, fragments):
    out = tmp_path / "out"
    assert_error(sparcom(*filled(args, study, out)), *fragments)
    assert not out.exists()


def test_evaluate_refuses_a_run_of_another_measurement_with_one_line(study, tmp_path, cli):
    """A selection made on float32 counts cannot decode bfloat16 counts (or another model's): one line, exit 2."""
    doctored = tmp_path / "selection"
    doctored.mkdir()
    for path in study["selection"].iterdir():
        if path.is_file():
            (doctored / path.name).write_bytes(path.read_bytes())
    meta = json.loads((doctored / "selection.json").read_text())
    meta["manifest"]["dtype"] = "bfloat16"
    (doctored / "selection.json").write_text(json.dumps(meta))
    done = cli("evaluate", doctored, study["run"], "--out", tmp_path / "out")
    assert_error(done, "is not the measurement the selection", "dtype differs")
    assert not (tmp_path / "out").exists()


def test_usage_errors_keep_clicks_code_and_message(study):
    done = sparcom("identify")
    assert done.returncode == 2 and "Missing argument" in done.stderr and "Traceback" not in done.stderr
    done = sparcom("no-such-command")
    assert done.returncode == 2 and "No such command" in done.stderr


def test_failures_are_visible_to_a_shell_chain(study, tmp_path):
    """The bug of issue 14: `identify … && echo ok` must not print ok when identify failed."""
    script = f"'{SCRIPT}' identify /no/such/run --out '{tmp_path / 'x'}' && echo chained-ok"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2 and "chained-ok" not in done.stdout


def test_successes_exit_0_and_write_what_they_say(study, tmp_path, cli):
    done = cli("show", study["run"])
    assert done.returncode == 0 and "counted tokens" in done.stdout
    done = cli("data", "validate", study["data"])
    assert done.returncode == 0 and done.stdout.startswith("OK:")
    done = cli("compare", study["run"], study["run"], "--out", tmp_path / "c", "--no-plots")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["format"] == "sparcom-compare"
    done = cli("identify", study["run"], "--out", study["selection"], "--no-plots")
    assert done.returncode == 2 and "--overwrite" in done.stderr  # an existing --out is never replaced silently


def test_python_dash_m_runs_the_same_cli(study):
    done = subprocess.run([sys.executable, "-m", "sparcom", "show", "/no/such/run"], capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert_error(done, "profile run directory not found")


def test_build_moe_writes_a_granitemoe_folder_that_profiles(study, tmp_path, cli):
    """`sparcom models build-moe` on the tiny Llama: exit 0, the folder it prints, and `sparcom profile` counts experts."""
    out = tmp_path / "moe"
    done = cli("models", "build-moe", study["model"], "--experts", "4", "--top-k", "2", "--shared-neurons", "0",
               "--refit", "0", "--calibration", study["data"], "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "granitemoe"
    done = cli("profile", out, "--data", study["data"], "--out", tmp_path / "run", "--quiet", "--per-category", 1)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["sizes"]["moe"]["num_experts"] == 4 and manifest["model"]["sizes"]["moe"]["top_k"] == 2
    done = cli("models", "build-moe", study["model"], "--experts", "4", "--top-k", "2", "--calibration",
                   study["data"], "--out", out, "--quiet")
    assert_error(done, "--overwrite")
