"""The CLI's options: each declared once, every step's options generated from its settings (same flags, same
defaults), parsed into the settings object the API takes, and the old spellings of renamed flags refused with the
new one. In-process through ``sparcom.cli.main`` (what the console script runs)."""

from __future__ import annotations

import pytest
import typer

from sparcom.analysis.settings import CompareSettings, EvaluateSettings, IdentifySettings, SweepSettings
from sparcom.causal.settings import CausalSettings
from sparcom.cli import app, main
from sparcom.cli.options import with_settings
from sparcom.examples.settings import ExamplesSettings
from sparcom.profile.settings import ProfileSettings
from sparcom.report.settings import ReportSettings
from sparcom.settings import options
from sparcom.tune.settings import TuneSettings

STEP_SETTINGS = {"profile": ProfileSettings, "identify": IdentifySettings, "compare": CompareSettings,
                 "evaluate": EvaluateSettings, "sweep": SweepSettings, "ablate": CausalSettings,
                 "examples": ExamplesSettings, "report": ReportSettings, "tune": TuneSettings}


def commands() -> dict[str, object]:
    found = {}

    def walk(group, prefix):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])
            else:
                found[" ".join([*prefix, name])] = command

    walk(typer.main.get_command(app), [])
    return found


def spellings(command) -> list[str]:
    return [flag for param in command.params for flag in [*param.opts, *getattr(param, "secondary_opts", [])]
            if flag.startswith("-")]


@pytest.mark.parametrize("path", sorted(commands()))
def test_every_option_appears_once_and_in_the_help(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich cuts long flags at 80 columns
    flags = spellings(commands()[path])
    assert len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    assert main([*path.split(), "--help"]) == 0
    shown = capsys.readouterr().out
    for flag in flags:
        assert flag in shown, (path, flag)


@pytest.mark.parametrize("step", sorted(STEP_SETTINGS))
def test_step_options_come_from_the_settings(step):
    command = commands()[step]
    by_flag = {param.opts[0]: param for param in command.params if param.opts and param.opts[0].startswith("--")}
    for flat in options(STEP_SETTINGS[step]):
        if not flat.option.cli:
            assert f"--{flat.name.replace('_', '-')}" not in by_flag
            continue
        param = by_flag[flat.option.flag.split("/")[0]]
        assert param.default == flat.cli_default, (step, flat.name)
        assert param.help == flat.option.help


def test_ablate_takes_the_whole_rule_block_for_cross_fitting():
    flags = set(spellings(commands()["ablate"]))
    assert {"--rule", "--epsilon", "--against", "--fdr", "--lape-filter-rate", "--lape-activation-bar",
            "--crossfit-folds", "--random-set-seed"} <= flags
    assert {"--folds", "--seed"}.isdisjoint(flags)


def parsed(cls, args: list[str]):
    """The settings a command decorated with ``with_settings(cls)`` receives for ``args``."""
    seen = []
    probe = typer.Typer()

    @probe.command()
    @with_settings(cls)
    def command(settings: object) -> None:  # replaced by the options of cls
        seen.append(settings)

    @probe.command()
    def other() -> None:  # two commands: typer keeps the command name
        pass

    typer.main.get_command(probe).main(args=["command", *args], standalone_mode=False)
    return seen[0]


def test_parsing_builds_the_settings_the_api_takes():
    settings = parsed(IdentifySettings, ["--rule", "test", "--kinds", "neuron,expert", "--kinds", "shared_neuron",
                                         "--no-validity", "--folds", "3", "--validity-seed", "4", "--sweep", "off"])
    assert settings == IdentifySettings(kinds=("neuron", "expert", "shared_neuron"), sweep=False,
                                        rule=type(settings.rule)("test"),
                                        validity=type(settings.validity)(enabled=False, folds=3, seed=4))
    assert parsed(IdentifySettings, []) == IdentifySettings()
    causal = parsed(CausalSettings, ["--crossfit-folds", "5", "--random-set-seed", "2", "--targets", "experts",
                                     "--against", "mean", "--generate"])
    assert (causal.folds, causal.seed, causal.targets, causal.rule.against, causal.generate) == \
        (5, 2, ("experts",), "mean", True)
    tune = parsed(TuneSettings, ["--target-modules", "q_proj,v_proj", "--no-merge", "--training-seed", "3"])
    assert (tune.target_modules, tune.merge, tune.seed) == (("q_proj", "v_proj"), False, 3)
    assert parsed(ProfileSettings, ["--categories", "cls,qa"]).categories == ("cls", "qa")
    assert parsed(ExamplesSettings, ["--components-per-category", "2"]).components_per_category == 2


def test_a_renamed_flag_of_one_command_stays_valid_elsewhere(capsys):
    """--folds is still the validity folds of identify (refused here for its value, not for its name)."""
    code = main(["identify", "/no/such/run", "--folds", "1", "--out", "/nonexistent/never"])
    assert code == 2 and "is now" not in capsys.readouterr().err


def test_arguments_are_refused_before_torch_is_imported(tmp_path):
    """Bad settings, a bad dataset and a bad --out are refused before any model loads, and (one process) before
    torch is even imported: the refusal costs no model and no torch start-up."""
    import json
    import subprocess
    import sys

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a", "category": "qa", "source": "ai", "origin": "t", "instruction": "Why?",
                                "input": "", "output": "", "license": "CC0-1.0"}) + "\n")
    taken = tmp_path / "taken"
    (taken / "file").mkdir(parents=True)
    cases = [
        ["profile", "m", "--data", str(rows), "--out", str(tmp_path / "a"), "--per-category", "0"],
        ["profile", "m", "--data", str(rows), "--out", str(tmp_path / "a"), "--scope", "response"],
        ["profile", "m", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "a")],
        ["profile", "m", "--data", str(rows), "--out", str(taken)],
        ["tune", "m", "--data", str(rows), "--out", str(tmp_path / "b"), "--allow-hexainst"],
        ["tune", "m", "--data", str(rows), "--out", str(tmp_path / "b"), "--lora-r", "0"],
        ["ablate", "m", "--selection", str(tmp_path), "--data", str(rows), "--out", str(tmp_path / "c"),
         "--seeds", "-1"],
        ["ablate", "m", "--run", str(tmp_path), "--data", str(rows), "--out", str(tmp_path / "c")],
        ["examples", "m", "--selection", str(tmp_path / "nope"), "--data", str(rows), "--out", str(tmp_path / "d")],
        ["examples", "m", "--selection", str(tmp_path), "--data", str(rows), "--out", str(tmp_path / "d"),
         "--top-k", "0"],
        ["ablate", "m", "--selection", str(tmp_path / "nope"), "--data", str(rows), "--out", str(tmp_path / "c")],
        ["models", "list", "--cache-dir", str(rows)],
        ["data", "build", "--out", str(tmp_path / "e" / "h.jsonl"), "--tokenizer", str(tmp_path / "nope")],
    ]
    code = ("import json, sys\nfrom sparcom.cli import main\nfor args in json.loads(sys.argv[1]):\n"
            "    print(main(args), 'torch' in sys.modules, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == ["2 False"] * len(cases), (done.stdout, done.stderr)
    assert len([line for line in done.stderr.splitlines() if line.startswith("error: ")]) == len(cases)
    assert not any((tmp_path / name).exists() for name in "abcde")
