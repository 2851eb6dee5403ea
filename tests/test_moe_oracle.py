"""MoE counts equal an independent reference, exactly: every family, every experts implementation, every scope."""

import warnings

import numpy as np
import pytest
import torch
from moe_oracle import moe_layers, reference_moe_counts, router_logit_topk_counts
from moe_tiny import MOE_FAMILIES, tiny_moe_model
from tiny import tiny_tokenizer

from sparcom import ProfileSettings, profile, wrap_model
from sparcom.profile.hooks import ExpertCounter

SCOPES = ["instruction", "prompt", "response", "all"]
PLAIN_TOPK = ["flex_olmo", "gpt_oss", "granitemoe", "minimax", "mixtral", "olmoe", "qwen2_moe", "qwen3_moe",
              "qwen3_next"]


def assert_same_counts(engine: dict, reference: dict) -> None:
    engine_keys = {k for k in engine if not k.startswith("bootstrap/")}
    assert engine_keys == set(reference)
    for key in sorted(reference):
        np.testing.assert_array_equal(engine[key], reference[key], err_msg=key)


def run(model, dataset, out, **settings):
    settings = {"batch_size": 1, **settings}
    return profile(wrap_model(model, tiny_tokenizer()), dataset, out, ProfileSettings(**settings), progress=False)


@pytest.mark.parametrize("model_type", MOE_FAMILIES)
def test_family_matches_reference(model_type, dataset, tmp_path):
    """Default experts implementation (grouped_mm), expert neurons captured; scopes rotate over the families."""
    model = tiny_moe_model(model_type)
    scope = SCOPES[MOE_FAMILIES.index(model_type) % len(SCOPES)]
    result = run(model, dataset, tmp_path / "run", scope=scope)
    assert_same_counts(result.counts, reference_moe_counts(model, tiny_tokenizer(), dataset, scope))
    moe = result.manifest["model"]["sizes"]["moe"]
    assert moe["moe_layers"] == moe_layers(model)
    assert moe["num_experts"] == 8 and moe["top_k"] == 2
    assert set(result.manifest["expert_neuron_sources"].values()) == {"captured (grouped_mm)"}


@pytest.mark.parametrize("scope", SCOPES)
def test_every_scope_with_dense_shared_and_routed_layers(scope, dataset, tmp_path):
    model = tiny_moe_model("deepseek_v2", seed=1)
    result = run(model, dataset, tmp_path / scope, scope=scope, batch_size=3)
    reference = reference_moe_counts(model, tiny_tokenizer(), dataset, scope)
    assert {k.split("/")[0] for k in reference} == {"tokens", "instructions", "neuron", "shared_neuron", "expert",
                                                    "expert_neuron"}
    assert_same_counts(result.counts, reference)


@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
@pytest.mark.parametrize("model_type", ["gpt_oss", "qwen2_moe", "deepseek_v3"])
def test_every_experts_implementation_matches_reference(model_type, implementation, dataset, tmp_path):
    model = tiny_moe_model(model_type, experts_implementation=implementation)
    reference = reference_moe_counts(model, tiny_tokenizer(), dataset, "all")
    captured = run(model, dataset, tmp_path / "auto", scope="all", batch_size=4)
    assert set(captured.manifest["expert_neuron_sources"].values()) == {f"captured ({implementation})"}
    assert_same_counts(captured.counts, reference)
    recomputed = run(model, dataset, tmp_path / "recompute", scope="all", batch_size=4, expert_neurons="recompute")
    assert set(recomputed.manifest["expert_neuron_sources"].values()) == {"recomputed from the expert weights"}
    assert_same_counts(recomputed.counts, reference)


@pytest.mark.parametrize("model_type", PLAIN_TOPK)
def test_plain_topk_expert_counts_equal_router_logits_topk(model_type, dataset, tmp_path):
    model = tiny_moe_model(model_type, seed=2)
    result = run(model, dataset, tmp_path / "run", expert_neurons="off")
    from_logits = router_logit_topk_counts(model, tiny_tokenizer(), dataset, "instruction")
    assert from_logits
    for key, value in from_logits.items():
        np.testing.assert_array_equal(result.counts[key], value, err_msg=key)
    assert not any(k.startswith("expert_neuron/") for k in result.counts)


