"""Routed experts in transformers 5: how their weights are laid out and how an expert neuron's activation is made.

A MoE layer's routed experts are one module holding 3-D weights (``gate_up_proj`` [E, 2I, H], or [E, H, 2I] when
transposed, with gate and up concatenated or interleaved, optional biases; ``up_proj`` alone for ungated experts).
Its forward receives ``(hidden_states, top_k_index, top_k_weights)`` and runs one of several implementations
(``config._experts_implementation``: the family's eager loop, ``batched_mm``, ``grouped_mm``, or a kernel). Whatever
runs, expert e's neuron i on token x has the activation A = f(gate_e(x))_i (DESIGN §1); this module evaluates it
from the weights for given (token, expert) pairs, which the counting hooks use to verify captured activations and
to count directly when an implementation cannot be observed.

The layout is read from the attributes ``@use_experts_implementation`` sets on the module (``has_gate``,
``is_transposed``, ``is_concatenated``, ``has_bias``), so a family only names its activation rule; ``down_proj``
is checked against it ([E, H, I], or [E, I, H] when transposed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparcom.errors import SparcomError


def _act_fn(experts: nn.Module, gate: torch.Tensor) -> torch.Tensor:
    """The experts' own activation module applied to the gate projection (SiLU, GELU, ...)."""
    return experts.act_fn(gate)


def _clamped_swiglu(experts: nn.Module, gate: torch.Tensor) -> torch.Tensor:
    """gpt-oss: the gate is clamped from above, then A = g · σ(α g) (its ``_apply_gate`` before the up factor)."""
    gate = gate.clamp(min=None, max=experts.limit)
    return gate * torch.sigmoid(gate * experts.alpha)


#: How a family turns the gate projection into the expert-neuron activation A (an adapter names one of these).
EXPERT_ACTIVATIONS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "act_fn": _act_fn,
    "clamped_swiglu": _clamped_swiglu,
}


@dataclass(frozen=True)
class ExpertsLayout:
    """Shapes and weight layout of one experts module."""

    num_experts: int
    width: int  # I_e: neurons per expert
    hidden: int
    has_gate: bool
    #: Weights stored [E, in, out] (x @ W) rather than [E, out, in] (F.linear); ``down_proj`` is then [E, I, H].
    transposed: bool
    interleaved: bool  # gate and up alternate along the output axis (gate = even columns)
    has_bias: bool
    activation: str


