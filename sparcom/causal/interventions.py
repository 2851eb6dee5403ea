"""Reversible interventions: deactivate neurons, expert neurons and experts inside a ``with`` block.

:func:`ablate` deactivates a :class:`~sparcom.components.ComponentSet` at the sites of the model's one site map (:mod:`sparcom.models.sites`,
the same modules the profiler counts) and restores the model exactly when the block ends, also on an exception:
hooks are removed, touched weights are written back bit for bit, shadowed attributes are taken away. Hooks are
prepended, so any other hook on the same module sees the ablated values. How each kind is deactivated
(zeroed activations, zeroed ``down_proj`` columns, experts removed by renormalisation or next-best re-routing) is
documented once, in docs/causal.md ("The interventions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sparcom.causal.settings import EXPERT_REMOVAL
from sparcom.components import ComponentSet
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_TABLE, KINDS, Kind
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, PerDevice, ShadowAttribute, model_sites


@dataclass
class AblationStats:
    """What an active ablation did (updated while the block runs)."""

    #: next-best: tokens that had to fall back to renormalisation because no allowed candidate was left.
    fallback_tokens: int = 0
    #: expert removal: routed (token, slot) pairs whose chosen expert was removed.
    removed_slots: int = 0
    routed_slots: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def check_ablation(ablation: ComponentSet, sites: ModelSites, expert_removal: str = "renormalize") -> None:
    """Refuse a set that does not fit the model (wrong layers, shapes, indices out of range)."""
    if expert_removal not in EXPERT_REMOVAL:
        raise SparcomError(f"expert removal must be one of {', '.join(EXPERT_REMOVAL)}, got {expert_removal!r}")
    for kind in ablation.members:
        if kind not in KINDS:
            raise SparcomError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
    for kind, layers in ablation.shapes.items():
        for layer, shape in layers.items():
            model_shape = sites.shape(kind, layer)
            if model_shape is None:
                raise SparcomError(f"{kind} components at layer {layer}, but layer {layer} of this "
                                   f"{sites.family.name} model has none (it has {sites.layers} layers); "
                                   "the selection belongs to another model")
            if tuple(shape) != model_shape:
                raise SparcomError(f"{kind} mask of layer {layer} has shape {tuple(shape)}, but this model's layer "
                                   f"{layer} has {model_shape}; the selection belongs to another model")
    for kind, layers in ablation.members.items():
        for layer, indices in layers.items():
            shape = ablation.shapes[kind][layer]
            indices = np.asarray(indices)
            if indices.size and (indices.min() < 0 or np.any(indices.reshape(-1, len(shape)) >= np.asarray(shape))):
                raise SparcomError(f"{kind} indices of layer {layer} are out of range for shape {shape}")
    if expert_removal == "next-best":
        for layer, experts in ablation.members.get("expert", {}).items():
            site = sites.moe[layer]
            if site.top_k and site.num_experts - len(experts) < site.top_k:
                raise SparcomError(f"layer {layer}: removing {len(experts)} of {site.num_experts} experts leaves fewer "
                                   f"than top-k = {site.top_k}; next-best needs k experts left (use renormalize)")


# ----------------------------------------------------------------------------------------------- dense neurons


def zero_units_hook(indices: np.ndarray, width: int, where: str) -> Callable:
    """A forward hook that returns the module's output with the last axis zeroed at ``indices``."""
    index = PerDevice.tensor(np.asarray(indices))

    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor) or output.shape[-1] != width:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise SparcomError(f"{where}: the activation output has shape {shape}, expected a last axis of {width}")
        return output.index_fill(output.dim() - 1, index.on(output.device), 0)

    return hook


# ----------------------------------------------------------------------------------------------- expert neurons


def _zero_down_columns(site: MoeSite, pairs: np.ndarray) -> Callable[[], None]:
    """Zero the down-projection columns of (expert, neuron) ``pairs``; returns the exact restore."""
    weight = site.experts.down_proj
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3 or weight.device.type == "meta":
        raise SparcomError(f"layer {site.layer}: the experts' down_proj is not a loaded 3-D tensor; expert neurons "
                           "of offloaded or quantised experts cannot be deactivated")
    experts = torch.as_tensor(pairs[:, 0], dtype=torch.long, device=weight.device)
    neurons = torch.as_tensor(pairs[:, 1], dtype=torch.long, device=weight.device)
    with torch.no_grad():
        if site.layout.transposed:  # [E, I, H]
            saved = weight[experts, neurons, :].clone()
            weight[experts, neurons, :] = 0
        else:  # [E, H, I]
            saved = weight[experts, :, neurons].clone()
            weight[experts, :, neurons] = 0

    def restore() -> None:
        with torch.no_grad():
            if site.layout.transposed:
                weight[experts, neurons, :] = saved
            else:
                weight[experts, :, neurons] = saved

    return restore


# ----------------------------------------------------------------------------------------------- experts


