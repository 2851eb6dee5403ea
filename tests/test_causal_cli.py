"""'sparcom ablate' end to end on tiny model folders with hand-made selections: outputs, consistency, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from causal_tiny import ZERO_SHAPE, ZERO_SHAPE_FLAGS, one_thread, random_masks, tiny_moe, write_selection_dir  # noqa: F401
from matplotlib.image import imread
from tiny import tiny_model, tiny_tokenizer, write_dataset
from typer.testing import CliRunner

from sparcom.causal.check import causal_check
from sparcom.causal.inputs import unique_masks
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import category_means, encode_scored
from sparcom.causal.scoring import example_nll
from sparcom.causal.settings import CausalSettings
from sparcom.cli.app import app
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.schema import read_rows
from sparcom.errors import SparcomError
from sparcom.models.loading import load_model
from sparcom.models.sites import model_sites
from sparcom.profile.runner import wrap_model

CATEGORIES = ["cls", "code", "qa", "gen", "math", "sum"]
runner = CliRunner()


def invoke(*args):
    """``sparcom ablate`` on this module's hand-made selections (no profile run): zero against shape-matched sets."""
    return runner.invoke(app, ["ablate", *(str(a) for a in args), *ZERO_SHAPE_FLAGS])


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300, path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    folder = root / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    loaded = load_model(str(folder), dtype="float32")
    sites = model_sites(loaded.model)
    masks = random_masks(sites, CATEGORIES, seed=2)
    selection = write_selection_dir(root / "selection", masks, loaded, CATEGORIES)
    other = tiny_model("llama", seed=5)
    other_folder = root / "other-llama"
    other.save_pretrained(other_folder)
    tiny_tokenizer().save_pretrained(other_folder)
    return {"root": root, "model": folder, "loaded": loaded, "selection": selection, "masks": masks,
            "data": write_dataset(root / "rows.jsonl"), "other": other_folder}


@pytest.fixture(scope="module")
def output(setup):
    out = setup["root"] / "out"
    result = invoke(setup["model"], "--selection", setup["selection"], "--data", setup["data"], "--out", out,
                    "--seeds", 3, "--generate", "--max-new-tokens", 4, "--generate-seeds", 1, "--quiet",
                    "--dtype", "float32")
    assert result.exit_code == 0, result.output + result.stderr
    assert "ΔNLL" in result.output
    return out


def test_output_directory(output):
    summary = json.loads((output / "summary.json").read_text())
    for name in summary["files"]:
        assert (output / name).is_file(), name
    assert {"tables/delta_nll.csv", "tables/random_delta_nll.csv", "tables/nll_baseline.csv",
            "tables/delta_nll_matrix_neurons.csv", "tables/set_sizes.csv",
            "tables/per_example_nll.csv", "tables/accuracy.csv", "generations.jsonl",
            "plots/delta_nll_neurons.png", "plots/accuracy.png"} <= set(summary["files"])
    assert not list(output.parent.glob(".out.*"))  # the staging directory was renamed away
    assert summary["format"] == "sparcom-causal" and summary["overridden"] == []
    assert summary["settings"]["seeds"] == 3 and summary["settings"]["expert_removal"] == "renormalize"
    neurons = summary["targets"]["neurons"]
    assert neurons["kinds"] == ["neuron"] and neurons["ablated"] == CATEGORIES == summary["data"]["categories"]
    assert np.asarray(neurons["delta_nll"]).shape == (6, 6)
    assert summary["measurement"]["template"] == "chat"
    for png in ("plots/delta_nll_neurons.png", "plots/accuracy.png"):
        assert_png(output / png)


