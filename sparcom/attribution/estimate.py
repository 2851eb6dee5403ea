"""The linear estimate of a deactivation, per row and component, from one forward and one backward pass.

Deactivating neuron i of layer j replaces its post-activation value A_ij^t by r_ij at every position t of a row
(zero ablation: r = 0; mean ablation: r = the neuron's mean activation). To first order the change of the row's
summed NLL over its scored (response) tokens is

    Δ_ij ≈ Σ_t ∂NLL/∂A_ij^t · (r_ij − A_ij^t)

(attribution patching). One backward pass of the summed NLL gives every gradient at once; rows of a batch do not
interact, so the gradient of the batch's total with respect to one row's activations is that row's own gradient and
Σ_t runs per row. Positions that do not reach a scored token (the padding on the right, the positions after the last
scored token) have gradient 0 exactly. The sites are those of the model's one site map (:mod:`sparcom.models.sites`),
the modules the profiler counts and the causal check deactivates. Parameters are frozen during the pass: only the
activations' gradients are computed, which keeps the backward near the cost of one forward.

A routed expert e is deactivated as the causal check removes it by default: dropped from each token's top-k and
the remaining weights rescaled to the token's original total (``renormalize``). Its estimate is the same first-order
expansion in the top-k weights the experts module receives, Σ_t Σ_s ∂NLL/∂w_ts · (w'_ts − w_ts) with w' the
renormalised weights (:func:`removal_effect`).

An expert neuron (e, i) is deactivated on the tokens routed to e only, so its estimate sums over those (token, slot)
pairs: Σ ∂NLL/∂A · (r_ei − A), read at the experts' activation module. Which pair each row of an activation call is
follows from the implementation that runs (:func:`sparcom.models.moe.call_plan`, the plan the counting hooks
verify); the row count of every call is checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sparcom.causal.nll import LOGIT_CHUNK
from sparcom.causal.scoring import ScoringBatch
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_TABLE
from sparcom.models.logits import logits_at
from sparcom.models.moe import PLANNED_IMPLEMENTATIONS, CallPlan, activation_module, call_plan
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, NeuronSite, site_shape

#: The replacement values a deactivation writes: zero, or each neuron's mean activation.
REPLACEMENTS: tuple[str, ...] = ("zero", "mean")
#: Kinds the pass attributes: those living at an activation module, routed experts (removed from the router's
#: choice with the rest renormalised, the causal check's default removal) and expert neurons.
ATTRIBUTED_KINDS: tuple[str, ...] = (*(k.name for k in KIND_TABLE.values() if not k.routed), "expert", "expert_neuron")


@dataclass(frozen=True)
class Replacement:
    """What a deactivated component's activation becomes: ``zero``, or ``mean`` with a value per neuron.

    ``values`` maps (kind, layer) to the per-neuron replacement [I] (the mean activation, from a profile that
    recorded activation sums); ``zero`` needs none.
    """

    name: str = "zero"
    values: Mapping[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in REPLACEMENTS:
            raise SparcomError(f"unknown replacement {self.name!r}; choose from {', '.join(REPLACEMENTS)}")
        if self.name == "zero" and self.values:
            raise SparcomError("replacement 'zero' takes no values")

    @classmethod
    def mean(cls, values: Mapping[tuple[str, int], np.ndarray]) -> Replacement:
        return cls("mean", {key: np.asarray(value, dtype=np.float64) for key, value in values.items()})

    def check(self, sites: Mapping[tuple[str, int], NeuronSite | MoeSite]) -> None:
        """Refuse mean values that miss a neuron site or have another width than the model's."""
        if self.name == "zero":
            return
        for (kind, layer), site in sites.items():
            if kind == "expert":
                continue
            value, shape = self.values.get((kind, layer)), site_shape(kind, site)
            if value is None or value.shape != shape:
                found = "none" if value is None else f"shape {value.shape}"
                size = f"{shape[0]}" if len(shape) == 1 else "×".join(map(str, shape))
                raise SparcomError(f"mean replacement: {kind} layer {layer} needs {size} mean activations, "
                                   f"found {found}; take the means from a profile of this model")

    def at(self, kind: str, layer: int, like: torch.Tensor) -> torch.Tensor | float:
        """The replacement of one site, broadcastable to its activations ``like`` [..., I]."""
        if self.name == "zero":
            return 0.0
        return torch.as_tensor(self.values[(kind, layer)], dtype=torch.float64, device=like.device)


