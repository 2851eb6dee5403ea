"""The attribution pass's linear estimate against independent computations on tiny random models.

Three independent references, none of which uses the pass's hooks or batching:
- the analytic gradient × (r − A): one unpadded row, the activations captured by a separate hook, the NLL from the
  full logits' log-softmax, the gradient from ``torch.autograd.grad`` — equal up to rounding;
- the finite difference: the row's NLL with one neuron moved a tiny step s towards its replacement
  (A → A + s·(r − A)) by a hook, (NLL(s) − NLL(−s)) / 2s in float64 — equal to the estimate within O(s²);
- the exact ablation: s = 1 is the neuron zeroed, the same number the causal check's ``ablate`` gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from causal_tiny import one_thread  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer

from sparcom.attribution.estimate import Replacement, attributed_sites, batch_effects
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import ScoringPlan, example_nll
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites


def rows() -> list[InstructionRow]:
    return [InstructionRow(f"t-{i:03d}", c, "ai", "tests", ins, text, out, "CC0-1.0")
            for i, (c, ins, text, out) in enumerate(ROWS)]


def row_nll(model, example, edit=None) -> torch.Tensor:
    """Σ −log p over the scored tokens of one unpadded row (float64 log-softmax of the full logits)."""
    ids = torch.tensor([example.input_ids])
    logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    targets = [t for t in range(1, len(example)) if example.scored[t]]
    return -sum(logprobs[t - 1, example.input_ids[t]] for t in targets)


def analytic_effects(model, example, replacement: dict[int, torch.Tensor] | None = None) -> dict[int, np.ndarray]:
    """Per dense layer: Σ_t ∂NLL/∂A_t · (r − A_t) from torch.autograd.grad on the captured activations (the model's
    parameters keep requiring gradients, so every activation is in the graph as the model computes it)."""
    sites = model_sites(model)
    captured: dict[int, torch.Tensor] = {}

    def capture(layer):
        def hook(module, args, output):
            captured[layer] = output
        return hook

    handles = [site.module.register_forward_hook(capture(j)) for j, site in sites.dense.items()]
    try:
        with torch.enable_grad():
            nll = row_nll(model, example)
            layers = sorted(captured)
            grads = torch.autograd.grad(nll, [captured[j] for j in layers])
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for j, grad in zip(layers, grads, strict=True):
        a = captured[j].detach()[0].double()
        r = replacement[j].double() if replacement else torch.zeros(a.shape[-1], dtype=torch.float64)
        out[j] = (grad[0].double() * (r - a)).sum(0).numpy()
    return out


def moved_nll(model, example, layer: int, neuron: int, step: float, target: float = 0.0) -> float:
    """The row's NLL with neuron ``neuron`` of ``layer`` moved ``step`` of the way to ``target`` at every position."""
    site = model_sites(model).dense[layer]

    def hook(module, args, output):
        output = output.clone()
        output[..., neuron] = output[..., neuron] + step * (target - output[..., neuron])
        return output

    handle = site.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return float(row_nll(model, example))
    finally:
        handle.remove()


def pass_effects(model, examples, batch_size: int, replacement=None):
    """The attribution pass over ``examples`` in batches: per example, per layer [I]."""
    sites = attributed_sites(model_sites(model))
    plan = length_batches([len(e) for e in examples], batch_size)
    scoring = ScoringPlan.build(examples, plan, pad_id=0)
    per_example: dict[int, dict[int, np.ndarray]] = {}
    nll = np.zeros(len(examples))
    for batch in scoring.batches:
        found = batch_effects(model, sites, batch, replacement or Replacement())
        for row, index in enumerate(batch.rows):
            per_example[index] = {layer: found.effects[("neuron", layer)][row].numpy() for (_, layer) in sites}
            nll[index] = float(found.nll[row])
    return per_example, nll


@pytest.fixture(scope="module")
def examples():
    return encode_scored(rows(), tiny_tokenizer(), "chat")


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_estimate_equals_the_analytic_gradient_times_delta(examples, family, batch_size):
    model = tiny_model(family)
    found, nll = pass_effects(model, examples, batch_size)
    direct, _counts = example_nll(model, examples, length_batches([len(e) for e in examples], 3), pad_id=0)
    assert nll == pytest.approx(direct, rel=1e-5, abs=1e-4)  # the pass's loss is the causal check's NLL
    for index, example in enumerate(examples):
        reference = analytic_effects(model, example)
        for layer, values in reference.items():
            scale = np.abs(values).max()
            assert np.abs(found[index][layer] - values).max() <= 1e-4 * scale + 1e-6, (family, index, layer)
    assert any(np.abs(v).max() > 0 for effects in found.values() for v in effects.values())


