"""Reversible interventions: deactivate neurons, expert neurons and experts inside a ``with`` block.

:func:`ablate` applies an :class:`Ablation` to the sites of the model's one site map (:mod:`sparcom.models.sites`,
the same modules the profiler counts) and restores the model exactly when the block ends, also on an exception:
hooks are removed, touched weights are written back bit for bit, shadowed attributes are taken away. Hooks are
prepended, so any other hook on the same module sees the ablated values. How each kind is deactivated
(zeroed activations, zeroed ``down_proj`` columns, experts removed by renormalisation or next-best re-routing) is
documented once, in docs/causal.md ("The interventions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sparcom.causal.settings import EXPERT_REMOVAL
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS, CountKey
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, NeuronSite, PerDevice, ShadowAttribute, model_sites


@dataclass(frozen=True)
class Ablation:
    """A set of components to deactivate: per kind, per layer, the selected indices.

    1-D kinds (``neuron``, ``shared_neuron``, ``expert``) hold sorted index vectors; ``expert_neuron`` holds
    ``[n, 2]`` rows of (expert, neuron). ``shapes`` records each layer's mask shape, so that random sets of the
    same shape can be drawn without the model (:mod:`sparcom.causal.baseline`).
    """

    components: Mapping[str, Mapping[int, np.ndarray]]
    shapes: Mapping[str, Mapping[int, tuple[int, ...]]]
    label: str = ""

    @classmethod
    def from_masks(cls, masks: Mapping[str, np.ndarray], category: str, kinds: tuple[str, ...] | list[str],
                   label: str = "") -> Ablation:
        """Build from boolean masks keyed like the counts (``{kind}/{category}/{layer}``)."""
        components: dict[str, dict[int, np.ndarray]] = {}
        shapes: dict[str, dict[int, tuple[int, ...]]] = {}
        for key, mask in masks.items():
            parsed = CountKey.parse(key)
            if parsed is None or parsed.kind not in kinds or parsed.category != category:
                continue
            mask = np.asarray(mask, dtype=bool)
            components.setdefault(parsed.kind, {})[parsed.layer] = (np.flatnonzero(mask) if mask.ndim == 1
                                                                    else np.argwhere(mask))
            shapes.setdefault(parsed.kind, {})[parsed.layer] = tuple(int(s) for s in mask.shape)
        return cls(components, shapes, label or category)

    @classmethod
    def from_indices(cls, components: Mapping[str, Mapping[int, Any]], sites: ModelSites, label: str = "") -> Ablation:
        """Build from plain index lists (e.g. ``{"neuron": {0: [3, 7]}}``); shapes come from the model's sites."""
        built: dict[str, dict[int, np.ndarray]] = {}
        shapes: dict[str, dict[int, tuple[int, ...]]] = {}
        for kind, layers in components.items():
            for layer, indices in layers.items():
                shape = sites.shape(kind, int(layer))
                if shape is None:
                    raise SparcomError(f"layer {layer} of this model has no {kind} components")
                array = np.asarray(indices, dtype=np.int64).reshape(-1, len(shape))
                built.setdefault(kind, {})[int(layer)] = array[:, 0] if len(shape) == 1 else array
                shapes.setdefault(kind, {})[int(layer)] = shape
        return cls(built, shapes, label)

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.components]

    def size(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else self.kinds
        return int(sum(len(v) for k in kinds for v in self.components.get(k, {}).values()))

    def counts(self, kind: str) -> dict[int, int]:
        """Selected components per layer."""
        return {layer: len(v) for layer, v in sorted(self.components.get(kind, {}).items())}

    def expert_counts(self) -> dict[int, np.ndarray]:
        """``expert_neuron``: selected neurons per expert, per layer ([E] counts)."""
        result = {}
        for layer, pairs in sorted(self.components.get("expert_neuron", {}).items()):
            experts = self.shapes["expert_neuron"][layer][0]
            result[layer] = np.bincount(pairs[:, 0].astype(np.int64), minlength=experts) if len(pairs) else \
                np.zeros(experts, dtype=np.int64)
        return result

    def is_empty(self) -> bool:
        return self.size() == 0


@dataclass
class AblationStats:
    """What an active ablation did (updated while the block runs)."""

    #: next-best: tokens that had to fall back to renormalisation because no allowed candidate was left.
    fallback_tokens: int = 0
    #: expert removal: routed (token, slot) pairs whose chosen expert was removed.
    removed_slots: int = 0
    routed_slots: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def check_ablation(ablation: Ablation, sites: ModelSites, expert_removal: str = "renormalize") -> None:
    """Refuse an ablation that does not fit the model (wrong layers, shapes, indices out of range)."""
    if expert_removal not in EXPERT_REMOVAL:
        raise SparcomError(f"expert removal must be one of {', '.join(EXPERT_REMOVAL)}, got {expert_removal!r}")
    for kind in ablation.components:
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
    for kind, layers in ablation.components.items():
        for layer, indices in layers.items():
            shape = ablation.shapes[kind][layer]
            indices = np.asarray(indices)
            if indices.size and (indices.min() < 0 or np.any(indices.reshape(-1, len(shape)) >= np.asarray(shape))):
                raise SparcomError(f"{kind} indices of layer {layer} are out of range for shape {shape}")
    if expert_removal == "next-best":
        for layer, experts in ablation.components.get("expert", {}).items():
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
    ablation: Ablation,
    *,
    sites: ModelSites | None = None,
    expert_removal: str = "renormalize",
) -> Iterator[AblationStats]:
    """Deactivate ``ablation``'s components of ``model`` inside the block; restore the model exactly afterwards.

    >>> with ablate(model, Ablation.from_masks(selection.masks, "math", ["neuron"])) as stats:
    ...     logits = model(input_ids).logits
    """
    sites = sites or model_sites(model)
    check_ablation(ablation, sites, expert_removal)
    stats = AblationStats()
    undo: list[Callable[[], None]] = []
    try:
        for kind, site_map in (("neuron", sites.dense), ("shared_neuron", sites.shared)):
            for layer, indices in sorted(ablation.components.get(kind, {}).items()):
                if len(indices):
                    site: NeuronSite = site_map[layer]
                    hook = zero_units_hook(indices, site.width, f"{kind} layer {layer}")
                    undo.append(site.module.register_forward_hook(hook, prepend=True).remove)
        for layer, pairs in sorted(ablation.components.get("expert_neuron", {}).items()):
            if len(pairs):
                undo.append(_zero_down_columns(sites.moe[layer], np.asarray(pairs).reshape(-1, 2)))
        for layer, experts in sorted(ablation.components.get("expert", {}).items()):
            if not len(experts):
                continue
            moe = sites.moe[layer]
            mask = np.zeros(moe.num_experts, dtype=bool)
            mask[np.asarray(experts)] = True
            lookup = PerDevice.tensor(mask, dtype=torch.bool)
            if expert_removal == "renormalize":
                handle = moe.experts.register_forward_pre_hook(_renormalize_pre_hook(lookup, stats), with_kwargs=True,
                                                               prepend=True)
                undo.append(handle.remove)
            else:
                original = moe.router.forward
                undo.append(ShadowAttribute(moe.router, "forward",
                                            _next_best_forward(moe, original, lookup, stats)).remove)
        yield stats
    finally:
        for step in reversed(undo):
            step()