def test_deepseek_v3_counts_the_routing_actually_used_not_a_topk_of_logits(dataset, tmp_path):
    """Bias-corrected, group-limited routing: a top-k recomputed from the router logits picks other experts."""
    model = tiny_moe_model("deepseek_v3", seed=5)
    with torch.no_grad():
        for layer in moe_layers(model):
            # Favour the experts of the last group so strongly that the choice no longer follows the logits.
            model.model.layers[layer].mlp.gate.e_score_correction_bias.copy_(
                torch.tensor([0, 0, 0, 0, 0, 0, 5.0, 5.0]))
    result = run(model, dataset, tmp_path / "run")
    reference = reference_moe_counts(model, tiny_tokenizer(), dataset, "instruction")
    assert_same_counts(result.counts, reference)
    from_logits = router_logit_topk_counts(model, tiny_tokenizer(), dataset, "instruction")
    wrong = sum(int(np.abs(result.counts[k] - v).sum()) for k, v in from_logits.items())
    assert wrong > 0
    for key in from_logits:
        counts = result.counts[key]
        assert counts[6] == counts[7] == int(result.counts[f"tokens/{key.split('/')[1]}"])  # always chosen


def test_unobservable_implementation_falls_back_to_recomputing(dataset, tmp_path):
    """A kernel that never calls the activation module: counts come from the weights, with a warning."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    def fused_kernel(self, hidden_states, top_k_index, top_k_weights):
        gate, up = torch.einsum("nkoh,nh->nko", self.gate_up_proj[top_k_index], hidden_states).chunk(2, dim=-1)
        out = torch.einsum("nkhi,nki->nkh", self.down_proj[top_k_index], torch.nn.functional.silu(gate) * up)
        return (out * top_k_weights[..., None]).sum(dim=1)

    ALL_EXPERTS_FUNCTIONS["fused_test_kernel"] = fused_kernel
    try:
        model = tiny_moe_model("mixtral", seed=3, experts_implementation="fused_test_kernel")
        with pytest.warns(UserWarning, match="recomputing"):
            result = run(model, dataset, tmp_path / "run", scope="all", batch_size=4)
        reference = reference_moe_counts(model, tiny_tokenizer(), dataset, "all")
    finally:
        del ALL_EXPERTS_FUNCTIONS["fused_test_kernel"]
    assert_same_counts(result.counts, reference)
    for source in result.manifest["expert_neuron_sources"].values():
        assert "cannot be observed" in source


def test_a_wrong_capture_plan_is_caught_and_recounted(dataset, tmp_path, monkeypatch):
    """If the rows of the activation were not in the planned order, verification rejects them."""
    plan = ExpertCounter._plan

    def misplanned(self, module, pending):
        plan(self, module, pending)
        if pending.order is not None:
            pending.order = pending.order.flip(0)

    monkeypatch.setattr(ExpertCounter, "_plan", misplanned)
    model = tiny_moe_model("qwen3_moe", seed=4)
    with pytest.warns(UserWarning, match="differ"):
        result = run(model, dataset, tmp_path / "run", scope="all", batch_size=4)
    assert_same_counts(result.counts, reference_moe_counts(model, tiny_tokenizer(), dataset, "all"))


def test_capture_and_recompute_agree_in_bfloat16(dataset, tmp_path):
    model = tiny_moe_model("mixtral", seed=6).to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: bf16 kernels still verify
        captured = run(model, dataset, tmp_path / "a", scope="all", batch_size=4)
    recomputed = run(model, dataset, tmp_path / "b", scope="all", batch_size=4, expert_neurons="recompute")
    keys = [k for k in captured.counts if k.startswith("expert_neuron/")]
    differ = sum(int(np.abs(captured.counts[k] - recomputed.counts[k]).sum()) for k in keys)
    total = sum(int(captured.counts[k].sum()) for k in keys)
    assert total > 0 and differ / total < 1e-3  # bf16 rounding of different kernels near zero only
    for key in captured.counts:
        if key.startswith("expert/"):
            assert np.array_equal(captured.counts[key], recomputed.counts[key]), key


@pytest.mark.parametrize("expert_neurons", ["auto", "recompute"])
@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
def test_activation_sums_match_reference(implementation, expert_neurons, dataset, tmp_path):
    """Σ A and Σ |A| of dense, shared-expert and expert neurons (over the counted tokens routed to each expert)
    equal the full-activation reference, captured or recomputed, for every experts implementation."""
    from test_profile_oracle import assert_same_sums

    model = tiny_moe_model("deepseek_v2", seed=1, experts_implementation=implementation)
    reference: dict = {}
    reference_moe_counts(model, tiny_tokenizer(), dataset, "all", sums=reference)
    assert {k.split("/")[1] for k in reference} == {"neuron", "shared_neuron", "expert_neuron"}
    result = run(model, dataset, tmp_path / "run", scope="all", batch_size=3, expert_neurons=expert_neurons)
    assert_same_sums(result.sums, reference, rtol=1e-5)