def experts_layout(experts: nn.Module, activation: str = "act_fn") -> ExpertsLayout:
    """Read the layout of an experts module (a clear error when it is not one sparcom understands)."""
    if activation not in EXPERT_ACTIVATIONS:
        raise SparcomError(f"unknown expert activation rule {activation!r}; known: {', '.join(EXPERT_ACTIVATIONS)}")
    has_gate = bool(getattr(experts, "has_gate", hasattr(experts, "gate_up_proj")))
    weight = getattr(experts, "gate_up_proj" if has_gate else "up_proj", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise SparcomError(
            f"{type(experts).__name__} does not hold 3-D expert weights (gate_up_proj or up_proj); sparcom counts "
            "experts modules of the transformers 5 form (forward(hidden_states, top_k_index, top_k_weights))"
        )
    transposed = bool(getattr(experts, "is_transposed", False))
    out_features = weight.shape[2] if transposed else weight.shape[1]
    hidden = weight.shape[1] if transposed else weight.shape[2]
    width = out_features // 2 if has_gate else out_features
    down = getattr(experts, "down_proj", None)
    expected = (weight.shape[0], width, hidden) if transposed else (weight.shape[0], hidden, width)
    if not isinstance(down, torch.Tensor) or tuple(down.shape) != tuple(int(n) for n in expected):
        shape = tuple(down.shape) if isinstance(down, torch.Tensor) else None
        raise SparcomError(f"{type(experts).__name__}.down_proj has shape {shape}, expected {tuple(expected)} from "
                           "its gate/up weights; sparcom cannot address its expert neurons")
    return ExpertsLayout(
        num_experts=int(weight.shape[0]),
        width=int(width),
        hidden=int(hidden),
        has_gate=has_gate,
        transposed=transposed,
        interleaved=has_gate and not bool(getattr(experts, "is_concatenated", True)),
        has_bias=bool(getattr(experts, "has_bias", False)),
        activation=activation,
    )


def gate_weights(experts: nn.Module, layout: ExpertsLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Views of every expert's gate projection: weight [E, I, H] (F.linear orientation) and bias [E, I] or None."""
    weight = experts.gate_up_proj if layout.has_gate else experts.up_proj
    bias = None
    if layout.has_bias:
        bias = experts.gate_up_proj_bias if layout.has_gate else experts.up_proj_bias
    if layout.transposed:
        weight = weight.transpose(1, 2)
    if layout.has_gate:
        pick = slice(0, None, 2) if layout.interleaved else slice(0, layout.width)
        weight = weight[:, pick]
        bias = None if bias is None else bias[:, pick]
    return weight, bias


def activate(experts: nn.Module, layout: ExpertsLayout, gate: torch.Tensor) -> torch.Tensor:
    """A = f(gate) by the family's rule."""
    return EXPERT_ACTIVATIONS[layout.activation](experts, gate)


def gate_of_pairs(
    experts: nn.Module, layout: ExpertsLayout, x: torch.Tensor, expert_ids: list[int]
) -> torch.Tensor:
    """Gate pre-activation of a few rows ``x`` [s, H], row r through expert ``expert_ids[r]`` — [s, I]."""
    weight, bias = gate_weights(experts, layout)
    x = x.to(weight.dtype)
    return torch.stack([
        nn.functional.linear(x[r], weight[e], None if bias is None else bias[e]) for r, e in enumerate(expert_ids)
    ])


def expert_activation(
    experts: nn.Module, layout: ExpertsLayout, x: torch.Tensor, expert: int
) -> torch.Tensor:
    """A [n, I] of expert ``expert`` on rows ``x`` [n, H], recomputed from the weights (one matmul)."""
    weight, bias = gate_weights(experts, layout)
    gate = nn.functional.linear(x.to(weight.dtype), weight[expert], None if bias is None else bias[expert])
    return activate(experts, layout, gate)


def activation_module(experts: nn.Module, layout: ExpertsLayout) -> nn.Module | None:
    """The module that computes the experts' A (``act_fn``), which hooks can observe or patch; None where the family
    writes its activation inline (gpt-oss's clamped SwiGLU)."""
    module = getattr(experts, "act_fn", None)
    return module if layout.activation == "act_fn" and isinstance(module, nn.Module) else None


#: Experts implementations whose activation calls follow a known plan (:func:`call_plan`).
PLANNED_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "batched_mm", "grouped_mm")


@dataclass(frozen=True)
class CallPlan:
    """Which (token, slot) pair each row of an experts forward's activation calls is, in call order."""

    order: torch.Tensor  # [pairs]: row r of the concatenated calls is pair order[r] (pair = token · K + slot)
    sizes: list[int]  # rows of each activation call
    call_experts: list[int] | None  # the expert of each call (the eager loop); None when a call mixes experts


def call_plan(implementation: str, index: torch.Tensor, num_experts: int) -> CallPlan:
    """The plan of the implementation about to run on ``index`` [n, K]: the family's eager loop (one call per
    expert hit, ascending, rows from ``torch.where`` over [slot, token]), ``batched_mm`` (one call, (token, slot)
    order) or ``grouped_mm`` (one call, rows sorted by expert with the same ``torch.sort`` it makes)."""
    flat = index.reshape(-1)
    pairs = flat.numel()
    n, k = index.shape
    if implementation == "grouped_mm":
        return CallPlan(torch.sort(flat)[1], [pairs], None)
    if implementation == "batched_mm":
        return CallPlan(torch.arange(pairs, device=flat.device), [pairs], None)
    pair = torch.arange(pairs, device=flat.device)
    order = torch.sort(flat * pairs + (pair % k) * n + pair // k)[1]
    valid = flat[(flat >= 0) & (flat < num_experts)]
    sizes = torch.bincount(valid, minlength=num_experts)
    hit = sizes.nonzero().squeeze(1)
    experts, counts = torch.stack([hit, sizes[hit]]).tolist()
    return CallPlan(order, counts, experts)
