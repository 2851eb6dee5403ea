"""The sufficiency pilot: amplification against a plain hook, the pull against its formula, the pilot end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from causal_tiny import assert_same_state, hook_count, one_thread, snapshot, tiny_moe, tiny_study  # noqa: F401
from tiny import tiny_model

from sparcom.causal.interventions import ablate, amplify
from sparcom.causal.sufficiency import CrossExamples, cross_examples, pilot_rows, steering_pull, sufficiency_pilot
from sparcom.components import ComponentSet
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites

IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 64], [6, 18, 43, 100, 8, 251, 32, 65]])
CATEGORIES = ("cls", "code", "qa", "gen", "math", "sum")


def test_amplify_equals_a_plain_hook_that_scales_the_activations_and_restores_the_model():
    model = tiny_model("llama")
    sites = model_sites(model)
    targets = np.array([1, 4, 9])
    module = model.model.layers[1].mlp.act_fn

    def scaled(m, a, out):
        out = out.clone()
        out[..., targets.tolist()] *= 3.0
        return out

    handle = module.register_forward_hook(scaled)
    with torch.no_grad():
        expected = model(IDS).logits
    handle.remove()
    before, hooks = snapshot(model), hook_count(model)
    with amplify(model, ComponentSet.from_indices({"neuron": {1: targets}}, sites), 3.0), torch.no_grad():
        got = model(IDS).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert_same_state(model, before)
    assert hook_count(model) == hooks
    everything = ComponentSet.from_indices({"neuron": {1: targets}}, sites)
    with torch.no_grad():
        clean = model(IDS).logits
        with amplify(model, everything, 1.0):
            assert torch.equal(model(IDS).logits, clean)
        with amplify(model, everything, 0.0):
            zeroed = model(IDS).logits
        with ablate(model, everything):
            assert torch.equal(zeroed, model(IDS).logits)


def test_amplify_refuses_routed_components_and_restores_after_an_error():
    model = tiny_moe("mixtral")
    sites = model_sites(model)
    experts = ComponentSet.from_indices({"expert": {0: np.array([1])}}, sites)
    with pytest.raises(SparcomError, match="neuron or shared_neuron"), amplify(model, experts, 2.0):
        pass
    hooks = hook_count(model)
    dense = tiny_model("llama")
    neurons = ComponentSet.from_indices({"neuron": {0: np.array([2])}}, model_sites(dense))
    with pytest.raises(RuntimeError, match="inside"), amplify(dense, neurons, 2.0):
        raise RuntimeError("inside")
    assert hook_count(dense) == 0 and hook_count(model) == hooks


def pull_directly(delta, counts, prompt, opening, source):
    """The formula written out: for each target d ≠ source, pooled ΔNLL per token of d's own openings minus of
    the source's openings after d's prompts; the mean over d."""
    pulls, towards, aways = [], [], []
    for d in sorted(set(prompt) - {source}):
        own = [i for i in range(len(delta)) if prompt[i] == d and opening[i] == d]
        src = [i for i in range(len(delta)) if prompt[i] == d and opening[i] == source]
        away = sum(delta[i] for i in own) / sum(counts[i] for i in own)
        toward = sum(delta[i] for i in src) / sum(counts[i] for i in src)
        pulls.append(away - toward)
        towards.append(toward)
        aways.append(away)
    return np.mean(pulls), np.mean(towards), np.mean(aways)


def test_the_pull_is_its_formula_on_small_arrays():
    rng = np.random.default_rng(3)
    prompt = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c", "c"])
    opening = np.array(["a", "b", "c", "b", "a", "c", "c", "a", "a", "b"])
    delta, counts = rng.normal(size=10), rng.integers(1, 9, size=10)
    cross = CrossExamples([], prompt, opening)
    for source in ("a", "b"):
        np.testing.assert_allclose(steering_pull(delta, counts, cross, source),
                                   pull_directly(delta, counts, prompt, opening, source), rtol=1e-12)
    assert set(cross.needed_for("a")) == {3, 4, 6, 7, 8}


def rows_for_pilot(per_category: int = 2) -> list[InstructionRow]:
    rows = []
    for category in CATEGORIES:
        for i in range(per_category):
            rows.append(InstructionRow(f"p-{category}-{i}", category, "ai" if i % 2 else "human", "tests",
                                       f"Do the {category} task number {i}.", "", f"The {category} answer {i} is here.",
                                       "CC0-1.0"))
    return rows


def test_pilot_rows_split_prompts_and_openings_without_profiled_rows():
    rows = rows_for_pilot(4)
    prompts, openings = pilot_rows(rows, 1, 2, exclude={"p-cls-0"})
    assert [r.id for r in prompts if r.category == "cls"] == ["p-cls-1"]
    assert [r.id for r in openings if r.category == "cls"] == ["p-cls-2", "p-cls-3"]
    assert not {r.id for r in prompts} & {r.id for r in openings}
    with pytest.raises(SparcomError, match="category cls: 3 unprofiled rows, the pilot needs 4"):
        pilot_rows(rows, 2, 2, exclude={"p-cls-0"})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = tiny_study(tmp_path_factory.mktemp("sufficiency"), {"selection": ("percentile", 0.05)})
    from sparcom.artifacts.selection import load_selection

    return {**study, "selection": load_selection(study["root"] / "selection")}


def test_cross_examples_score_only_the_opening(study):
    tokenizer = study["model"].tokenizer
    rows = rows_for_pilot(1)
    cross = cross_examples(rows[:2], rows[2:4], tokenizer, "chat", None, 3)
    assert len(cross.examples) == 4 and list(cross.prompt_category) == ["cls", "cls", "code", "code"]
    assert list(cross.opening_category) == ["qa", "gen", "qa", "gen"]
    for example in cross.examples:
        assert 1 <= example.tokens <= 3
        first = example.scored.index(True)
        assert not any(example.scored[:first]) and all(example.scored[first:])


def test_the_pilot_at_factor_one_pulls_nothing_and_is_deterministic(study):
    profiled = InstructionRow("t-000", "cls", "human", "tests", "Profiled.", "", "yes", "CC0-1.0")
    rows = [profiled, *rows_for_pilot(2)]  # a row the selection was made from comes first: it is skipped
    kwargs = dict(seeds=3, prompts=1, openings=1, opening_tokens=4, batch_size=4)
    neutral = sufficiency_pilot(study["model"], study["selection"], rows, factors=(1.0,), **kwargs)
    assert [c.category for c in neutral.cells] == list(study["selection"].categories)
    for cell in neutral.cells:
        assert cell.pull == 0.0 and cell.random_pulls == (0.0,) * 3 and cell.p == 1.0
    first = sufficiency_pilot(study["model"], study["selection"], rows, factors=(3.0,), **kwargs)
    again = sufficiency_pilot(study["model"], study["selection"], rows, factors=(3.0,), **kwargs)
    assert first == again
    assert all(np.isfinite(c.pull) and c.pull != 0.0 and len(set(c.random_pulls)) > 1 for c in first.cells)
    for cell in first.cells:
        assert cell.p == (1 + sum(r >= cell.pull for r in cell.random_pulls)) / 4
    summary = first.to_json()
    assert summary["pilot"] is True and summary["decision"] is None and summary["control"] == "frequency-bin"
    assert summary["rows"]["cls"] == {"prompts": ["p-cls-0"], "openings": ["p-cls-1"]}
    shape = sufficiency_pilot(study["model"], study["selection"], rows, factors=(3.0,), control="shape", **kwargs)
    assert [c.pull for c in shape.cells] == [c.pull for c in first.cells]  # the same selected sets
    assert [c.random_pulls for c in shape.cells] != [c.random_pulls for c in first.cells]
