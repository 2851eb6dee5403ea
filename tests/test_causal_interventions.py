"""Interventions change exactly the targeted activations and leave the model bit-identical afterwards."""

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
    shadowed_forwards,
    snapshot,
    tiny_moe,
)
from tiny import tiny_model

from sparcom.causal.interventions import ablate, check_ablation, renormalized
from sparcom.components import ComponentSet
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites

IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 64, 128, 9, 77, 300], [6, 18, 43, 100, 8, 251, 32, 65, 12, 10, 78, 3]])


def capture(modules: dict[int, torch.nn.Module]) -> tuple[dict[int, torch.Tensor], list]:
    """Register observers (after any ablation hook, so they see its result) and return their store and handles."""
    store: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, a, out, j=j: store.__setitem__(j, out.detach().clone()))
               for j, m in modules.items()]
    return store, handles


@pytest.fixture(scope="module", params=["llama", "gpt2", "opt"])
def dense(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def mixtral():
    return tiny_moe("mixtral")


@pytest.fixture(scope="module")
def qwen_moe():
    return tiny_moe("qwen2_moe")


def test_dense_ablation_zeroes_exactly_the_targets(dense):
    sites = model_sites(dense)
    activations = {j: s.module for j, s in sites.dense.items()}
    store, handles = capture(activations)
    with torch.no_grad():
        dense(IDS)
    clean = dict(store)
    targets = np.array([0, 5, 17, 47])
    with ablate(dense, ComponentSet.from_indices({"neuron": {1: targets}}, sites)), torch.no_grad():
        dense(IDS)
    for handle in handles:
        handle.remove()
    assert torch.equal(store[0], clean[0])  # the layer before is untouched
    others = np.setdiff1d(np.arange(sites.dense[1].width), targets)
    assert torch.equal(store[1][..., others], clean[1][..., others])  # only the targets change …
    assert torch.all(store[1][..., targets] == 0)  # … and they are 0
    assert torch.any(clean[1][..., targets] != 0)


def test_dense_model_is_bit_identical_after_exit_and_after_an_error(dense):
    sites = model_sites(dense)
    before, hooks = snapshot(dense), hook_count(dense)
    with torch.no_grad():
        reference = dense(IDS).logits
    ablation = ComponentSet.from_indices({"neuron": {0: [1, 2, 3], 1: list(range(10))}}, sites)
    with ablate(dense, ablation), torch.no_grad():
        assert not torch.equal(dense(IDS).logits, reference)
    assert_same_state(dense, before)
    assert hook_count(dense) == hooks
    with torch.no_grad():
        assert torch.equal(dense(IDS).logits, reference)
    with pytest.raises(RuntimeError, match="inside"), ablate(dense, ablation):
        raise RuntimeError("failure inside the block")
    assert_same_state(dense, before)
    assert hook_count(dense) == hooks
    with torch.no_grad():
        assert torch.equal(dense(IDS).logits, reference)


def test_ablating_nothing_changes_nothing(dense):
    sites = model_sites(dense)
    with torch.no_grad():
        reference = dense(IDS).logits
        with ablate(dense, ComponentSet.from_indices({"neuron": {0: [], 1: []}}, sites)):
            assert torch.equal(dense(IDS).logits, reference)
        with ablate(dense, ComponentSet({}, {})):
            assert torch.equal(dense(IDS).logits, reference)


def test_ablating_every_neuron_of_a_layer_changes_the_output(dense):
    sites = model_sites(dense)
    store, handles = capture({0: sites.dense[0].module})
    with torch.no_grad():
        reference = dense(IDS).logits
        with ablate(dense, ComponentSet.from_indices({"neuron": {0: range(sites.dense[0].width)}}, sites)):
            changed = dense(IDS).logits
    for handle in handles:
        handle.remove()
    assert torch.all(store[0] == 0)
    assert (changed - reference).abs().max() > 1e-3


@pytest.mark.parametrize("implementation", ["eager", "grouped_mm"])
def test_expert_neurons_are_deactivated_exactly_and_restored(implementation):
    model = tiny_moe("mixtral", implementation=implementation)
    sites = model_sites(model)
    site = sites.moe[1]
    before, hooks = snapshot(model), hook_count(model)
    clean = experts_io(site, model, IDS)
    pairs = [(0, 3), (0, 4), (5, 0), (7, 23)]
    with ablate(model, ComponentSet.from_indices({"expert_neuron": {1: pairs}}, sites)):
        ablated = experts_io(site, model, IDS)
        hidden, index, weights = ablated["args"]
        assert torch.equal(hidden, clean["args"][0])  # layer 0 is untouched, so layer 1's input is the same
        expected = manual_experts(site.experts, hidden, index, weights, dict.fromkeys(pairs, 0.0))
    with torch.no_grad():
        assert torch.allclose(ablated["output"], expected, atol=1e-4, rtol=1e-5)
        assert torch.allclose(clean["output"], manual_experts(site.experts, hidden, index, weights), atol=1e-4,
                              rtol=1e-5)
    assert not torch.allclose(ablated["output"], clean["output"])
    assert_same_state(model, before)
    assert hook_count(model) == hooks


def test_expert_neuron_weights_restored_after_an_error(mixtral):
    sites = model_sites(mixtral)
    before = snapshot(mixtral)
    with pytest.raises(ValueError), ablate(mixtral, ComponentSet.from_indices({"expert_neuron": {0: [(1, 1)]}}, sites)):
        assert mixtral.model.layers[0].mlp.experts.down_proj[1, :, 1].abs().sum() == 0
        raise ValueError("boom")
    assert_same_state(mixtral, before)


def test_renormalize_drops_removed_experts_and_keeps_each_tokens_total(mixtral):
    sites = model_sites(mixtral)
    site = sites.moe[0]
    clean = experts_io(site, mixtral, IDS)
    _, index, weights = clean["args"]
    removed = [int(index[0, 0]), int(index[3, 1])]
    with ablate(mixtral, ComponentSet.from_indices({"expert": {0: removed}}, sites)) as stats:
        got = experts_io(site, mixtral, IDS)
    _, new_index, new_weights = got["args"]
    assert torch.equal(new_index, index)
    hit = torch.isin(index, torch.tensor(removed))
    assert torch.all(new_weights[hit] == 0)
    rows = hit.any(dim=1)
    assert torch.equal(new_weights[~rows], weights[~rows])  # tokens that kept their experts are untouched
    partial = rows & ~hit.all(dim=1)
    assert torch.allclose(new_weights[partial].sum(1), weights[partial].sum(1))
    assert stats.removed_slots == int(hit.sum()) and stats.routed_slots == index.numel()


def test_renormalized_function():
    w = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.2, 0.1]])
    removed = torch.tensor([[True, False], [False, False], [True, True]])
    assert torch.allclose(renormalized(w, removed), torch.tensor([[0.0, 1.0], [0.7, 0.3], [0.0, 0.0]]))