def test_estimate_matches_the_analytic_gradient_to_rounding_in_float64(examples):
    model = tiny_model("gpt2").double()
    found, _ = pass_effects(model, examples, 5)
    for index in (0, 4, 11):
        for layer, values in analytic_effects(model, examples[index]).items():
            assert np.allclose(found[index][layer], values, rtol=1e-9, atol=1e-12)


def test_estimate_is_the_derivative_of_a_tiny_move_towards_the_replacement(examples):
    """gpt2 in float64 computes in float64 throughout, so a central difference with a tiny step is exact to ~1e-9
    (llama's RMSNorm computes in float32 whatever the model's dtype: its NLL carries float32 noise)."""
    model = tiny_model("gpt2").double()
    step, tolerance = 1e-5, 1e-6
    found, _ = pass_effects(model, examples, 4)
    rng = np.random.default_rng(0)
    checked = 0
    for index in (0, 3, 10):
        example = examples[index]
        for layer in (0, 1):
            for neuron in rng.choice(found[index][layer].size, size=4, replace=False):
                up = moved_nll(model, example, layer, int(neuron), step)
                down = moved_nll(model, example, layer, int(neuron), -step)
                difference = (up - down) / (2 * step)
                estimate = found[index][layer][neuron]
                assert estimate == pytest.approx(difference, rel=tolerance, abs=1e-8), (index, layer, neuron)
                checked += 1
    assert checked == 24


def test_mean_replacement_moves_towards_the_mean(examples):
    model = tiny_model("gpt2").double()
    generator = torch.Generator().manual_seed(3)
    means = {j: torch.rand(48, generator=generator, dtype=torch.float64) for j in (0, 1)}
    replacement = Replacement.mean({("neuron", j): v.numpy() for j, v in means.items()})
    found, _ = pass_effects(model, examples, 4, replacement)
    example = examples[5]
    reference = analytic_effects(model, example, means)
    for layer in (0, 1):
        assert np.allclose(found[5][layer], reference[layer], rtol=1e-9, atol=1e-12)
        neuron = 7
        step = 1e-5
        target = float(means[layer][neuron])
        difference = (moved_nll(model, example, layer, neuron, step, target)
                      - moved_nll(model, example, layer, neuron, -step, target)) / (2 * step)
        assert found[5][layer][neuron] == pytest.approx(difference, rel=1e-5, abs=1e-8)


def test_full_step_is_the_causal_checks_zero_ablation(examples):
    """The finite-difference hook at s = 1 is the deactivation the causal check makes (so the references agree)."""
    model = tiny_model("llama")
    example = examples[2]
    sites = model_sites(model)
    base = float(row_nll(model, example).detach())
    zeroed = moved_nll(model, example, 1, 5, 1.0)
    mask = np.zeros(sites.shape("neuron", 1), dtype=bool)
    mask[5] = True
    with ablate(model, ComponentSet.from_layer_masks({"neuron": {1: mask}})), torch.no_grad():
        ablated = float(row_nll(model, example))
    assert ablated == pytest.approx(zeroed, rel=1e-6)
    assert ablated != pytest.approx(base, rel=1e-9)


def test_parameters_are_restored_and_nothing_stays_hooked(examples):
    model = tiny_model("llama")
    before = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    pass_effects(model, examples[:3], 2)
    assert [p.requires_grad for p in model.parameters()] == before
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_bad_replacements_are_refused():
    with pytest.raises(SparcomError, match="unknown replacement"):
        Replacement("resample")
    sites = attributed_sites(model_sites(tiny_model("llama")))
    with pytest.raises(SparcomError, match="needs 48 mean activations"):
        Replacement.mean({("neuron", 0): np.zeros(48)}).check(sites)
    with pytest.raises(SparcomError, match="cannot be attributed yet"):
        attributed_sites(model_sites(tiny_model("llama")), ("bogus",))