Site = NeuronSite | MoeSite


def attributed_sites(sites: ModelSites, kinds: tuple[str, ...] = ATTRIBUTED_KINDS) -> dict[tuple[str, int], Site]:
    """The sites of ``kinds`` in layer order: (kind, layer) → site (of the model's one site map)."""
    unknown = [k for k in kinds if k not in ATTRIBUTED_KINDS]
    if unknown:
        raise SparcomError(f"attribution covers {', '.join(ATTRIBUTED_KINDS)}; {', '.join(unknown)} cannot be "
                           "attributed yet")
    return {(kind, layer): site for kind in kinds for layer, site in sorted(sites.sites_of(kind).items())
            if kind != "expert_neuron" or activation_module(site.experts, site.layout) is not None}


@contextmanager
def activation_gradients_only(model: nn.Module) -> Iterator[None]:
    """Freeze every parameter (no weight gradients are computed) and enable autograd; restore both afterwards."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


@dataclass
class BatchEffects:
    """One batch's linear estimates: per site [B, I] float64, and each row's summed NLL [B] (float64)."""

    effects: dict[tuple[str, int], torch.Tensor]
    nll: torch.Tensor


def _hook(key: tuple[str, int], site: NeuronSite, replacement: Replacement, rows: int,
          into: dict[tuple[str, int], torch.Tensor]):
    """A forward hook on an activation module: registers a gradient hook that adds Σ_t grad · (r − A) per row."""

    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor) or output.shape[-1] != site.width or output.numel() % rows:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise SparcomError(f"{key[0]} layer {key[1]}: the activation output has shape {shape}, expected "
                               f"[{rows}, T, {site.width}]")
        if not output.requires_grad:  # the first site: nothing before it needs a gradient
            output = output.detach().requires_grad_(True)
        value = output.detach()  # the same storage autograd keeps anyway: no copy held per layer

        def on_gradient(gradient: torch.Tensor) -> None:
            # One layer at a time: (r − A) and the product in the activations' dtype (at least float32), the sum
            # over positions in float64.
            dtype = torch.promote_types(value.dtype, torch.float32)
            a = value.reshape(rows, -1, site.width).to(dtype)
            target = replacement.at(*key, a)
            delta = (target.to(dtype) if isinstance(target, torch.Tensor) else target) - a
            into[key] = (gradient.reshape(rows, -1, site.width).to(dtype) * delta).sum(1, dtype=torch.float64)

        output.register_hook(on_gradient)
        return output

    return hook


def removal_effect(weights: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """[n, K]: for each token and slot, Σ_s' ∂NLL/∂w_s' · (w'_s' − w_s') when that slot's expert is removed and the
    other weights are rescaled to the token's original total (w' = 0 for every slot when nothing is left)."""
    w, g = weights.to(torch.float64), gradient.to(torch.float64)
    total = w.sum(-1, keepdim=True)
    both = (g * w).sum(-1, keepdim=True)  # Σ_s' g_s' w_s'
    own = g * w
    rest = total - w
    scale = torch.where(rest != 0, total / torch.where(rest != 0, rest, 1.0), 0.0)
    # removing slot s: −g_s w_s + (scale − 1) Σ_{s' ≠ s} g_s' w_s'; with nothing left: −Σ g w
    return torch.where(rest != 0, -own + (scale - 1.0) * (both - own), -both)


def _expert_hook(key: tuple[str, int], site: MoeSite, rows: int, into: dict[tuple[str, int], torch.Tensor]):
    """A forward pre-hook on a routed-experts module: the top-k weights it receives get a gradient hook that adds
    each (row, expert) its linear removal effect."""

    def hook(module: nn.Module, args: tuple, kwargs: dict):
        call = ExpertsCall.parse(args, kwargs)
        weights, index = call.top_k_weights, call.top_k_index
        if weights is None:
            raise SparcomError(f"layer {key[1]}: the experts module was called without top_k_weights; experts of "
                               "this family cannot be attributed")
        replaced = None
        if not weights.requires_grad:  # the first site: nothing before it needs a gradient
            weights = replaced = weights.detach().requires_grad_(True)
        n = weights.reshape(-1, weights.shape[-1]).shape[0]
        if n % rows:
            raise SparcomError(f"layer {key[1]}: the experts received {n} token rows for a batch of {rows}")
        index = index.reshape(n, -1).to(torch.int64)
        value = weights.detach().reshape(n, -1)

        def on_gradient(gradient: torch.Tensor) -> None:
            effect = removal_effect(value, gradient.reshape(n, -1))
            valid = (index >= 0) & (index < site.num_experts)
            row = (torch.arange(n, device=index.device) // (n // rows))[:, None].expand_as(index)
            cell = (row * site.num_experts + index.clamp(0, site.num_experts - 1))[valid]
            found = torch.zeros(rows * site.num_experts, dtype=torch.float64, device=effect.device)
            into[key] = found.index_add_(0, cell, effect[valid]).reshape(rows, site.num_experts)

        weights.register_hook(on_gradient)
        return call.with_weights(replaced) if replaced is not None else None

    return hook


@dataclass
class _ExpertForward:
    """One experts forward being attributed: its routing, its call plan and how far the calls have got."""

    index: torch.Tensor  # [n · K] expert of each (token, slot) pair
    plan: CallPlan
    slots: int
    tokens_per_row: int
    calls: int = 0
    done: int = 0


def _expert_neuron_hooks(key: tuple[str, int], site: MoeSite, replacement: Replacement, rows: int,
                         into: dict[tuple[str, int], torch.Tensor]) -> list:
    """Hooks that add Σ ∂NLL/∂A · (r − A) per (row, expert, neuron) over the pairs routed to each expert: a pre-hook
    on the experts (their routing and call plan) and a forward hook on their activation module (each call)."""
    experts, layout = site.experts, site.layout
    act_module = activation_module(experts, layout)
    if act_module is None:
        raise SparcomError(f"layer {key[1]}: {type(experts).__name__} has no activation module; its expert neurons "
                           "cannot be attributed")
    num, width = layout.num_experts, layout.width
    state: list[_ExpertForward] = []

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        implementation = getattr(getattr(module, "config", None), "_experts_implementation", None) or "eager"
        if implementation not in PLANNED_IMPLEMENTATIONS:
            raise SparcomError(f"layer {key[1]}: experts implementation {implementation!r} cannot be attributed per "
                               f"expert neuron; use one of {', '.join(PLANNED_IMPLEMENTATIONS)}")
        index = ExpertsCall.parse(args, kwargs).top_k_index
        index = index.reshape(-1, index.shape[-1]).to(torch.int64)
        if index.shape[0] % rows:
            raise SparcomError(f"layer {key[1]}: the experts received {index.shape[0]} token rows for a batch of {rows}")
        state[:] = [_ExpertForward(index.reshape(-1), call_plan(implementation, index, num), index.shape[1],
                                   index.shape[0] // rows)]

    def act(module: nn.Module, args, output: torch.Tensor):
        if not state:
            return None
        forward = state[0]
        count = output.reshape(-1, width).shape[0]
        if forward.calls >= len(forward.plan.sizes) or count != forward.plan.sizes[forward.calls]:
            raise SparcomError(f"layer {key[1]}: an expert activation call had {count} rows, not as its routing "
                               "plans; expert neurons of this model cannot be attributed")
        pairs = forward.plan.order[forward.done:forward.done + count]
        forward.calls, forward.done = forward.calls + 1, forward.done + count
        expert = forward.index[pairs]
        cell = (pairs // forward.slots // forward.tokens_per_row) * num + expert
        replaced = None
        if not output.requires_grad:
            output = replaced = output.detach().requires_grad_(True)
        value = output.detach().reshape(-1, width)

        def on_gradient(gradient: torch.Tensor) -> None:
            dtype = torch.promote_types(value.dtype, torch.float32)
            target = replacement.at(*key, value)
            r = target.to(value.device)[expert].to(dtype) if isinstance(target, torch.Tensor) else target
            found = (gradient.reshape(-1, width).to(dtype) * (r - value.to(dtype))).to(torch.float64)
            total = into.setdefault(key, torch.zeros(rows * num, width, dtype=torch.float64, device=found.device))
            total.index_add_(0, cell.to(found.device), found)

        output.register_hook(on_gradient)
        return replaced

    def post(module: nn.Module, args, output) -> None:
        state.clear()

    return [experts.register_forward_pre_hook(pre, with_kwargs=True), act_module.register_forward_hook(act),
            experts.register_forward_hook(post)]


def summed_nll(model: nn.Module, batch: ScoringBatch) -> torch.Tensor:
    """Each row's summed NLL [B] (at least float32, differentiable): the LM head at the scored positions only."""
    logits = logits_at(model, batch.input_ids, batch.attention, batch.keep)
    targets = batch.targets.to(logits.device)
    owner = batch.owner.to(logits.device)
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for a float64 model
    total = torch.zeros(len(batch.rows), dtype=dtype, device=logits.device)
    for start in range(0, targets.shape[0], LOGIT_CHUNK):
        chunk = logits[start:start + LOGIT_CHUNK].to(dtype)
        losses = nn.functional.cross_entropy(chunk, targets[start:start + LOGIT_CHUNK], reduction="none")
        total = total.index_add(0, owner[start:start + LOGIT_CHUNK], losses)
    return total


