"""Several interventions in one causal check: one result per intervention, each equal to a plain re-computation; a
run without activation sums refused in one line before any pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from causal_tiny import one_thread  # noqa: F401
from oracle import reference_counts
from tiny import tiny_model, tiny_tokenizer, write_dataset
from typer.testing import CliRunner

from sparcom import ProfileSettings, SelectionRule, identify, profile, wrap_model
from sparcom.artifacts.selection import load_selection
from sparcom.causal import CausalSettings, causal_check
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import example_nll
from sparcom.cli.app import app
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.schema import read_rows
from sparcom.models.sites import model_sites
from sparcom.settings import build


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("interventions")
    data = write_dataset(root / "rows.jsonl")
    model = tiny_model("llama", seed=1)
    loaded = wrap_model(model, tiny_tokenizer(), name="tiny-llama")
    run = profile(loaded, data, root / "run", ProfileSettings(batch_size=4), progress=False)
    identify(run, SelectionRule("percentile", 0.05), sweep=False, out=root / "selection", plots=False)
    return {"root": root, "data": data, "model": model, "loaded": loaded, "run": run, "selection": root / "selection"}


def manual_nll(model, rows, selection, category: str, values: dict[int, torch.Tensor] | None, batch_size: int = 4):
    """Per-row summed NLL with a plain forward hook writing ``values[layer]`` (or 0) into the set's neurons."""
    sites = model_sites(model)
    examples = encode_scored(rows, tiny_tokenizer(), "chat", None)
    members = ComponentSet.from_masks(selection.masks, category, ["neuron"]).members.get("neuron", {})
    handles = []
    for layer, indices in members.items():
        indices = list(np.asarray(indices))
        if not indices:
            continue

        def hook(module, args, out, indices=indices, layer=layer):
            out = out.clone()
            out[..., indices] = 0 if values is None else values[layer][indices].to(out.dtype)
            return out

        handles.append(sites.dense[layer].module.register_forward_hook(hook))
    try:
        sums, _ = example_nll(model, examples, length_batches([len(e) for e in examples], batch_size), 0)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def test_each_intervention_gives_its_own_result_equal_to_a_plain_recomputation(study):
    settings = CausalSettings(seeds=2, batch_size=4, interventions=("zero", "mean", "resample"))
    result = causal_check(study["loaded"], study["selection"], study["data"], settings, progress=False)
    assert set(result.targets) == {"neurons", "neurons@mean", "neurons@resample"}
    assert [result.targets[n].intervention for n in ("neurons", "neurons@mean", "neurons@resample")] == [
        "zero", "mean", "resample"]
    assert {result.targets[n].control for n in result.targets} == {"frequency-bin"}  # the default control
    zero_only = causal_check(study["loaded"], study["selection"], study["data"],
                             CausalSettings(seeds=2, batch_size=4, interventions=("zero",)), progress=False)
    np.testing.assert_array_equal(result.targets["neurons"].delta, zero_only.targets["neurons"].delta)
    np.testing.assert_array_equal(result.targets["neurons"].random_delta, zero_only.targets["neurons"].random_delta)
    # The means from the full-activation oracle: Σ over every category's counted tokens / their number.
    sums: dict = {}
    counts = reference_counts(study["model"], tiny_tokenizer(), study["data"], "instruction", chat=True, sums=sums)
    tokens = sum(int(v) for k, v in counts.items() if k.startswith("tokens/"))
    categories = result.targets["neurons@mean"].ablated
    layers = sorted({int(k.split("/")[-1]) for k in sums})
    means = {j: torch.tensor(sum(sums[f"sums/neuron/{c}/{j}"] for c in categories) / tokens) for j in layers}
    rows = read_rows(study["data"], require_output=True)
    selection = load_selection(study["selection"])
    for a, category in enumerate(categories):
        expected = manual_nll(study["model"], rows, selection, category, means)
        np.testing.assert_allclose(result.targets["neurons@mean"].selected_sums[a], expected, rtol=1e-5, atol=1e-5)
        zeroed = manual_nll(study["model"], rows, selection, category, None)
        np.testing.assert_allclose(result.targets["neurons"].selected_sums[a], zeroed, rtol=1e-5, atol=1e-5)
    resampled = result.targets["neurons@resample"]
    assert np.isfinite(resampled.delta).all() and not np.allclose(resampled.delta, result.targets["neurons"].delta)
    summary = result.summary()
    assert summary["targets"]["neurons@mean"]["intervention"] == "mean"
    assert summary["settings"]["interventions"] == ["zero", "mean", "resample"]


def test_a_run_without_sums_is_refused_in_one_line_before_any_pass(study, tmp_path):
    """An older run (no sums file, no sha256 in its manifest) with --intervention mean: exit 2, one line, nothing
    written."""
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("counts.safetensors", "manifest.json"):
        (old / name).write_bytes((study["run"].path / name).read_bytes())
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["sums_sha256"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    selection = tmp_path / "selection"
    identify(old, SelectionRule("percentile", 0.05), sweep=False, out=selection, plots=False)
    folder = tmp_path / "model"
    study["model"].save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    runner = CliRunner()
    result = runner.invoke(app, ["ablate", str(folder), "--selection", str(selection), "--data", str(study["data"]),
                                 "--out", str(tmp_path / "out"), "--intervention", "zero,mean", "--seeds", "1",
                                 "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "no activation sums" in result.stderr and "re-run 'sparcom profile'" in result.stderr
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["ablate", str(folder), "--selection", str(selection), "--data", str(study["data"]),
                                 "--out", str(tmp_path / "out"), "--intervention", "median", "--quiet"])
    assert result.exit_code == 2 and "--intervention" in result.stderr


def test_generation_rows_name_their_intervention(study):
    settings = CausalSettings(seeds=1, batch_size=4, interventions=("zero", "mean"), generate=True,
                              max_new_tokens=2, generate_seeds=1, per_category=2)
    result = causal_check(study["loaded"], study["selection"], study["data"], settings, progress=False)
    targets = {row["target"] for row in result.accuracy}
    assert targets == {"none", "neurons", "neurons@mean"}
    with pytest.raises(Exception, match="--generate is not available with --intervention resample"):
        CausalSettings(interventions=("resample",), generate=True).check()


def test_the_default_check_is_mean_ablation_against_frequency_matched_sets():
    """Mean keeps the model on-distribution where zero breaks it; frequency matches what the rules select on
    (docs/causal.md "Which intervention by default", "Which control by default")."""
    settings = CausalSettings()
    assert settings.interventions == ("mean",) and settings.controls == ("frequency-bin",)
    assert CausalSettings(interventions=None, controls=None).controls == ("frequency-bin",)
    assert build(CausalSettings, {"intervention": None, "control": None}).interventions == ("mean",)
    assert build(CausalSettings, {"control": None}).controls == ("frequency-bin",)
    assert build(CausalSettings, {"control": ["shape,magnitude"]}).controls == ("shape", "magnitude")