def test_tables_are_consistent(output, setup):
    cells = read_csv(output / "tables" / "delta_nll.csv")
    assert len(cells) == 36
    randoms = read_csv(output / "tables" / "random_delta_nll.csv")
    assert len(randoms) == 36 * 3
    for cell in cells:
        values = [float(r["delta_nll"]) for r in randoms
                  if (r["ablated"], r["evaluated"]) == (cell["ablated"], cell["evaluated"])]
        assert float(cell["random_mean"]) == pytest.approx(np.mean(values))
        observed = float(cell["delta_nll"])
        assert float(cell["p_value"]) == pytest.approx((1 + sum(v >= observed for v in values)) / 4)
        assert float(cell["delta_nll"]) == pytest.approx(float(cell["nll_ablated"]) - float(cell["nll_base"]))
    matrix = read_csv(output / "tables" / "delta_nll_matrix_neurons.csv")
    assert [row["ablated"] for row in matrix] == ["CLS", "CODE", "QA", "GEN", "MATH", "SUM"]
    assert list(matrix[0]) == ["ablated", "CLS", "CODE", "QA", "GEN", "MATH", "SUM"]
    sizes = read_csv(output / "tables" / "set_sizes.csv")
    for category in CATEGORIES:
        for layer in (0, 1):
            row = next(r for r in sizes if r["category"] == category and r["layer"] == str(layer))
            assert int(row["selected"]) == int(setup["masks"][f"neuron/{category}/{layer}"].sum())
    accuracy = read_csv(output / "tables" / "accuracy.csv")
    assert {r["evaluated"] for r in accuracy} == {"cls", "qa", "math"}
    assert {r["condition"] for r in accuracy} == {"unablated", "selected", "random"}
    generations = [json.loads(line) for line in (output / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 6 * (1 + 6 * 2)  # 6 checkable rows × (unablated + 6 sets × (selected + 1 random))


def test_observed_cell_matches_a_direct_ablation(output, setup):
    loaded = setup["loaded"]
    rows = read_rows(setup["data"])
    examples = encode_scored(rows, loaded.tokenizer, "chat")
    plan = length_batches([len(e) for e in examples], 8)
    clean, counts = example_nll(loaded.model, examples, plan, 0)
    with ablate(loaded.model, ComponentSet.from_masks(setup["masks"], "math", ["neuron"])):
        ablated, _ = example_nll(loaded.model, examples, plan, 0)
    before = category_means(examples, clean, counts, ["qa"])["qa"]["nll"]
    after = category_means(examples, ablated, counts, ["qa"])["qa"]["nll"]
    cell = next(r for r in read_csv(output / "tables" / "delta_nll.csv") if (r["ablated"], r["evaluated"]) ==
                ("math", "qa"))
    assert float(cell["delta_nll"]) == pytest.approx(after - before, abs=1e-9)


def test_rerun_is_reproducible_and_needs_overwrite(output, setup):
    args = [setup["model"], "--selection", setup["selection"], "--data", setup["data"], "--out", output,
            "--seeds", 3, "--quiet", "--dtype", "float32", "--no-plots"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "--overwrite" in refused.stderr
    first = read_csv(output / "tables" / "delta_nll.csv")
    again = invoke(*args, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert read_csv(output / "tables" / "delta_nll.csv") == first
    assert not (output / "plots").exists()


def test_selection_made_on_another_model_is_refused_unless_forced(setup, tmp_path):
    args = [setup["other"], "--selection", setup["selection"], "--data", setup["data"], "--seeds", 1,
            "--per-category", 1, "--quiet", "--no-plots", "--dtype", "float32"]
    refused = invoke(*args, "--out", tmp_path / "refused")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "another model" in refused.stderr and "--force" in refused.stderr
    assert not (tmp_path / "refused").exists()
    forced = invoke(*args, "--out", tmp_path / "forced", "--force")
    assert forced.exit_code == 0, forced.stderr
    summary = json.loads((tmp_path / "forced" / "summary.json").read_text())
    assert summary["overridden"] and "model.fingerprint differs" in summary["overridden"][0]
    assert summary["data"]["instructions"] == dict.fromkeys(CATEGORIES, 1)


def _bad_selection(setup, tmp_path: Path, kind: str) -> Path:
    masks = dict(setup["masks"])
    if kind == "shape":
        masks["neuron/cls/1"] = np.ones(47, dtype=bool)
        return write_selection_dir(tmp_path / "bad", masks, setup["loaded"], CATEGORIES)
    return write_selection_dir(tmp_path / "bad", masks, setup["loaded"], CATEGORIES, tokenizer_hash="other")


@pytest.mark.parametrize(("change", "message"), [
    ({"--selection": "missing"}, "selection directory not found"),
    ({"--data": "missing.jsonl"}, "dataset file not found"),
    ({"--expert-removal": "drop"}, "--expert-removal must be one of"),
    ({"--targets": "experts"}, "target 'experts'"),
    ({"--targets": "everything"}, "--targets must be one of"),
    ({"--seeds": "-1"}, "--seeds"),
    ({"--per-category": "0"}, "--per-category"),
    ({"--dtype": "float8"}, "unknown dtype"),
    ({"--selection": "shape"}, "has shape (47,)"),
    ({"--selection": "tokenizer"}, "tokenizer_hash differs"),
])
def test_bad_inputs_give_one_line(setup, tmp_path, change, message):
    options = {"--selection": setup["selection"], "--data": setup["data"], "--out": tmp_path / "out", "--seeds": 1}
    for key, value in change.items():
        if key == "--selection" and value in ("shape", "tokenizer"):
            value = _bad_selection(setup, tmp_path, value)
        elif value in ("missing", "missing.jsonl"):
            value = tmp_path / value
        options[key] = value
    result = invoke(setup["model"], *(x for pair in options.items() for x in pair), "--quiet")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_main_cli_mounts_ablate(capsys):
    from sparcom.cli import main

    assert main(["ablate", "--help"]) == 0
    assert "--expert-removal" in capsys.readouterr().out


@pytest.mark.parametrize("removal", ["renormalize", "next-best"])
def test_moe_model_through_the_api(tmp_path, removal):
    model = tiny_moe("qwen2_moe")
    loaded = wrap_model(model, tiny_tokenizer())
    sites = model_sites(model)
    masks = random_masks(sites, CATEGORIES, seed=4)
    selection = write_selection_dir(tmp_path / "selection", masks, loaded, CATEGORIES)
    data = write_dataset(tmp_path / "rows.jsonl")
    result = causal_check(loaded, selection, data, CausalSettings(seeds=2, expert_removal=removal, **ZERO_SHAPE),
                          progress=False)
    assert set(result.targets) == {"neurons", "experts"}
    assert result.targets["neurons"].kinds == ["neuron", "shared_neuron", "expert_neuron"]
    for target in result.targets.values():
        assert target.delta.shape == (6, 6) and target.random_delta.shape == (6, 2, 6)
        assert np.all(np.isfinite(target.delta)) and np.any(target.delta != 0)
    stats = result.targets["experts"].stats
    if removal == "renormalize":
        assert all(s.removed_slots > 0 for s in stats.values())
    else:
        assert all(s.removed_slots == 0 and s.fallback_tokens == 0 for s in stats.values())
    summary = result.summary()
    assert summary["targets"]["experts"]["expert_removal"]["cls"]["routed_slots"] > 0
    expert_rows = [r for r in result.tables()["set_sizes"] if r["kind"] == "expert_neuron"]
    assert all(r["expert"] is not None for r in expert_rows)
    only = causal_check(loaded, selection, data, CausalSettings(seeds=0, targets=("expert",), **ZERO_SHAPE), progress=False)
    assert list(only.targets) == ["expert"]
    assert np.isnan(only.targets["expert"].cells()["p"]).all()


def test_exclude_profiled_rows(setup, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"format_version": 1,
                                                   "instruction_ids": {"cls": ["t-000"], "qa": ["t-005", "t-006"]}}))
    selection = write_selection_dir(tmp_path / "selection", setup["masks"], setup["loaded"], CATEGORIES)
    meta = json.loads((selection / "selection.json").read_text())
    meta["source_run"] = str(run)
    (selection / "selection.json").write_text(json.dumps(meta))
    result = causal_check(setup["loaded"], selection, setup["data"],
                          CausalSettings(seeds=0, exclude_profiled=True, **ZERO_SHAPE), progress=False)
    assert result.data["instructions"]["cls"] == 1 and "qa" not in result.data["instructions"]
    assert result.data["excluded_profiled"] == 3
    meta["source_run"] = str(tmp_path / "gone")
    (selection / "selection.json").write_text(json.dumps(meta))
    with pytest.raises(SparcomError, match="exclude-profiled"):
        causal_check(setup["loaded"], selection, setup["data"], CausalSettings(exclude_profiled=True, **ZERO_SHAPE),
                     progress=False)


def test_unique_sets(setup):
    masks = {"neuron/cls/0": np.array([1, 1, 0, 0], dtype=bool), "neuron/qa/0": np.array([0, 1, 1, 0], dtype=bool),
             "neuron/math/0": np.array([0, 1, 0, 1], dtype=bool)}
    unique = unique_masks(masks, ["cls", "qa", "math"])
    assert unique["neuron/cls/0"].tolist() == [True, False, False, False]
    assert unique["neuron/qa/0"].tolist() == [False, False, True, False]
    assert unique["neuron/math/0"].tolist() == [False, False, False, True]
    result = causal_check(setup["loaded"], setup["selection"], setup["data"],
                          CausalSettings(seeds=1, per_category=1, unique=True, **ZERO_SHAPE), progress=False)
    expected = unique_masks(setup["masks"], CATEGORIES)
    for category, size in result.targets["neurons"].sizes().items():
        assert size == sum(int(expected[f"neuron/{category}/{layer}"].sum()) for layer in (0, 1))
    assert result.summary()["settings"]["unique"] is True