def batch_effects(model: nn.Module, sites: Mapping[tuple[str, int], Site], batch: ScoringBatch,
                  replacement: Replacement) -> BatchEffects:
    """The linear estimate of every component's deactivation for every row of ``batch`` (one forward + backward)."""
    rows = len(batch.rows)
    found: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for key, site in sites.items():
        if key[0] == "expert_neuron":
            handles += _expert_neuron_hooks(key, site, replacement, rows, found)
        elif isinstance(site, MoeSite):
            if replacement.name != "zero":
                raise SparcomError("experts are removed from the router's choice; the mean replacement applies to "
                                   "neurons only")
            handles.append(site.experts.register_forward_pre_hook(_expert_hook(key, site, rows, found),
                                                                  with_kwargs=True))
        else:
            handles.append(site.module.register_forward_hook(_hook(key, site, replacement, rows, found)))
    try:
        with activation_gradients_only(model):
            nll = summed_nll(model, batch)
            if not bool(torch.isfinite(nll).all()):
                raise SparcomError("non-finite NLL (NaN/inf) in a batch; check the model's weights, or use "
                                   "--dtype float32 if a half-precision dtype overflows")
            nll.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    effects = {}
    for key, site in sites.items():
        value = found.get(key)
        # A site the loss does not depend on (after the last scored position's layer reach) has gradient 0.
        shape = site_shape(key[0], site)
        effects[key] = (value.reshape(rows, *shape).cpu() if value is not None
                        else torch.zeros(rows, *shape, dtype=torch.float64))
    return BatchEffects(effects, nll.detach().to("cpu", torch.float64))