def test_next_best_routes_to_the_best_remaining_experts(mixtral):
    sites = model_sites(mixtral)
    site = sites.moe[0]
    logits = {}
    handle = site.router.register_forward_hook(lambda m, a, out: logits.__setitem__("x", out[0].detach().clone()))
    clean = experts_io(site, mixtral, IDS)
    handle.remove()
    removed = sorted({int(clean["args"][1][0, 0]), int(clean["args"][1][1, 0])})
    with ablate(mixtral, ComponentSet.from_indices({"expert": {0: removed}}, sites), expert_removal="next-best") as stats:
        got = experts_io(site, mixtral, IDS)
        assert "forward" in site.router.__dict__
    _, index, weights = got["args"]
    assert not torch.isin(index, torch.tensor(removed)).any()
    probs = torch.softmax(logits["x"].float(), dim=-1)
    probs[:, removed] = float("-inf")
    top, expected = torch.topk(probs, 2, dim=-1)
    assert torch.equal(index, expected)
    assert torch.allclose(weights, top / top.sum(-1, keepdim=True))
    assert stats.fallback_tokens == 0
    assert shadowed_forwards(mixtral) == 0  # the router's own forward is back


def test_next_best_refused_when_fewer_than_k_experts_remain(mixtral):
    sites = model_sites(mixtral)
    ablation = ComponentSet.from_indices({"expert": {0: list(range(7))}}, sites)
    with pytest.raises(SparcomError, match="fewer than top-k"):
        check_ablation(ablation, sites, "next-best")
    check_ablation(ablation, sites, "renormalize")


