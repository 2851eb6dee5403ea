"""Mean and resample ablation against plain references: independent forward hooks written from the formula.

For each intervention the patched activations must equal what the formula says (mean: the reference mean;
resample: the donor row's value at the same position class and rank), the output must equal a forward with a plain
hook that does the same replacement, and the model must be unchanged after the block (weights bit for bit, hooks
removed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from causal_tiny import (  # noqa: F401
    assert_same_state,
    experts_io,
    hook_count,
    manual_experts,
    one_thread,
    snapshot,
    tiny_moe,
)
from tiny import tiny_model

from sparcom.causal.interventions import InterventionReference, mean_ablate, resample_ablate
from sparcom.causal.nll import ScoredExample
from sparcom.causal.resample import DonorPlan
from sparcom.causal.scoring import build_batch
from sparcom.components import ComponentSet
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites

IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 64, 128, 9, 77, 300], [6, 18, 43, 100, 8, 251, 32, 65, 12, 10, 78, 3]])


def observe(module: torch.nn.Module, store: dict, name: str):
    """A plain observer registered after any intervention hook: it sees the patched output."""
    return module.register_forward_hook(lambda m, a, out: store.__setitem__(name, out.detach().clone()))


def replacing(module: torch.nn.Module, indices, values):
    """The plain reference: a forward hook that writes ``values`` (broadcast over tokens, or [B, T, k]) into the
    last axis at ``indices``."""
    def hook(m, a, out):
        out = out.clone()
        out[..., list(indices)] = values.to(out.dtype).reshape(*out.shape[:-1], len(indices)) \
            if values.dim() > 1 else values.to(out.dtype)
        return out
    return module.register_forward_hook(hook)


@pytest.fixture(scope="module", params=["llama", "gpt2", "opt"])
def dense(request):
    return tiny_model(request.param)


def layer_means(sites, kind: str, seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    rng = np.random.default_rng(seed)
    return {(kind, layer): rng.normal(size=sites.shape(kind, layer)) for layer in sites.sites_of(kind)}


def test_mean_ablation_sets_the_targets_to_their_means_and_nothing_else(dense):
    sites = model_sites(dense)
    means = layer_means(sites, "neuron")
    targets = np.array([0, 5, 17, 47])
    store: dict = {}
    handles = [observe(sites.dense[j].module, store, f"clean{j}") for j in (0, 1)]
    with torch.no_grad():
        clean_logits = dense(IDS).logits
    for handle in handles:
        handle.remove()
    before, hooks = snapshot(dense), hook_count(dense)
    ablation = ComponentSet.from_indices({"neuron": {1: targets}}, sites)
    with mean_ablate(dense, ablation, reference=InterventionReference(means)), torch.no_grad():
        handles = [observe(sites.dense[j].module, store, f"mean{j}") for j in (0, 1)]
        patched = dense(IDS).logits
    for handle in handles:
        handle.remove()
    assert torch.equal(store["mean0"], store["clean0"])
    others = np.setdiff1d(np.arange(sites.dense[1].width), targets)
    assert torch.equal(store["mean1"][..., others], store["clean1"][..., others])
    expected = torch.tensor(means[("neuron", 1)][targets], dtype=torch.float32).expand_as(store["mean1"][..., targets])
    assert torch.equal(store["mean1"][..., targets], expected)
    handle = replacing(sites.dense[1].module, targets, torch.tensor(means[("neuron", 1)][targets]))
    with torch.no_grad():
        manual = dense(IDS).logits
    handle.remove()
    assert torch.equal(patched, manual) and not torch.allclose(patched, clean_logits)
    assert_same_state(dense, before)
    assert hook_count(dense) == hooks
    with torch.no_grad():
        assert torch.equal(dense(IDS).logits, clean_logits)


def test_mean_ablation_of_shared_expert_neurons_matches_a_plain_hook():
    model = tiny_moe("qwen2_moe")
    sites = model_sites(model)
    layer = next(iter(sites.shared))
    means = layer_means(sites, "shared_neuron", seed=3)
    targets = np.array([1, 2, 9])
    with torch.no_grad():
        clean = model(IDS).logits
        with mean_ablate(model, ComponentSet.from_indices({"shared_neuron": {layer: targets}}, sites),
                         reference=InterventionReference(means)):
            patched = model(IDS).logits
        handle = replacing(sites.shared[layer].module, targets, torch.tensor(means[("shared_neuron", layer)][targets]))
        manual = model(IDS).logits
        handle.remove()
    assert torch.equal(patched, manual) and not torch.allclose(patched, clean)


@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
def test_expert_neurons_are_mean_ablated_on_the_rows_routed_to_their_expert(implementation):
    model = tiny_moe("mixtral", implementation=implementation)
    sites = model_sites(model)
    site = sites.moe[1]
    before, hooks = snapshot(model), hook_count(model)
    clean = experts_io(site, model, IDS)
    means = layer_means(sites, "expert_neuron", seed=5)
    pairs = [(0, 3), (0, 4), (5, 0), (7, 23), (2, 11)]
    with mean_ablate(model, ComponentSet.from_indices({"expert_neuron": {1: pairs}}, sites),
                     reference=InterventionReference(means)):
        ablated = experts_io(site, model, IDS)
    hidden, index, weights = ablated["args"]
    assert torch.equal(hidden, clean["args"][0])  # layer 0 untouched
    with torch.no_grad():
        expected = manual_experts(site.experts, hidden, index, weights,
                                  {(e, i): means[("expert_neuron", 1)][e, i] for e, i in pairs})
        assert torch.allclose(ablated["output"], expected, atol=1e-5, rtol=1e-5)
        assert torch.allclose(clean["output"], manual_experts(site.experts, hidden, index, weights), atol=1e-5,
                              rtol=1e-5)
    assert not torch.allclose(ablated["output"], clean["output"])
    assert_same_state(model, before)
    assert hook_count(model) == hooks


def examples_with_classes() -> list[ScoredExample]:
    """Four rows of two categories with template (0), user (1) and response (2) tokens of different lengths."""
    rng = np.random.default_rng(0)
    layout = [("math", [0, 0, 1, 1, 1, 0, 2, 2, 2, 2]), ("math", [0, 0, 1, 0, 2, 2, 2]),
              ("code", [0, 0, 1, 1, 0, 2, 2, 2, 2, 2, 2]), ("code", [0, 0, 1, 1, 1, 1, 1, 0, 2, 2])]
    return [ScoredExample(f"r{i}", category, tuple(int(t) for t in rng.integers(3, 200, len(classes))),
                          tuple(c == 2 for c in classes), tuple(classes))
            for i, (category, classes) in enumerate(layout)]


def test_donors_come_from_other_categories_and_are_fixed_by_the_seed():
    examples = examples_with_classes()
    plan = DonorPlan.draw(examples, seed=1, pad_id=0)
    assert all(examples[d].category != e.category for e, d in zip(examples, plan.donor_of, strict=True))
    assert np.array_equal(plan.donor_of, DonorPlan.draw(examples, seed=1, pad_id=0).donor_of)
    draws = {tuple(DonorPlan.draw(examples, seed=s, pad_id=0).donor_of) for s in range(20)}
    assert len(draws) > 1
    with pytest.raises(SparcomError, match="another category"):
        DonorPlan.draw(examples[:2], seed=1, pad_id=0)


def test_resample_ablation_takes_the_donor_values_at_the_same_position_class_and_rank(dense):
    sites = model_sites(dense)
    examples = examples_with_classes()
    plan = DonorPlan.draw(examples, seed=4, pad_id=0)
    rows = [0, 1, 2, 3]
    batch = build_batch(examples, rows, 0)
    targets = np.array([2, 7, 30])
    module = sites.dense[1].module
    # The donors' activations, one row at a time with a plain hook (no padding at all).
    donor_acts = {}
    for d in set(plan.donor_of.tolist()):
        store: dict = {}
        handle = observe(module, store, "act")
        with torch.no_grad():
            dense(torch.tensor([examples[d].input_ids]))
        handle.remove()
        donor_acts[d] = store["act"].reshape(len(examples[d]), -1)
    width = batch.input_ids.shape[1]
    store: dict = {}
    handle = observe(module, store, "clean")
    with torch.no_grad():
        dense(input_ids=batch.input_ids, attention_mask=batch.attention)
    handle.remove()
    expected = store["clean"].reshape(len(rows), width, -1)[..., targets].clone()
    for b, r in enumerate(rows):  # the formula, position by position
        d = int(plan.donor_of[r])
        for t, k in enumerate(examples[r].classes):
            rank = examples[r].classes[:t].count(k)
            source = [u for u, c in enumerate(examples[d].classes) if c == k]
            if source:
                expected[b, t] = donor_acts[d][source[rank % len(source)], targets]
    before, hooks = snapshot(dense), hook_count(dense)
    ablation = ComponentSet.from_indices({"neuron": {1: targets}}, sites)
    with resample_ablate(dense, ablation, reference=InterventionReference(donors=plan)) as stats, torch.no_grad():
        stats.before_batch(rows, batch)
        handle = observe(module, store, "patched")
        patched = dense(input_ids=batch.input_ids, attention_mask=batch.attention).logits
        handle.remove()
    got = store["patched"].reshape(len(rows), width, -1)
    real = batch.attention.bool()
    assert torch.allclose(got[..., targets][real], expected[real], atol=1e-5, rtol=1e-5)
    others = np.setdiff1d(np.arange(sites.dense[1].width), targets)
    assert torch.equal(got[..., others], store["clean"].reshape(len(rows), width, -1)[..., others])
    handle = replacing(module, targets, expected)
    with torch.no_grad():
        manual = dense(input_ids=batch.input_ids, attention_mask=batch.attention).logits
    handle.remove()
    assert torch.allclose(patched[real], manual[real], atol=1e-5, rtol=1e-5)
    assert_same_state(dense, before)
    assert hook_count(dense) == hooks


def test_resample_refuses_a_forward_without_its_donors_and_expert_neurons():
    model = tiny_model("llama")
    sites = model_sites(model)
    plan = DonorPlan.draw(examples_with_classes(), seed=0, pad_id=0)
    ablation = ComponentSet.from_indices({"neuron": {0: [1]}}, sites)
    with pytest.raises(SparcomError, match="without its donor batch"), torch.no_grad(), \
            resample_ablate(model, ablation, reference=InterventionReference(donors=plan)):
        model(IDS)
    moe = tiny_moe("mixtral")
    moe_sites = model_sites(moe)
    with pytest.raises(SparcomError, match="cannot be resample-ablated"), resample_ablate(
            moe, ComponentSet.from_indices({"expert_neuron": {0: [(0, 1)]}}, moe_sites),
            reference=InterventionReference(donors=plan)):
        pass
    with pytest.raises(SparcomError, match="no mean activation"), mean_ablate(
            model, ablation, reference=InterventionReference()):
        pass
