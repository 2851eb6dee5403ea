"""Cross-fitting: each fold's sets equal a selection made on a profile of the other folds' rows alone, every profiled
row is scored once with the sets of its own fold (checked against a direct ablation of that row), and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from causal_tiny import ZERO_SHAPE, one_thread  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, SelectionRule, identify, profile, wrap_model
from sparcom.analysis.groups import load_groups, stratified_folds
from sparcom.artifacts.selection import load_selection
from sparcom.causal.check import causal_check
from sparcom.causal.crossfit import fold_selections
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import example_nll
from sparcom.causal.settings import CausalSettings
from sparcom.components import ComponentSet
from sparcom.data.schema import read_rows
from sparcom.errors import SparcomError
from sparcom.models.loading import load_model
from sparcom.random_sets import random_like

RULE = SelectionRule("percentile", 0.05)
FOLDS = 3
SCRIPT = Path(sys.executable).with_name("sparcom")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def variants(copies: int = 3) -> list[tuple[str, str, str, str]]:
    """The test rows in ``copies`` wordings, so every category has at least 3 instructions."""
    return [(c, f"{ins} (variant {k})" if k else ins, text, out) for k in range(copies) for c, ins, text, out in ROWS]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossfit")
    data = write_dataset(root / "rows.jsonl", variants())
    model = wrap_model(tiny_model("llama", seed=1), tiny_tokenizer(), name="tiny-llama")
    run = profile(model, data, root / "run", ProfileSettings(batch_size=4, group_by="instruction"), progress=False)
    return {"root": root, "data": data, "model": model, "run": run}


def test_each_fold_selects_like_a_profile_of_the_other_folds_alone(study, tmp_path):
    folds = fold_selections(study["run"], RULE, FOLDS, seed=0)
    rows = read_rows(study["data"])
    for f in range(FOLDS):
        train = [r for r in rows if folds.fold_of[r.id] != f]
        part = tmp_path / f"train{f}.jsonl"
        part.write_text("".join(json.dumps({"id": r.id, "category": r.category, "source": r.source,
                                            "origin": r.origin, "instruction": r.instruction, "input": r.input,
                                            "output": r.output, "license": r.license}) + "\n" for r in train))
        alone = profile(study["model"], part, tmp_path / f"run{f}", ProfileSettings(batch_size=4), progress=False)
        identify(alone, RULE, sweep=False, bootstrap=False, out=tmp_path / f"sel{f}", plots=False)
        expected = load_selection(tmp_path / f"sel{f}").masks
        got = folds.selections[f].masks
        assert got.keys() == expected.keys()
        for key in expected:
            assert np.array_equal(got[key], expected[key]), (f, key)
    groups = load_groups(study["run"].counts, study["run"].manifest["groups"], "neuron", study["run"].categories)
    assignment = stratified_folds(groups, FOLDS, 0)
    assert folds.fold_of == {label: int(a) for label, a in zip(groups.labels, assignment, strict=True)}


@pytest.fixture(scope="module")
def crossfit(study):
    settings = CausalSettings(folds=FOLDS, seeds=2, batch_size=4, replicates=20, **ZERO_SHAPE)  # the oracle zeroes
    return causal_check(study["model"], None, study["data"], settings, run=study["run"], rule=RULE, progress=False)


def test_every_row_is_scored_once_with_its_own_folds_sets(study, crossfit):
    folds = fold_selections(study["run"], RULE, FOLDS, seed=0)
    model, tokenizer = study["model"].model, study["model"].tokenizer
    examples = encode_scored(read_rows(study["data"]), tokenizer, crossfit.template)
    assert [e.row_id for e in crossfit.examples] == [e.row_id for e in examples]
    assert crossfit.data["fold_of"] == {e.row_id: folds.fold_of[e.row_id] for e in examples}
    target = crossfit.targets["neurons"]
    for i in (0, 7, 20, 35):
        example = crossfit.examples[i]
        f = folds.fold_of[example.row_id]
        base, _ = example_nll(model, [example], [[0]], 0)
        assert crossfit.baseline_sums[i] == pytest.approx(base[0], rel=1e-6)
        for a, category in enumerate(target.ablated):
            ablation = ComponentSet.from_masks(folds.selections[f].masks, category, ["neuron"])
            with ablate(model, ablation):
                direct, _ = example_nll(model, [example], [[0]], 0)
            assert target.selected_sums[a, i] == pytest.approx(direct[0], rel=1e-6)
            control = random_like(ablation, 1, f"neurons/{category}/fold{f}")
            with ablate(model, control):
                direct, _ = example_nll(model, [example], [[0]], 0)
            assert target.random_sums[a, 1, i] == pytest.approx(direct[0], rel=1e-6)
    assert target.fold_sizes["math"] == [folds.selections[f].size("neuron", "math") for f in range(FOLDS)]
    summary = crossfit.summary()
    assert summary["selection"]["crossfit"]["folds"] == FOLDS
    assert summary["selection"]["crossfit"]["instructions_per_fold"] == [12, 12, 12]
    assert len(summary["targets"]["neurons"]["statistics"]["tests"]) == 6


def test_pooled_damage_is_the_plain_pooled_difference(crossfit):
    target = crossfit.targets["neurons"]
    stats = target.statistics
    labels = [e.category for e in crossfit.examples]
    for a, category in enumerate(target.ablated):
        num = sum(target.selected_sums[a, i] - crossfit.baseline_sums[i] for i in range(len(labels))
                  if labels[i] == category)
        den = sum(int(crossfit.counts[i]) for i in range(len(labels)) if labels[i] == category)
        test = next(t for t in stats.tests if t.ablated == category)
        assert test.damage.estimate == pytest.approx(num / den, rel=1e-9)
        assert target.delta[a, target.evaluated.index(category)] == pytest.approx(num / den, rel=1e-9)


def test_crossfit_refusals(study, tmp_path):
    plain = profile(study["model"], study["data"], tmp_path / "plain", ProfileSettings(batch_size=4), progress=False)
    settings = CausalSettings(folds=2, seeds=1)
    with pytest.raises(SparcomError, match="--group-by instruction"):
        causal_check(study["model"], None, study["data"], settings, run=plain, rule=RULE, progress=False)
    with pytest.raises(SparcomError, match="give --run RUN"):
        causal_check(study["model"], tmp_path, study["data"], settings, run=study["run"], progress=False)
    single = write_dataset(tmp_path / "single.jsonl")  # one gen instruction only
    grouped = profile(study["model"], single, tmp_path / "single", ProfileSettings(group_by="instruction"),
                      progress=False)
    with pytest.raises(SparcomError, match="gen has too few profiled instructions for 2 folds"):
        fold_selections(grouped, RULE, 2)
    with pytest.raises(SparcomError, match="--exclude-profiled does not apply"):
        CausalSettings(folds=3, exclude_profiled=True).check()
    with pytest.raises(SparcomError, match="--crossfit-folds must be at least 2"):
        CausalSettings(folds=1).check()


def test_crossfit_through_the_console_script(study, tmp_path):
    model = tmp_path / "tiny-llama"
    study["model"].model.save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    run = tmp_path / "run"  # profiled in-process, but from the folder the script loads (same weights fingerprint)
    profile(load_model(str(model), dtype="float32"), study["data"], run, ProfileSettings(group_by="instruction"),
            progress=False)
    args = [str(SCRIPT), "ablate", str(model), "--run", str(run), "--rule", "percentile", "--epsilon", "0.05",
            "--crossfit-folds", "3", "--data", str(study["data"]), "--seeds", "2", "--replicates", "20", "--quiet",
            "--no-plots", "--dtype", "float32"]
    done = subprocess.run([*args, "--out", str(tmp_path / "out")], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "cross-fitted over 3 folds" in done.stdout and "specific after Holm correction" in done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["folds"] == 3 and summary["selection"]["crossfit"]["rule"]["epsilon"] == 0.05
    assert (tmp_path / "out" / "tables" / "fold_set_sizes.csv").is_file()
    refused = subprocess.run([*args, "--out", str(tmp_path / "bad"), "--selection", str(tmp_path)],
                             capture_output=True, text=True, env=ENV, timeout=600)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