def test_next_best_refused_for_a_router_without_topk():
    model = tiny_moe("phimoe")
    sites = model_sites(model)
    before = snapshot(model)
    with pytest.raises(SparcomError, match="renormalize"), torch.no_grad(), \
            ablate(model, ComponentSet.from_indices({"expert": {0: [1]}}, sites), expert_removal="next-best"):
        model(IDS)
    assert shadowed_forwards(model) == 0
    assert_same_state(model, before)


def test_moe_model_with_shared_and_dense_layers(qwen_moe):
    sites = model_sites(qwen_moe)
    assert sorted(sites.moe) == [0, 2] and sorted(sites.dense) == [1] and sorted(sites.shared) == [0, 2]
    before, hooks = snapshot(qwen_moe), hook_count(qwen_moe)
    store, handles = capture({0: sites.shared[0].module})
    with torch.no_grad():
        reference = qwen_moe(IDS).logits
    clean = store[0]
    ablation = ComponentSet.from_indices({"shared_neuron": {0: [2, 9]}, "neuron": {1: [0, 39]},
                                      "expert": {0: [1], 2: [3, 4]}, "expert_neuron": {2: [(0, 0), (6, 15)]}}, sites)
    for mode in ("renormalize", "next-best"):
        with ablate(qwen_moe, ablation, expert_removal=mode), torch.no_grad():
            changed = qwen_moe(IDS).logits
        assert not torch.allclose(changed, reference)
        assert torch.all(store[0][..., [2, 9]] == 0)
        keep = [i for i in range(sites.shared[0].width) if i not in (2, 9)]
        assert torch.equal(store[0][..., keep], clean[..., keep])
    for handle in handles:
        handle.remove()
    assert_same_state(qwen_moe, before)
    assert hook_count(qwen_moe) == hooks and shadowed_forwards(qwen_moe) == 0
    with torch.no_grad():
        assert torch.equal(qwen_moe(IDS).logits, reference)


def test_moe_ablating_nothing_changes_nothing(qwen_moe):
    sites = model_sites(qwen_moe)
    with torch.no_grad():
        reference = qwen_moe(IDS).logits
        empty = ComponentSet.from_indices({"expert": {0: []}, "expert_neuron": {2: []}, "shared_neuron": {0: []}}, sites)
        for mode in ("renormalize", "next-best"):
            with ablate(qwen_moe, empty, expert_removal=mode):
                assert torch.equal(qwen_moe(IDS).logits, reference)


def test_ablations_that_do_not_fit_the_model_are_refused(qwen_moe):
    sites = model_sites(qwen_moe)
    with pytest.raises(SparcomError, match="has no neuron"):
        ComponentSet.from_indices({"neuron": {0: [1]}}, sites)  # layer 0 is a MoE layer
    wrong = ComponentSet({"neuron": {1: np.array([1])}}, {"neuron": {1: (41,)}})
    with pytest.raises(SparcomError, match="shape"):
        check_ablation(wrong, sites)
    out_of_range = ComponentSet({"expert": {0: np.array([8])}}, {"expert": {0: (8,)}})
    with pytest.raises(SparcomError, match="out of range"):
        check_ablation(out_of_range, sites)
    with pytest.raises(SparcomError, match="expert removal"):
        check_ablation(ComponentSet({}, {}), sites, "drop")