# ----------------------------------------------------------------------------------------------- routed experts


def removed_weights(weights: torch.Tensor, index: torch.Tensor, expert: int) -> torch.Tensor:
    """Each token's top-k weights after removing ``expert``: its slot 0, the others scaled back to the total."""
    out = weights.clone()
    for t in range(weights.shape[0]):
        hit = index[t] == expert
        if not bool(hit.any()):
            continue
        total, kept = weights[t].sum(), weights[t][~hit].sum()
        out[t] = torch.where(hit, torch.zeros_like(weights[t]), weights[t] * (total / kept if kept != 0 else 0.0))
    return out


def expert_move_nll(model, example, layer: int, expert: int, step: float) -> float:
    """The row's NLL with ``expert``'s removal at ``layer`` applied a fraction ``step`` (a pre-hook on the experts)."""
    experts = model_sites(model).moe[layer].experts

    def pre(module, args, kwargs):
        hidden, index, weights = args[:3] if len(args) >= 3 else (args[0], args[1], kwargs["top_k_weights"])
        moved = weights + step * (removed_weights(weights, index, expert) - weights)
        return (hidden, index, moved, *args[3:]), kwargs if len(args) >= 3 else ((hidden, index), {**kwargs,
                                                                                              "top_k_weights": moved})

    handle = experts.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            return float(row_nll(model, example))
    finally:
        handle.remove()


def analytic_expert_effects(model, example) -> dict[int, np.ndarray]:
    """Per MoE layer [E]: Σ_t Σ_s ∂NLL/∂w_ts · (w'_ts − w_ts) per removed expert, by torch.autograd.grad on the
    captured top-k weights and an explicit per-token renormalisation."""
    sites = model_sites(model)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(layer):
        def pre(module, args, kwargs):
            weights = args[2] if len(args) >= 3 else kwargs["top_k_weights"]
            captured[layer] = (weights, args[1])
        return pre

    handles = [site.experts.register_forward_pre_hook(capture(j), with_kwargs=True) for j, site in sites.moe.items()]
    try:
        with torch.enable_grad():
            nll = row_nll(model, example)
            layers = sorted(captured)
            grads = torch.autograd.grad(nll, [captured[j][0] for j in layers])
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for j, grad in zip(layers, grads, strict=True):
        weights, index = captured[j][0].detach().double(), captured[j][1]
        out[j] = np.array([float((grad.double() * (removed_weights(weights, index, e) - weights)).sum())
                           for e in range(sites.moe[j].num_experts)])
    return out


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_expert_estimates_equal_the_analytic_gradient_times_removal(examples, family):
    from causal_tiny import tiny_moe

    model = tiny_moe(family)
    sites = attributed_sites(model_sites(model))
    assert {kind for kind, _ in sites} == ({"expert", "expert_neuron"} if family == "mixtral"
                                           else {"expert", "expert_neuron", "neuron", "shared_neuron"})
    plan = length_batches([len(e) for e in examples], 4)
    scoring = ScoringPlan.build(examples, plan, pad_id=0)
    for batch in scoring.batches[:2]:
        found = batch_effects(model, sites, batch, Replacement())
        for row, index in enumerate(batch.rows):
            reference = analytic_expert_effects(model, examples[index])
            for layer, values in reference.items():
                got = found.effects[("expert", layer)][row].numpy()
                assert np.abs(got - values).max() <= 1e-4 * np.abs(values).max() + 1e-6, (family, index, layer)
                assert np.abs(values).max() > 0


def test_expert_estimate_is_the_derivative_of_a_partial_removal_and_the_full_one_is_the_checks(examples):
    from causal_tiny import tiny_moe

    model = tiny_moe("mixtral", implementation="eager").double()
    sites = attributed_sites(model_sites(model))
    example = examples[3]
    scoring = ScoringPlan.build([example], [[0]], pad_id=0)
    found = batch_effects(model, sites, scoring.batches[0], Replacement())
    step = 1e-3
    for layer in (0, 1):
        for expert in (0, 3, 6):
            difference = (expert_move_nll(model, example, layer, expert, step)
                          - expert_move_nll(model, example, layer, expert, -step)) / (2 * step)
            # RMSNorm computes in float32 whatever the dtype: the NLL carries float32 noise (a few 1e-6)
            assert found.effects[("expert", layer)][0, expert].item() == pytest.approx(difference, rel=2e-3, abs=2e-3)
    removed = expert_move_nll(model, example, 1, 3, 1.0)
    mask = np.zeros(8, dtype=bool)
    mask[3] = True
    with ablate(model, ComponentSet.from_layer_masks({"expert": {1: mask}})), torch.no_grad():
        assert float(row_nll(model, example)) == pytest.approx(removed, rel=1e-6)


