"""One declarative entry per model family: where the decoder layers are and where each MLP's activation lives.

The engine hooks the activation module itself, so the counted value is exactly A = f(gate(x)) (DESIGN §1)
whatever the activation function is; no family needs its own code path. Adding a family is adding an entry
to :data:`FAMILIES` (and a tiny config to the tests' family list).

Mixture-of-Experts families also name their routed experts module (the transformers 5 form whose forward takes
``(hidden_states, top_k_index, top_k_weights)``) and, where they have one, the shared expert. Each decoder layer
is classified by what it holds: a layer with the experts module is a MoE layer (``expert``, ``expert_neuron`` and,
with a shared expert, ``shared_neuron`` counts); any other layer is dense and counted through ``activation``
(``neuron`` counts) — which covers DeepSeek's first dense layers and Qwen-MoE's ``mlp_only_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sparcom.errors import SparcomError


@dataclass(frozen=True)
class FamilyAdapter:
    """Where things are inside a ``*ForCausalLM`` model of one family (dotted attribute paths)."""

    name: str
    model_types: tuple[str, ...]
    #: From the causal-LM object to the bare decoder stack (run without the LM head while profiling).
    backbone: str
    #: From the backbone to the list of decoder layers.
    layers: str
    #: From a decoder layer to the activation module whose output is A (post-activation, pre up-projection).
    activation: str
    #: From a decoder layer to the module whose output width is the number of MLP neurons (for sizes).
    gate_width: str
    #: Gated MLP with gate and up fused into one projection (Phi-3): the width is half the fused output.
    fused_gate_up: bool = False
    notes: str = ""
    #: MoE: from a decoder layer to the routed experts module (layers without it are dense).
    experts: str | None = None
    #: MoE: how an expert neuron's activation follows from its gate projection (sparcom.models.moe.EXPERT_ACTIVATIONS).
    expert_activation: str = "act_fn"
    #: MoE: from a decoder layer to the shared expert's activation module and its gate projection (for the width).
    shared_activation: str | None = None
    shared_width: str | None = None
    shared_fused_gate_up: bool = False
    #: MoE: the config attribute holding the number of experts each token is routed to.
    top_k: str = "num_experts_per_tok"

    @property
    def is_moe(self) -> bool:
        return self.experts is not None


_GATED = dict(backbone="model", layers="layers", activation="mlp.act_fn", gate_width="mlp.gate_proj")

FAMILIES: tuple[FamilyAdapter, ...] = (
    FamilyAdapter("llama", ("llama",), **_GATED, notes="SiLU gated MLP"),
    FamilyAdapter("mistral", ("mistral",), **_GATED),
    FamilyAdapter("qwen2", ("qwen2",), **_GATED),
    FamilyAdapter("qwen3", ("qwen3",), **_GATED),
    FamilyAdapter("gemma", ("gemma",), **_GATED, notes="GELU gated MLP"),
    FamilyAdapter("gemma2", ("gemma2",), **_GATED, notes="GELU-tanh gated MLP"),
    FamilyAdapter("gemma3", ("gemma3_text",), **_GATED, notes="GELU-tanh gated MLP (text model)"),
    FamilyAdapter("olmo2", ("olmo", "olmo2"), **_GATED),
    FamilyAdapter("granite", ("granite",), **_GATED),
    FamilyAdapter("smollm3", ("smollm3",), **_GATED),
    FamilyAdapter(
        "phi3", ("phi3",), backbone="model", layers="layers", activation="mlp.activation_fn",
        gate_width="mlp.gate_up_proj", fused_gate_up=True, notes="gate and up fused in gate_up_proj",
    ),
    FamilyAdapter(
        "gpt2", ("gpt2",), backbone="transformer", layers="h", activation="mlp.act", gate_width="mlp.c_fc",
        notes="plain MLP, Conv1D fc_in",
    ),
    FamilyAdapter(
        "gpt_neox", ("gpt_neox",), backbone="gpt_neox", layers="layers", activation="mlp.act",
        gate_width="mlp.dense_h_to_4h", notes="plain GELU MLP",
    ),
    FamilyAdapter(
        "opt", ("opt",), backbone="model.decoder", layers="layers", activation="activation_fn", gate_width="fc1",
        notes="plain ReLU MLP inside the decoder layer",
    ),
)

_MOE = dict(_GATED, experts="mlp.experts")
_SHARED_EXPERT = dict(_MOE, shared_activation="mlp.shared_expert.act_fn", shared_width="mlp.shared_expert.gate_proj")
_SHARED_EXPERTS = dict(_MOE, shared_activation="mlp.shared_experts.act_fn",
                       shared_width="mlp.shared_experts.gate_proj")

MOE_FAMILIES: tuple[FamilyAdapter, ...] = (
    FamilyAdapter("mixtral", ("mixtral",), **_MOE, notes="top-2 of 8 SiLU experts"),
    FamilyAdapter("qwen2_moe", ("qwen2_moe",), **_SHARED_EXPERT,
                  notes="gated shared expert; dense layers from mlp_only_layers / decoder_sparse_step"),
    FamilyAdapter("qwen3_moe", ("qwen3_moe",), **_MOE, notes="dense layers from mlp_only_layers / decoder_sparse_step"),
    FamilyAdapter("qwen3_next", ("qwen3_next",), **_SHARED_EXPERT, notes="hybrid linear attention, shared expert"),
    FamilyAdapter("olmoe", ("olmoe",), **_MOE),
    FamilyAdapter("flex_olmo", ("flex_olmo",), **_MOE),
    FamilyAdapter("granitemoe", ("granitemoe",), **dict(_MOE, experts="block_sparse_moe.experts")),
    FamilyAdapter("granitemoeshared", ("granitemoeshared",),
                  **dict(_MOE, experts="block_sparse_moe.experts", shared_activation="shared_mlp.activation",
                         shared_width="shared_mlp.input_linear", shared_fused_gate_up=True),
                  notes="shared MLP beside the experts, gate and up fused"),
    FamilyAdapter("deepseek_v2", ("deepseek_v2",), **_SHARED_EXPERTS,
                  notes="greedy or group-limited routing; first_k_dense_replace dense layers"),
    FamilyAdapter("deepseek_v3", ("deepseek_v3",), **_SHARED_EXPERTS,
                  notes="sigmoid, bias-corrected, group-limited routing; first_k_dense_replace dense layers"),
    FamilyAdapter("glm4_moe", ("glm4_moe",), **_SHARED_EXPERTS, notes="DeepSeek-V3-style routing"),
    FamilyAdapter("dots1", ("dots1",), **_SHARED_EXPERTS, notes="DeepSeek-V3-style routing"),
    FamilyAdapter("exaone_moe", ("exaone_moe",), **_SHARED_EXPERTS),
    FamilyAdapter("ernie4_5_moe", ("ernie4_5_moe",), **_SHARED_EXPERTS, notes="shared experts optional"),
    FamilyAdapter("hunyuan_v1_moe", ("hunyuan_v1_moe",),
                  **dict(_MOE, shared_activation="mlp.shared_mlp.act_fn", shared_width="mlp.shared_mlp.gate_proj")),
    FamilyAdapter("phimoe", ("phimoe",), **_MOE, notes="sparsemixer top-2 routing"),
    FamilyAdapter("minimax", ("minimax",), **_MOE, notes="hybrid lightning attention"),
    FamilyAdapter("gpt_oss", ("gpt_oss",), **_MOE, expert_activation="clamped_swiglu",
                  notes="interleaved, transposed gate_up with bias; clamped SwiGLU"),
)

FAMILIES = FAMILIES + MOE_FAMILIES

_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}

HOW_TO_ADD = (
    "add a FamilyAdapter entry in sparcom/models/adapters.py naming the decoder layers and the MLP activation module"
)


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of a ``config.model_type``; a clear error for families sparcom does not know."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise SparcomError(
            f"unsupported architecture {model_type!r}: sparcom supports {', '.join(supported_model_types())}; "
            f"to add one, {HOW_TO_ADD}"
        ) from None


def get_path(root: nn.Module, dotted: str) -> nn.Module:
    """Follow a dotted attribute path ("model.layers") from ``root``."""
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def width_of(module: nn.Module) -> int:
    """Output width of a Linear or GPT-2 Conv1D projection."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):  # transformers.pytorch_utils.Conv1D
        return int(module.nf)
    weight = getattr(module, "weight", None)
    if weight is None:
        raise SparcomError(f"cannot read the width of {type(module).__name__}; {HOW_TO_ADD}")
    return int(weight.shape[0])


def find_path(root: nn.Module, dotted: str | None) -> nn.Module | None:
    """Like :func:`get_path`, but None when the path is absent or leads to None (e.g. a dense layer in a MoE model)."""
    if dotted is None:
        return None
    module = root
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module
