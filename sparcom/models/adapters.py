"""One declarative entry per model family: where the decoder layers are and where each MLP's activation lives.

The engine hooks the activation module itself, so the counted value is exactly A = f(gate(x)) (DESIGN §1)
whatever the activation function is; no family needs its own code path. Adding a family is adding an entry
to :data:`FAMILIES` (and a tiny config to the tests' family list).
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
