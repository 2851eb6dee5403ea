"""Selection rule ``attribution``: the contrast of estimated effects, against a direct implementation of its formula,
through ``identify`` and through cross-fitting, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from causal_tiny import one_thread  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

import sparcom
from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.attribution import from_fixed
from sparcom.causal.crossfit import fold_selections
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.profile.runner import wrap_model


def direct_rule(effects: np.ndarray, epsilon: float) -> np.ndarray:
    """Per category: s = e_c − max over the others; keep s ≥ its (1 − ε) linear quantile, s > 0 and e_c > 0."""
    k, n = effects.shape
    mask = np.zeros((k, n), dtype=bool)
    for c in range(k):
        others = np.delete(effects, c, axis=0).max(axis=0)
        score = effects[c] - others
        ordered = np.sort(score)
        position = (1 - epsilon) * (n - 1)
        low = int(np.floor(position))
        cut = ordered[low] + (position - low) * (ordered[min(low + 1, n - 1)] - ordered[low])
        mask[c] = (score >= cut) & (score > 0) & (effects[c] > 0)
    return mask


def test_rule_is_the_contrast_of_effects_on_small_arrays():
    rng = np.random.default_rng(1)
    effects = rng.normal(size=(4, 200))
    layout = Layout("neuron", (0, 1), ((120,), (80,)))
    p = rng.uniform(size=(4, 200))  # frequencies play no part
    for epsilon in (0.01, 0.05, 0.2):
        mask = SelectionRule("attribution", epsilon).apply(p, layout, effects=effects)
        assert np.array_equal(mask, direct_rule(effects, epsilon))
    assert SelectionRule("attribution", 0.05).apply(p, layout, effects=-np.abs(effects)).sum() == 0
    with pytest.raises(SparcomError, match="sparcom attribute"):
        SelectionRule("attribution").apply(p, layout)
    with pytest.raises(SparcomError, match="another model"):
        SelectionRule("attribution").apply(p, layout, effects=effects[:, :10])
    assert "attribution" in SelectionRule("attribution", attribution="x").parameters


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rule")
    data = write_dataset(folder / "rows.jsonl", [*ROWS, ("gen", "Write a line about the wind.", "", "The wind sings.")])
    loaded = wrap_model(tiny_model("llama"), tiny_tokenizer(), "tiny-llama")
    run = sparcom.profile(loaded, data, folder / "profile", group_by="instruction", template="chat", progress=False)
    attribution = sparcom.attribute(loaded, data, folder / "attribution", group_by="instruction", template="chat",
                                    batch_size=3, progress=False)
    return run, attribution, data, folder


def independent_effects(attribution, categories, ids=None) -> np.ndarray:
    """Σ estimates / scored tokens per category, from the per-instruction rows (optionally only ``ids``)."""
    groups = attribution.manifest["groups"]
    rows = [i for i, label in enumerate(groups["labels"]) if ids is None or label in ids]
    out = []
    for category in categories:
        members = [i for i in rows if groups["categories"][i] == category]
        total = np.concatenate([attribution.sums[f"groups/neuron/{j}"][members].sum(0) for j in (0, 1)])
        out.append(from_fixed(total) / attribution.sums["groups/tokens"][members].sum())
    return np.array(out)


def test_identify_selects_the_top_contrasts_of_the_attribution_run(runs):
    run, attribution, _, folder = runs
    result = sparcom.identify(run, rule="attribution", epsilon=0.05, attribution=str(attribution.path),
                              out=folder / "identify", plots=False, validity=False)
    expected = direct_rule(independent_effects(attribution, run.categories), 0.05)
    assert np.array_equal(result.kinds["neuron"].mask, expected)
    assert expected.sum() > 0
    assert any("rule 'attribution' ranks estimated effects" in note for note in result.notes)
    assert sparcom.load_selection(folder / "identify").meta["parameters"]["attribution"] == str(attribution.path)
    sweep = result.kinds["neuron"].sweep
    assert [row["epsilon"] for row in sweep if row["is_default"]] == [0.05]


def test_cross_fitting_ranks_each_folds_training_effects(runs):
    run, attribution, _, _ = runs
    rule = SelectionRule("attribution", 0.05, attribution=str(attribution.path))
    folds = fold_selections(run, rule, 2, seed=0)
    for f, selection in enumerate(folds.selections):
        train = {label for label, fold in folds.fold_of.items() if fold != f}
        expected = direct_rule(independent_effects(attribution, run.categories, train), 0.05)
        stacked = np.stack([np.concatenate([selection.masks[f"neuron/{c}/{j}"] for j in (0, 1)])
                            for c in run.categories])
        assert np.array_equal(stacked, expected), f


def test_an_attribution_run_of_another_model_or_without_instructions_is_refused(runs, tmp_path):
    run, _, data, _ = runs
    other = wrap_model(tiny_model("llama", seed=5), tiny_tokenizer(), "other")
    foreign = sparcom.attribute(other, data, tmp_path / "foreign", template="chat", progress=False)
    with pytest.raises(SparcomError, match="was not attributed on the model"):
        sparcom.identify(run, rule="attribution", attribution=str(foreign.path), validity=False)
    loaded = wrap_model(tiny_model("llama"), tiny_tokenizer(), "tiny-llama")
    plain = sparcom.attribute(loaded, data, tmp_path / "plain", template="chat", progress=False)
    with pytest.raises(SparcomError, match="--group-by instruction"):
        fold_selections(run, SelectionRule("attribution", attribution=str(plain.path)), 2)
    with pytest.raises(SparcomError, match="--resamples"):
        sparcom.identify(run, rule="attribution", attribution=str(plain.path), resamples=5, validity=False)


def test_cli_identify_with_the_rule_needs_the_attribution_run(cli, runs, tmp_path):
    run, attribution, _, _ = runs
    failed = cli("identify", run.path, "--rule", "attribution", "--out", tmp_path / "x")
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 2 and len(lines) == 1 and "--attribution DIR" in lines[0], failed.stderr
    failed = cli("identify", run.path, "--rule", "attribution", "--attribution", tmp_path / "nothing",
                 "--out", tmp_path / "y")
    assert failed.returncode == 2 and "sparcom attribute" in failed.stderr
    done = cli("identify", run.path, "--rule", "attribution", "--attribution", attribution.path, "--out",
               tmp_path / "z", "--no-plots", "--no-validity")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_cross_fitted_causal_check_judges_the_rules_sets(runs):
    """The rule plugs into the causal check's cross-fitting like the others (the folds' sets are those checked
    above); the check scores every profiled row once."""
    run, attribution, data, _ = runs
    loaded = wrap_model(tiny_model("llama"), tiny_tokenizer(), "tiny-llama")
    result = sparcom.ablate(loaded, data=data, run=run, crossfit_folds=2, rule="attribution", epsilon=0.05,
                            attribution=str(attribution.path), seeds=2, replicates=20, batch_size=4, progress=False,
                            plots=False)
    crossfit = result.summary()["selection"]["crossfit"]
    assert crossfit["rule"]["rule"] == "attribution" and crossfit["rule"]["attribution"] == str(attribution.path)
    assert sum(crossfit["instructions_per_fold"]) == 13


def test_steps_that_cannot_take_the_rule_say_so(runs):
    run, attribution, _, _ = runs
    with pytest.raises(SparcomError, match="compare does not take"):
        sparcom.compare(run, run, rule="attribution", attribution=str(attribution.path))
    with pytest.raises(SparcomError, match="cross-fitted causal check"):
        sparcom.sweep(run, rules=("attribution",))


@pytest.fixture(scope="module")
def larger_runs(tmp_path_factory):
    """Four variants of every row: enough instructions per category for the probing folds (rule 'test' too)."""
    folder = tmp_path_factory.mktemp("probing")
    rows = [(c, f"{instruction} (variant {v})", text, output) for v in range(4) for c, instruction, text, output in ROWS]
    data = write_dataset(folder / "rows.jsonl", rows)
    loaded = wrap_model(tiny_model("llama"), tiny_tokenizer(), "tiny-llama")
    run = sparcom.profile(loaded, data, folder / "profile", group_by="instruction", template="chat", progress=False)
    attribution = sparcom.attribute(loaded, data, folder / "attribution", group_by="instruction", template="chat",
                                    batch_size=8, progress=False)
    return run, attribution


@pytest.mark.parametrize("rule", ["contrast", "attribution"])
def test_probing_ranks_the_attribution_run_beside_the_frequency_rules(larger_runs, rule):
    from sparcom.analysis.pipeline import identify
    from sparcom.analysis.settings import ValiditySettings

    run, attribution = larger_runs
    validity = ValiditySettings(probing=True, folds=2, random_sets=4)
    result = identify(run, SelectionRule(rule, 0.05, attribution=str(attribution.path)), validity=validity)
    curves = result.probing["neuron"]
    assert curves.methods.count("attribution") == 1 and "contrast" in curves.methods
    without = identify(run, SelectionRule("contrast", 0.05), validity=validity).probing["neuron"]
    assert "attribution" not in without.methods
    m, n = curves.methods.index("contrast"), without.methods.index("contrast")
    np.testing.assert_array_equal(curves.accuracy[m], without.accuracy[n])
