"""Assembling a MoEfied model: the GraniteMoE (or GraniteMoeShared) model that holds a dense Llama model's weights.

Everything but the MLP is copied unchanged; every MLP becomes, per layer,

- a **shared expert** (GraniteMoeShared's ``shared_mlp``, when the split has shared neurons): the gate/up rows and
  down columns of the shared neurons, which every token uses;
- **routed experts**: expert e holds the gate/up rows and down columns of its neurons (ascending dense order), its
  down slice multiplied by k;
- a **router**: the fitted linear map multiplied by a power of two (:func:`router_scale`).

GraniteMoE's router ranks the raw logits (top-k of ``x @ Wᵀ``) and weights the chosen experts by a softmax over their
logits only. Scaled so that all calibration logits lie within 2^-30 of each other, the ranking is unchanged (scaling
by a power of two is exact in floating point) and every exp(l_i − l_max) rounds to 1, so each chosen expert gets
weight exactly 1/k; with the down slices multiplied by k the routed output is the plain sum of the chosen experts
(MoEfication's sum), and with k = E (plus the shared expert) it is the dense MLP up to summation order. (Mixtral and
Qwen-MoE rank softmax probabilities instead: a temperature small enough to make the weights uniform also makes the
probabilities tie, and the ranking is lost — docs/moe.md.)
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from sparcom.errors import SparcomError
from sparcom.models.families import family_for
from sparcom.models.sites import get_path, model_sites

#: Every router logit of the calibration tokens is scaled to at most this magnitude (module docstring).
LOGIT_BOUND_LOG2 = -30


def router_scale(logits: torch.Tensor) -> float:
    """The power of two that brings every logit in ``logits`` to at most 2^LOGIT_BOUND_LOG2 in magnitude.

    Scaling by a power of two is exact in floating point (far from underflow), so the top-k of the scaled logits is
    the top-k of the fitted ones, and their differences are too small for exp to tell apart from 1 in float32.
    """
    largest = max(float(logits.abs().max()), 2.0**-100)
    return 2.0 ** (LOGIT_BOUND_LOG2 - math.ceil(math.log2(largest)))


def moe_config(dense_config, num_experts: int, top_k: int, shared_neurons: int = 0):
    """The GraniteMoE config (GraniteMoeShared with a shared expert) whose every non-MLP part computes exactly what
    the Llama config computes."""
    from transformers import GraniteMoeConfig, GraniteMoeSharedConfig

    head_dim = getattr(dense_config, "head_dim", None) or dense_config.hidden_size // dense_config.num_attention_heads
    extra = {} if head_dim == dense_config.hidden_size // dense_config.num_attention_heads else {"head_dim": head_dim}
    if shared_neurons:
        extra["shared_intermediate_size"] = shared_neurons
    routed = dense_config.intermediate_size - shared_neurons
    return (GraniteMoeSharedConfig if shared_neurons else GraniteMoeConfig)(
        vocab_size=dense_config.vocab_size,
        hidden_size=dense_config.hidden_size,
        intermediate_size=routed // num_experts,
        num_hidden_layers=dense_config.num_hidden_layers,
        num_attention_heads=dense_config.num_attention_heads,
        num_key_value_heads=dense_config.num_key_value_heads,
        hidden_act=dense_config.hidden_act,
        max_position_embeddings=dense_config.max_position_embeddings,
        initializer_range=dense_config.initializer_range,
        rms_norm_eps=dense_config.rms_norm_eps,
        pad_token_id=dense_config.pad_token_id,
        bos_token_id=dense_config.bos_token_id,
        eos_token_id=dense_config.eos_token_id,
        tie_word_embeddings=dense_config.tie_word_embeddings,
        rope_parameters=dict(dense_config.rope_parameters),
        attention_bias=False,
        attention_dropout=dense_config.attention_dropout,
        embedding_multiplier=1.0,
        logits_scaling=1.0,
        residual_multiplier=1.0,
        attention_multiplier=head_dim**-0.5,  # Llama's scaling, computed the same way
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        output_router_logits=False,
        **extra,
    )


def _layer_state(mlp: nn.Module, split, top_k: int, prefix: str, target, exact: bool) -> dict[str, torch.Tensor]:
    """The tensors of one MoE layer: routed experts, router and (if any) the shared expert."""
    experts, width = split.members.shape
    down_all = mlp.down_proj.weight.detach() if exact or split.down is None else split.down
    order = torch.from_numpy(split.members.reshape(-1))
    gate = mlp.gate_proj.weight.detach().index_select(0, order).view(experts, width, -1)
    up = mlp.up_proj.weight.detach().index_select(0, order).view(experts, width, -1)
    down = down_all.index_select(1, order).view(-1, experts, width).transpose(0, 1)
    state = {
        prefix + f"{target.experts}.gate_up_proj": torch.cat([gate, up], dim=1),  # [E, 2 I_e, H]: gate, up
        # Each chosen expert's routing weight is exactly 1/k (module docstring): k · down undoes it.
        prefix + f"{target.experts}.down_proj": (down * float(top_k)).contiguous(),  # [E, H, I_e]
        prefix + f"{target.router}.weight": torch.from_numpy(split.router) * split.scale,
    }
    if len(split.shared):
        shared = torch.from_numpy(split.shared)
        base = prefix + target.shared_width_from.rsplit(".", 1)[0]  # "shared_mlp"
        state[base + ".input_linear.weight"] = torch.cat([mlp.gate_proj.weight.detach().index_select(0, shared),
                                                          mlp.up_proj.weight.detach().index_select(0, shared)])
        state[base + ".output_linear.weight"] = down_all.index_select(1, shared).contiguous()
    return state


def assemble(dense: nn.Module, splits: Sequence, top_k: int, exact: bool = False) -> nn.Module:
    """A GraniteMoE(Shared) model (float32, eval) holding the dense weights, the experts' slices, the shared expert
    and the scaled routers. ``exact``: use the dense down projections even where a split carries refitted ones."""
    from transformers import GraniteMoeForCausalLM, GraniteMoeSharedForCausalLM

    num_experts = splits[0].members.shape[0]
    shared_neurons = len(splits[0].shared)
    config = moe_config(dense.config, num_experts, top_k, shared_neurons)
    source, target = model_sites(dense).family, family_for(config.model_type)
    mlp_path = source.width_from.rsplit(".", 1)[0]
    state = {name: tensor.detach().to(torch.float32) for name, tensor in dense.state_dict().items()
             if f".{mlp_path}." not in name}
    blocks = [get_path(layer, mlp_path) for layer in get_path(model_sites(dense).backbone, source.layers)]
    for j, (mlp, split) in enumerate(zip(blocks, splits, strict=True)):
        # names from the family table (granitemoe / granitemoeshared)
        state.update(_layer_state(mlp, split, top_k, f"{target.backbone}.{target.layers}.{j}.", target, exact))
    with torch.device("meta"):  # no random init of weights that are all replaced (seconds for 135M parameters)
        model = (GraniteMoeSharedForCausalLM if shared_neurons else GraniteMoeForCausalLM)(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if not (config.tie_word_embeddings and name == "lm_head.weight")]
    if missing or unexpected:
        raise SparcomError(f"MoE assembly mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                           "this is a bug in sparcom.zoo.moe_assembly")
    if config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    backbone = get_path(model, target.backbone)
    backbone.rotary_emb = type(backbone.rotary_emb)(config=config)  # its buffers were made on meta
    left = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        raise SparcomError(f"MoE assembly left {left[:3]} unset; this is a bug in sparcom.zoo.moe_assembly")
    return model.eval()


def retarget(moe: nn.Module, top_k: int) -> nn.Module:
    """A copy of a MoEfied model routing each token to ``top_k`` experts instead (down slices rescaled to match).

    The router is unchanged, so the chosen experts are the first ``top_k`` of the same ranking. Exact when the
    ratio of the new to the old k is a power of two (4 → 8, 16); otherwise the rescaling rounds once per weight.
    """
    old = int(moe.config.num_experts_per_tok)
    if not 1 <= top_k <= int(moe.config.num_local_experts):
        raise SparcomError(f"top_k must be between 1 and {moe.config.num_local_experts}, got {top_k}")
    model = copy.deepcopy(moe)
    model.config.num_experts_per_tok = top_k
    with torch.no_grad():
        for site in model_sites(model).moe.values():
            site.router.top_k = top_k
            site.experts.down_proj.mul_(top_k / old)
    return model.eval()
