"""'sparcom identify' and 'sparcom compare' end to end on synthetic run directories: files, plots, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_analysis_support import manifest, synthetic_counts, write_run
from typer.testing import CliRunner

from sparcom.analysis.pipeline import identify
from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import load_run
from sparcom.artifacts.selection import load_selection
from sparcom.cli.app import app
from sparcom.errors import SparcomError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300, path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    moe = synthetic_counts(7, moe=True, replicates=25)
    return {
        "moe": write_run(root / "moe", moe),
        "dense": write_run(root / "dense", synthetic_counts(8)),
        "other_tokenizer": write_run(root / "other", synthetic_counts(9), manifest(tokenizer_hash="tok-other")),
        "incomplete": write_run(root / "incomplete", synthetic_counts(8), manifest(complete=False)),
    }


@pytest.fixture(scope="module")
def identified(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "identify_moe"
    result = invoke("identify", runs["moe"], "--out", out, "--rule", "percentile", "--epsilon", "0.05")
    assert result.exit_code == 0, result.output
    return out


def test_identify_writes_selection_tables_summary_and_plots(identified, runs):
    names = {str(p.relative_to(identified)) for p in identified.rglob("*") if p.is_file()}
    for required in ("selection.safetensors", "selection.json", "summary.json", "tables/selected_per_layer.csv",
                     "tables/sets_per_layer.csv", "tables/sets_per_expert.csv", "tables/overlap.csv",
                     "tables/epsilon_sweep.csv", "tables/bootstrap_intervals.csv", "tables/expert_frequency.csv",
                     "tables/selected_components.csv",
                     "plots/neuron_per_layer.png", "plots/neuron_overlap.png", "plots/neuron_sets_per_layer.png",
                     "plots/neuron_epsilon_sweep.png", "plots/expert_frequency.png",
                     "plots/expert_frequency_deviation.png", "plots/expert_neuron_per_expert.png"):
        assert required in names
    summary = json.loads((identified / "summary.json").read_text())
    assert sorted(summary["files"]) == sorted(names)
    for png in identified.glob("plots/*.png"):
        assert_png(png)
    assert not list(identified.parent.glob(".*partial*"))


def test_selection_round_trips_and_is_keyed_like_the_counts(identified, runs):
    selection = load_selection(identified)
    run = load_run(runs["moe"])
    count_keys = {k for k in run.counts if k.split("/")[0] in ("neuron", "expert", "expert_neuron")}
    assert set(selection.masks) == count_keys
    for key, mask in selection.masks.items():
        assert mask.dtype == bool and mask.shape == tuple(run.counts[key].shape)
    expected_masks = identify(run, SelectionRule("percentile", 0.05), sweep=False, bootstrap=False).masks()
    for key, mask in expected_masks.items():
        assert np.array_equal(selection.masks[key], mask), key
    meta = selection.meta
    assert meta["rule"] == "percentile" and meta["epsilon"] == 0.05
    assert meta["parameters"] == {"rule": "percentile", "epsilon": 0.05}
    assert meta["source_run"] == str(runs["moe"].resolve())
    for field in ("model.fingerprint", "tokenizer_hash", "scope", "template", "system_prompt"):
        assert field in meta["manifest"]
    assert meta["manifest"]["model.fingerprint"] == "abc123"
    assert selection.kinds == ["neuron", "expert", "expert_neuron"]
    assert selection.size("neuron", "cls") == meta["selected"]["neuron"]["cls"]
    assert selection.indices("expert_neuron", "cls")[0].shape[1] == 2


def test_tables_agree_with_summary(identified):
    summary = json.loads((identified / "summary.json").read_text())
    rows = read_csv(identified / "tables" / "selected_per_layer.csv")
    for kind, data in summary["kinds"].items():
        for category, size in data["selected"].items():
            assert sum(int(r["selected"]) for r in rows if r["kind"] == kind and r["category"] == category) == size
        assert data["bootstrap"]["available"] is True
    sweep = read_csv(identified / "tables" / "epsilon_sweep.csv")
    assert {r["epsilon"] for r in sweep if r["is_default"] == "true"} == {"0.05"}
    intervals = read_csv(identified / "tables" / "bootstrap_intervals.csv")
    assert {r["kind"] for r in intervals} == {"neuron", "expert", "expert_neuron"}


def test_identify_without_intervals_says_how_to_get_them(runs, tmp_path):
    result = invoke("identify", runs["dense"], "--out", tmp_path / "o", "--no-plots", "--rule", "lape")
    assert result.exit_code == 0, result.output
    assert "no intervals (profile with --group-by instruction" in result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["kinds"]["neuron"]["bootstrap"]["available"] is False
    assert "--group-by instruction" in summary["kinds"]["neuron"]["bootstrap"]["note"]
    assert summary["rule"]["filter_rate"] == 0.95
    assert not (tmp_path / "o" / "plots").exists()


def test_compare_with_itself_and_plots(runs, tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", runs["moe"], runs["moe"], "--out", out)
    assert result.exit_code == 0, result.output
    for row in read_csv(out / "tables" / "compare_sets.csv"):
        assert row["gained"] == "0" and row["lost"] == "0" and row["jaccard"] == "1.0"
    for name in ("neuron_change_per_layer", "neuron_set_changes", "neuron_class_transitions", "routing_shift",
                 "expert_set_changes", "expert_neuron_change_per_layer"):
        assert_png(out / "plots" / f"{name}.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kinds"]["expert"]["routing_shift"]["max_js_divergence_bits"] == 0.0


def test_compare_refuses_mismatch_with_one_line_then_forced(runs, tmp_path):
    result = invoke("compare", runs["dense"], runs["other_tokenizer"], "--out", tmp_path / "c", "--no-plots")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "tokenizer_hash differs" in result.stderr and "--force" in result.stderr
    assert not (tmp_path / "c").exists()
    forced = invoke("compare", runs["dense"], runs["other_tokenizer"], "--out", tmp_path / "c", "--no-plots", "--force")
    assert forced.exit_code == 0, forced.output
    assert "forced despite" in forced.output


@pytest.mark.parametrize(("args", "message"), [
    (("identify", "{missing}", "--out", "{out}"), "profile run directory not found"),
    (("identify", "{incomplete}", "--out", "{out}"), "not complete"),
    (("identify", "{dense}", "--out", "{out}", "--rule", "threshold"), "needs --epsilon"),
    (("identify", "{dense}", "--out", "{out}", "--rule", "best"), "unknown selection rule"),
    (("identify", "{dense}", "--out", "{out}", "--kinds", "expert"), "no expert counts"),
    (("identify", "{dense}", "--out", "{out}", "--epsilon", "2"), "epsilon must be in (0, 1]"),
    (("identify", "{dense}", "--out", "{out}", "--sweep", "a,b"), "--sweep must be"),
    (("compare", "{dense}", "{missing}", "--out", "{out}"), "profile run directory not found"),
])
def test_cli_errors_are_one_line_and_leave_nothing(runs, tmp_path, args, message):
    values = {**{k: str(v) for k, v in runs.items()}, "missing": str(tmp_path / "nope"), "out": str(tmp_path / "o")}
    result = invoke(*(a.format(**values) for a in args))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_existing_out_is_refused_unless_overwrite(runs, tmp_path):
    out = tmp_path / "o"
    assert invoke("identify", runs["dense"], "--out", out, "--no-plots").exit_code == 0
    again = invoke("identify", runs["dense"], "--out", out, "--no-plots")
    assert again.exit_code == 2 and "exists" in again.stderr and "--overwrite" in again.stderr
    replaced = invoke("identify", runs["dense"], "--out", out, "--no-plots", "--overwrite", "--epsilon", "0.1")
    assert replaced.exit_code == 0
    assert json.loads((out / "selection.json").read_text())["epsilon"] == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = invoke("identify", runs["dense"], "--out", foreign, "--no-plots", "--overwrite")
    assert refused.exit_code == 2 and "not a sparcom analysis output" in refused.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_load_selection_errors(tmp_path):
    with pytest.raises(SparcomError, match="selection directory not found"):
        load_selection(tmp_path / "none")
    (tmp_path / "selection.json").write_text("{}")
    with pytest.raises(SparcomError, match=r"no selection\.safetensors"):
        load_selection(tmp_path)


def test_mounted_in_the_main_cli(runs, tmp_path, capsys):
    from sparcom.cli import main

    assert main(["identify", str(runs["dense"]), "--out", str(tmp_path / "m"), "--no-plots", "--sweep", "off"]) == 0
    assert (tmp_path / "m" / "selection.safetensors").is_file()
    assert not (tmp_path / "m" / "tables" / "epsilon_sweep.csv").exists()