def renormalized(weights: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Top-k weights with removed slots set to 0 and the rest rescaled to each token's original total.

    Rows without a removed slot are returned unchanged (bit for bit); a row whose every slot is removed is all 0.
    """
    w = weights.to(torch.float32)
    total = w.sum(dim=-1, keepdim=True)
    kept = w.masked_fill(removed, 0.0)
    kept_total = kept.sum(dim=-1, keepdim=True)
    scale = torch.where(kept_total != 0, total / torch.where(kept_total != 0, kept_total, 1.0), 0.0)
    changed = removed.any(dim=-1, keepdim=True)
    return torch.where(changed, (kept * scale).to(weights.dtype), weights)


def _renormalize_pre_hook(lookup: PerDevice[torch.Tensor], stats: AblationStats) -> Callable:
    def pre(module: nn.Module, args: tuple, kwargs: dict):
        call = ExpertsCall.parse(args, kwargs)
        index, weights = call.top_k_index, call.top_k_weights
        if weights is None:
            raise SparcomError("the experts module was called without top_k_weights; sparcom removes experts of "
                               "the transformers 5 form experts(hidden_states, top_k_index, top_k_weights) only")
        removed = lookup.on(index.device)[index]
        stats.routed_slots += index.numel()
        count = int(removed.sum())
        if not count:
            return None
        stats.removed_slots += count
        return call.with_weights(renormalized(weights, removed))

    return pre


class _MaskedTopK(TorchFunctionMode):
    """While active, ``topk`` over a last axis of ``num_experts`` ignores the removed experts (score −∞)."""

    def __init__(self, removed: PerDevice[torch.Tensor], num_experts: int) -> None:
        super().__init__()
        self.removed = removed
        self.num_experts = num_experts
        self.hits = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.topk, torch.Tensor.topk) and args and isinstance(args[0], torch.Tensor):
            scores = args[0]
            dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
            if scores.is_floating_point() and scores.shape[-1] == self.num_experts and dim in (-1, scores.dim() - 1):
                self.hits += 1
                masked = scores.masked_fill(self.removed.on(scores.device), float("-inf"))
                return func(masked, *args[1:], **kwargs)
        return func(*args, **kwargs)


def _next_best_forward(site: MoeSite, original: Callable, removed: PerDevice[torch.Tensor],
                       stats: AblationStats) -> Callable:
    def forward(*args, **kwargs):
        mode = _MaskedTopK(removed, site.num_experts)
        with mode:
            output = original(*args, **kwargs)
        if not mode.hits:
            raise SparcomError(f"layer {site.layer}: the router {type(site.router).__name__} does not choose experts "
                               "with topk, so next-best expert removal cannot re-rank it; use --expert-removal "
                               "renormalize")
        if not (isinstance(output, tuple) and len(output) >= 3):
            raise SparcomError(f"layer {site.layer}: the router {type(site.router).__name__} did not return "
                               "(router_logits, top_k_weights, top_k_index)")
        logits, weights, index = output[0], output[1], output[2]
        chosen_removed = removed.on(index.device)[index]
        stats.routed_slots += index.numel()
        bad = chosen_removed.any(dim=-1)
        if bool(bad.any()):  # the allowed candidates ran out: renormalise the router's own choice for these tokens
            reference = original(*args, **kwargs)
            ref_weights, ref_index = reference[1], reference[2]
            fallback = renormalized(ref_weights, removed.on(ref_index.device)[ref_index])
            index = torch.where(bad[:, None], ref_index, index)
            weights = torch.where(bad[:, None], fallback, weights)
            stats.fallback_tokens += int(bad.sum())
        return (logits, weights, index, *output[3:])

    return forward


# ----------------------------------------------------------------------------------------------- the context


@contextmanager
def ablate(
    model: nn.Module,
    ablation: ComponentSet,
    *,
    sites: ModelSites | None = None,
    expert_removal: str = "renormalize",
) -> Iterator[AblationStats]:
    """Deactivate ``ablation``'s components of ``model`` inside the block; restore the model exactly afterwards.

    >>> with ablate(model, ComponentSet.from_masks(selection.masks, "math", ["neuron"])) as stats:
    ...     logits = model(input_ids).logits
    """
    sites = sites or model_sites(model)
    check_ablation(ablation, sites, expert_removal)
    stats = AblationStats()
    undo: list[Callable[[], None]] = []
    try:
        for kind in ablation.kinds:
            for layer, members in sorted(ablation.members[kind].items()):
                if len(members):
                    undo.append(_DEACTIVATE[kind](sites, layer, np.asarray(members), kind, expert_removal, stats))
        yield stats
    finally:
        for step in reversed(undo):
            step()


def _zero_units(sites: ModelSites, layer: int, indices: np.ndarray, kind: str, *_) -> Callable[[], None]:
    site = sites.site(kind, layer)
    return site.module.register_forward_hook(zero_units_hook(indices, site.width, f"{kind} layer {layer}"),
                                             prepend=True).remove


def _zero_expert_neurons(sites: ModelSites, layer: int, pairs: np.ndarray, *_) -> Callable[[], None]:
    return _zero_down_columns(sites.moe[layer], pairs.reshape(-1, 2))


def _remove_experts(sites: ModelSites, layer: int, experts: np.ndarray, kind: str, expert_removal: str,
                    stats: AblationStats) -> Callable[[], None]:
    moe = sites.moe[layer]
    mask = np.zeros(moe.num_experts, dtype=bool)
    mask[experts] = True
    lookup = PerDevice.tensor(mask, dtype=torch.bool)
    if expert_removal == "renormalize":
        return moe.experts.register_forward_pre_hook(_renormalize_pre_hook(lookup, stats), with_kwargs=True,
                                                     prepend=True).remove
    return ShadowAttribute(moe.router, "forward", _next_best_forward(moe, moe.router.forward, lookup, stats)).remove


def _deactivation(kind: Kind) -> Callable[..., Callable[[], None]]:
    """How a kind is deactivated (docs/causal.md, "The interventions"): a kind at an activation site by zeroing
    its outputs; expert neurons by zeroing their down-projection columns; experts by taking them out of the routing."""
    if not kind.routed:
        return _zero_units
    return _zero_expert_neurons if kind.ndim == 2 else _remove_experts


_DEACTIVATE = {name: _deactivation(kind) for name, kind in KIND_TABLE.items()}
