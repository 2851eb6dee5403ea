"""The family table: one declarative entry per model family naming every site sparcom counts and intervenes on.

An entry gives dotted attribute paths from a ``*ForCausalLM`` model to its decoder stack and, inside each decoder
layer, to the MLP activation module (its output is A = f(gate(x)), DESIGN §1), to the module whose output width is
the number of neurons, and for Mixture-of-Experts families to the routed experts module (the transformers 5 form:
``forward(hidden_states, top_k_index, top_k_weights)``), its router and the shared expert. Nothing is guessed from
names or weight shapes: :func:`sparcom.models.sites.model_sites` builds the one site map of a model from its entry
and refuses a model whose entry does not fit, naming the missing path. Adding a family is one entry in
:data:`DENSE_FAMILIES` or :data:`MOE_FAMILIES` (MoE), plus a tiny config in the tests' family lists.

A decoder layer holding the experts module is a MoE layer; any other layer is dense and counted through
``activation`` — which covers DeepSeek's first dense layers and Qwen-MoE's ``mlp_only_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.errors import SparcomError


@dataclass(frozen=True)
class Family:
    """Where things are inside a ``*ForCausalLM`` model of one family (dotted attribute paths)."""

    name: str
    model_types: tuple[str, ...]
    #: From the causal-LM object to the bare decoder stack (run without the LM head while profiling).
    backbone: str
    #: From the backbone to the list of decoder layers.
    layers: str
    #: From a decoder layer to the activation module whose output is A (post-activation, pre up-projection).
    activation: str
    #: From a decoder layer to the projection whose output width is the number of MLP neurons.
    width_from: str
    #: Gated MLP with gate and up fused into one projection (Phi-3): the width is half the fused output.
    fused_gate_up: bool = False
    notes: str = ""
    #: MoE: from a decoder layer to the routed experts module (layers without it are dense).
    experts: str | None = None
    #: MoE: from a decoder layer to the router, which returns (router_logits, top_k_weights, top_k_index).
    router: str | None = None
    #: MoE: how an expert neuron's activation follows from its gate projection (a key of
    #: :data:`sparcom.models.moe.EXPERT_ACTIVATIONS`).
    expert_activation_rule: str = "act_fn"
    #: MoE: from a decoder layer to the shared expert's activation module and to its width projection.
    shared_activation: str | None = None
    shared_width_from: str | None = None
    shared_fused_gate_up: bool = False
    #: MoE: the config attribute holding the number of experts per token (when the router has no ``top_k``).
    top_k_config: str = "num_experts_per_tok"

    @property
    def is_moe(self) -> bool:
        return self.experts is not None


_GATED = dict(backbone="model", layers="layers", activation="mlp.act_fn", width_from="mlp.gate_proj")

DENSE_FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",), **_GATED, notes="SiLU gated MLP"),
    Family("mistral", ("mistral",), **_GATED),
    Family("qwen2", ("qwen2",), **_GATED),
    Family("qwen3", ("qwen3",), **_GATED),
    Family("gemma", ("gemma",), **_GATED, notes="GELU gated MLP"),
    Family("gemma2", ("gemma2",), **_GATED, notes="GELU-tanh gated MLP"),
    Family("gemma3", ("gemma3_text",), **_GATED, notes="GELU-tanh gated MLP (text model)"),
    Family("olmo2", ("olmo", "olmo2"), **_GATED),
    Family("granite", ("granite",), **_GATED),
    Family("smollm3", ("smollm3",), **_GATED),
    Family(
        "phi3", ("phi3",), backbone="model", layers="layers", activation="mlp.activation_fn",
        width_from="mlp.gate_up_proj", fused_gate_up=True, notes="gate and up fused in gate_up_proj",
    ),
    Family(
        "gpt2", ("gpt2",), backbone="transformer", layers="h", activation="mlp.act", width_from="mlp.c_fc",
        notes="plain MLP, Conv1D fc_in",
    ),
    Family(
        "gpt_neox", ("gpt_neox",), backbone="gpt_neox", layers="layers", activation="mlp.act",
        width_from="mlp.dense_h_to_4h", notes="plain GELU MLP",
    ),
    Family(
        "opt", ("opt",), backbone="model.decoder", layers="layers", activation="activation_fn", width_from="fc1",
        notes="plain ReLU MLP inside the decoder layer",
    ),
)

_MOE = dict(_GATED, experts="mlp.experts", router="mlp.gate")
_SHARED_EXPERT = dict(_MOE, shared_activation="mlp.shared_expert.act_fn",
                      shared_width_from="mlp.shared_expert.gate_proj")
_SHARED_EXPERTS = dict(_MOE, shared_activation="mlp.shared_experts.act_fn",
                       shared_width_from="mlp.shared_experts.gate_proj")

MOE_FAMILIES: tuple[Family, ...] = (
    Family("mixtral", ("mixtral",), **_MOE, notes="top-2 of 8 SiLU experts"),
    Family("qwen2_moe", ("qwen2_moe",), **_SHARED_EXPERT,
           notes="gated shared expert; dense layers from mlp_only_layers / decoder_sparse_step"),
    Family("qwen3_moe", ("qwen3_moe",), **_MOE, notes="dense layers from mlp_only_layers / decoder_sparse_step"),
    Family("qwen3_next", ("qwen3_next",), **_SHARED_EXPERT, notes="hybrid linear attention, shared expert"),
    Family("olmoe", ("olmoe",), **_MOE),
    Family("flex_olmo", ("flex_olmo",), **_MOE),
    Family("granitemoe", ("granitemoe",),
           **dict(_MOE, experts="block_sparse_moe.experts", router="block_sparse_moe.router")),
    Family("granitemoeshared", ("granitemoeshared",),
           **dict(_MOE, experts="block_sparse_moe.experts", router="block_sparse_moe.router",
                  shared_activation="shared_mlp.activation", shared_width_from="shared_mlp.input_linear",
                  shared_fused_gate_up=True),
           notes="shared MLP beside the experts, gate and up fused"),
    Family("deepseek_v2", ("deepseek_v2",), **_SHARED_EXPERTS,
           notes="greedy or group-limited routing; first_k_dense_replace dense layers"),
    Family("deepseek_v3", ("deepseek_v3",), **_SHARED_EXPERTS,
           notes="sigmoid, bias-corrected, group-limited routing; first_k_dense_replace dense layers"),
    Family("glm4_moe", ("glm4_moe",), **_SHARED_EXPERTS, notes="DeepSeek-V3-style routing"),
    Family("dots1", ("dots1",), **_SHARED_EXPERTS, notes="DeepSeek-V3-style routing"),
    Family("exaone_moe", ("exaone_moe",), **_SHARED_EXPERTS),
    Family("ernie4_5_moe", ("ernie4_5_moe",), **_SHARED_EXPERTS, notes="shared experts optional"),
    Family("hunyuan_v1_moe", ("hunyuan_v1_moe",),
           **dict(_MOE, shared_activation="mlp.shared_mlp.act_fn", shared_width_from="mlp.shared_mlp.gate_proj")),
    Family("phimoe", ("phimoe",), **dict(_MOE, router="mlp.router"), notes="sparsemixer top-2 routing"),
    Family("minimax", ("minimax",), **_MOE, notes="hybrid lightning attention"),
    Family("gpt_oss", ("gpt_oss",), **dict(_MOE, router="mlp.router"), expert_activation_rule="clamped_swiglu",
           notes="interleaved, transposed gate_up with bias; clamped SwiGLU"),
)

#: Every family sparcom supports, dense first.
FAMILIES: tuple[Family, ...] = DENSE_FAMILIES + MOE_FAMILIES

_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}

HOW_TO_ADD = (
    "add a Family entry in sparcom/models/families.py naming the decoder layers, the MLP activation module and, "
    "for a Mixture-of-Experts family, its experts module, router and shared expert"
)


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(model_type: str) -> Family:
    """The family entry of a ``config.model_type``; a clear error for families sparcom does not know."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise SparcomError(
            f"unsupported architecture {model_type!r}: sparcom supports {', '.join(supported_model_types())}; "
            f"to add one, {HOW_TO_ADD}"
        ) from None