# ----------------------------------------------------------------------------------------------- expert neurons

def analytic_expert_neuron_effects(model, example, means: dict[int, torch.Tensor] | None = None
                                   ) -> dict[int, np.ndarray]:
    """Per MoE layer [E, I]: Σ over the (token, slot) pairs routed to e of ∂NLL/∂A · (r − A), with every expert
    computed by hand token by token (Mixtral layout) so that each pair's A is its own tensor in the graph —
    nothing of the experts implementation's calls or their order is used."""
    sites = model_sites(model)
    activations: dict[int, list] = {}

    def replace(layer):
        def hook(module, args, output):
            hidden, index, weights = args[0], args[1], args[2] if len(args) >= 3 else None
            width = module.down_proj.shape[2]
            out, pairs = torch.zeros_like(hidden), []
            for t in range(hidden.shape[0]):
                for slot in range(index.shape[1]):
                    e = int(index[t, slot])
                    gate, up = torch.nn.functional.linear(hidden[t], module.gate_up_proj[e]).split(width)
                    a = module.act_fn(gate)
                    pairs.append((e, a))
                    out[t] = out[t] + weights[t, slot] * torch.nn.functional.linear(a * up, module.down_proj[e])
            activations[layer] = pairs
            return out
        return hook

    handles = [site.experts.register_forward_hook(replace(j)) for j, site in sites.moe.items()]
    try:
        with torch.enable_grad():
            nll = row_nll(model, example)
            layers = sorted(activations)
            tensors = [a for j in layers for _, a in activations[j]]
            grads = iter(torch.autograd.grad(nll, tensors))
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for j in layers:
        site = sites.moe[j]
        total = np.zeros((site.num_experts, site.layout.width))
        for e, a in activations[j]:
            r = means[j][e].double() if means else torch.zeros(a.shape[-1], dtype=torch.float64)
            total[e] += (next(grads).double() * (r - a.detach().double())).numpy()
        out[j] = total
    return out


@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
@pytest.mark.parametrize("replacement", ["zero", "mean"])
def test_expert_neuron_estimates_equal_the_gradient_of_each_routed_pair(examples, implementation, replacement):
    from causal_tiny import tiny_moe

    model = tiny_moe("mixtral", implementation=implementation)
    sites = attributed_sites(model_sites(model), ("expert_neuron",))
    rng = np.random.default_rng(4)
    means = {j: torch.tensor(rng.normal(size=(s.num_experts, s.layout.width))) for (_, j), s in sites.items()}
    chosen = Replacement() if replacement == "zero" else Replacement.mean(
        {("expert_neuron", j): m.numpy() for j, m in means.items()})
    chosen.check(sites)
    plan = length_batches([len(e) for e in examples], 4)
    scoring = ScoringPlan.build(examples, plan, pad_id=0)
    for batch in scoring.batches[:2]:
        found = batch_effects(model, sites, batch, chosen)
        for row, index in enumerate(batch.rows):
            reference = analytic_expert_neuron_effects(model, examples[index], means if replacement == "mean" else None)
            for layer, values in reference.items():
                got = found.effects[("expert_neuron", layer)][row].numpy()
                assert got.shape == values.shape
                assert np.abs(got - values).max() <= 1e-4 * np.abs(values).max() + 1e-6, (implementation, index, layer)
                assert (values != 0).sum() > values.shape[1]  # several experts routed, many neurons moved


def test_expert_neuron_mean_values_must_have_the_experts_shape():
    from causal_tiny import tiny_moe

    sites = attributed_sites(model_sites(tiny_moe("mixtral")), ("expert_neuron",))
    with pytest.raises(SparcomError, match=r"needs 8×24 mean activations, found shape \(24,\)"):
        Replacement.mean({("expert_neuron", 0): np.zeros(24), ("expert_neuron", 1): np.zeros(24)}).check(sites)
