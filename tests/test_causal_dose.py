"""Dose–response: the geometric grid, the top-k by the rule's own score against a direct sort, each k a condition
of the one plan, the curve's points against a direct ablation of the top-k set, and the figure in the folder and
the HTML report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from causal_tiny import one_thread, tiny_study  # noqa: F401
from typer.testing import CliRunner

from sparcom.analysis.specificity import contrast_scores
from sparcom.causal import CausalSettings, causal_check
from sparcom.causal.dose import dose_grid, rule_scores, top_k
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import category_means
from sparcom.causal.plan import Fold, build_plan
from sparcom.causal.scoring import example_nll
from sparcom.cli.app import app
from sparcom.components import ComponentSet, Layout
from sparcom.data.batching import length_batches
from sparcom.errors import SparcomError


def test_the_grid_is_geometric_up_to_the_set_size():
    assert dose_grid(470, 6) == (1, 3, 12, 40, 137, 470)  # round(470 ** (i / 5))
    assert dose_grid(470, 6) == tuple(round(470 ** (i / 5)) for i in range(6))
    assert dose_grid(5, 8) == (1, 2, 3, 4, 5)  # duplicates dropped, the whole set last
    assert dose_grid(1, 4) == (1,) and dose_grid(0, 4) == ()


def test_top_k_takes_the_highest_scores_and_nests():
    layout = Layout("neuron", (0, 2), ((8,), (8,)))
    rng = np.random.default_rng(4)
    mask = rng.random(16) < 0.6
    scores = np.round(rng.random(16), 1)  # ties: broken by position
    selected = ComponentSet.from_flat(layout, mask)
    members = np.flatnonzero(mask)
    ranked = members[np.lexsort((members, -scores[members]))]  # direct: score descending, then position
    previous = np.zeros(16, dtype=bool)
    for k in range(1, mask.sum() + 1):
        chosen = top_k(selected, {"neuron": scores}, k).flat("neuron")
        assert np.array_equal(np.flatnonzero(chosen), np.sort(ranked[:k]))
        assert not (previous & ~chosen).any()  # nested
        previous = chosen


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("dose"), {"selection": ("percentile", 0.05), "contrast": ("contrast", 0.05)})


def test_rule_scores_are_the_rules_own(study):
    from sparcom.analysis.frequencies import kind_frequencies

    run = study["run"]
    freqs = kind_frequencies(run.counts, run.categories, "neuron")
    row = list(freqs.categories).index("math")
    percentile = rule_scores(run, {"rule": "percentile"}, "math", ["neuron"])["neuron"]
    np.testing.assert_array_equal(percentile, np.where(freqs.p[row] > 0, freqs.p[row], -np.inf))
    contrast = rule_scores(run, {"rule": "contrast", "parameters": {"against": "mean"}}, "math", ["neuron"])
    direct = contrast_scores(freqs.p, "mean")[row]  # the rule never keeps a non-positive score or p = 0
    np.testing.assert_array_equal(contrast["neuron"], np.where((direct > 0) & (freqs.p[row] > 0), direct, -np.inf))
    with pytest.raises(SparcomError, match=r"needs counts per instruction; .* was profiled by category"):
        rule_scores(run, {"rule": "test", "parameters": {"min_effect": 0.05, "fdr": 0.05}}, "math", ["neuron"])
    with pytest.raises(SparcomError, match="rule 'bogus' has none"):
        rule_scores(run, {"rule": "bogus"}, "math", ["neuron"])
    layer = rule_scores(run, {"rule": "layer-percentile", "epsilon": 0.05}, "math", ["neuron"])["neuron"]
    for j, part in ((j, freqs.layout.layer_slice(j)) for j in freqs.layout.layers):
        block = freqs.p[row, part]  # within each layer: the rank as a fraction (the rule selects per layer)
        ranks = np.array([(block < v).sum() + (block[:i] == v).sum() + 1 for i, v in enumerate(block)]) / block.size
        expected = np.where(block > 0, ranks, -np.inf)
        np.testing.assert_array_equal(layer[part], expected, err_msg=f"layer {j}")


def test_each_k_is_a_condition_of_the_one_plan():
    selected = ComponentSet.from_flat(Layout("neuron", (0,), ((16,),)), np.arange(16) < 9)
    scoring = type("S", (), {"batches": ((0,),)})()
    fold = Fold(None, np.arange(2), scoring, {"neurons": {"math": selected}})
    subsets = [(k, top_k(selected, {"neuron": np.arange(16.0)}, k)) for k in (1, 3)]
    plan = build_plan([fold], ["neurons"], ["math"], seeds=2, seed=0, doses={("neurons", "math"): subsets})
    sized = [c for c in plan if c.key.size is not None]
    assert [(c.key.size, c.key.role, c.selected.size()) for c in sized] == [
        (1, "selected", 1), (1, "random", 1), (1, "random", 1), (3, "selected", 3), (3, "random", 3), (3, "random", 3)]
    assert str(sized[0].key) == "nll/selected/target=neurons/category=math/size=1" and sized[1].key.stream == "neurons/math/top1"
    assert len(plan) == 1 + 3 + len(sized)


def test_curve_points_match_a_direct_ablation_of_the_top_k(study):
    settings = CausalSettings(seeds=2, batch_size=4, controls=("shape", "frequency"), dose_points=3, replicates=20,
                              interventions=("zero",))  # the oracle zeroes the top-k
    result = causal_check(study["model"], study["root"] / "selection", study["data"], settings, progress=False)
    curves = {c.category: c for c in result.dose.curves}
    target = result.targets["neurons"]
    for category, curve in curves.items():
        a = target.ablated.index(category)
        assert curve.sizes[-1] == target.ablations[category].size()
        np.testing.assert_allclose(curve.delta[-1], target.delta[a])  # the whole set: the check's own condition
        assert set(curve.random) == {"shape", "frequency"} and curve.random["frequency"].shape == (
            len(curve.sizes), 2, len(result.evaluated))
        np.testing.assert_allclose(curve.random["shape"][-1], target.random_delta[a])
    curve = curves["math"]
    k = curve.sizes[0]
    run = study["run"]
    from sparcom.analysis.frequencies import kind_frequencies

    freqs = kind_frequencies(run.counts, run.categories, "neuron")
    p = freqs.p[list(freqs.categories).index("math")]
    members = np.flatnonzero(target.ablations["math"].flat("neuron"))
    top = np.sort(members[np.lexsort((members, -p[members]))][:k])
    chosen = np.zeros(freqs.layout.size, dtype=bool)
    chosen[top] = True
    model, examples = study["model"], result.examples
    plan = length_batches([len(e) for e in examples], 4)
    with ablate(model.model, ComponentSet.from_flat(freqs.layout, chosen)):
        sums, counts = example_nll(model.model, examples, plan, 0)
    before = category_means(examples, result.baseline_sums, counts, result.evaluated)
    after = category_means(examples, sums, counts, result.evaluated)
    direct = [after[c]["nll"] - before[c]["nll"] for c in result.evaluated]
    np.testing.assert_allclose(curve.delta[0], direct, atol=1e-9)
    own, others = curve.own_and_others(curve.delta)
    j = result.evaluated.index("math")
    assert own[0] == curve.delta[0, j]
    assert others[0] == pytest.approx(np.mean([d for i, d in enumerate(direct) if i != j]))
    band = curve.band("frequency")
    assert band["own_max"][0] == curve.random["frequency"][0, :, j].max()


def test_cli_writes_the_figure_and_the_report_shows_it(study, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["ablate", str(study["folder"]), "--selection", str(study["root"] / "contrast"),
                                 "--data", str(study["data"]), "--out", str(out), "--seeds", "2", "--dtype",
                                 "float32", "--dose-response", "3", "--per-category", "2", "--quiet",
                                 "--replicates", "20"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "dose–response" in result.output
    figure = out / "plots" / "dose_response_neurons.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "tables" / "dose_response.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["control"] for r in rows} == {"frequency-bin"} and min(int(r["k"]) for r in rows) == 1  # the default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dose_response"]["ranking"] == "contrast"
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(out), "--out", str(html)])
    assert result.exit_code == 0, result.output + result.stderr
    text = html.read_text(encoding="utf-8")
    assert "Dose–response" in text and "data:image/png;base64" in text
    # the default check's intervention and control, named beside its numbers
    assert "activations set to their mean over the profile run" in text
    assert "matched on layer and activation frequency" in text
    bad = runner.invoke(app, ["ablate", str(study["folder"]), "--run", str(study["run"].path), "--data",
                              str(study["data"]), "--out", str(tmp_path / "x"), "--crossfit-folds", "2",
                              "--dose-response", "3"])
    assert bad.exit_code == 2 and "not available with --crossfit-folds" in bad.output + bad.stderr
