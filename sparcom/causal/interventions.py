"""Reversible interventions: deactivate neurons, expert neurons and experts inside a ``with`` block.

Three interventions replace a selected neuron's activation A (docs/causal.md, "The interventions"): ``zero``
(:func:`ablate`: A → 0), ``mean`` (:func:`mean_ablate`: A → its mean over a reference, the profile run's pooled
counted tokens) and ``resample`` (:func:`resample_ablate`: A → its value on a donor row of another category at the
same position class, :mod:`sparcom.causal.resample`). Experts are removed from the routing under all three.

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

from sparcom.causal.resample import DonorPlan, DonorValues
from sparcom.causal.settings import EXPERT_REMOVAL
from sparcom.components import ComponentSet
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_TABLE, KINDS, Kind
from sparcom.models.moe import PLANNED_IMPLEMENTATIONS, activation_module, call_plan
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, PerDevice, ShadowAttribute, model_sites


@dataclass(frozen=True)
class InterventionReference:
    """What the interventions other than ``zero`` replace activations with: per (kind, layer) the mean activation
    over the reference tokens (``mean``), and the donor rows of the scored rows (``resample``)."""

    means: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    donors: DonorPlan | None = None


@dataclass
class AblationStats:
    """What an active ablation did (updated while the block runs)."""

    #: next-best: tokens that had to fall back to renormalisation because no allowed candidate was left.
    fallback_tokens: int = 0
    #: expert removal: routed (token, slot) pairs whose chosen expert was removed.
    removed_slots: int = 0
    routed_slots: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    #: Called before each scored batch with its rows' positions in the check and the batch (resample: runs the
    #: donors); None when the intervention needs nothing per batch.
    before_batch: Callable[..., None] | None = None


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


def replace_units_hook(indices: np.ndarray, width: int, where: str,
                       replacement: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable:
    """A forward hook that replaces the output's last axis at ``indices`` by ``replacement(current)`` ([..., k] →
    [..., k]; None leaves the output as it is)."""
    index = PerDevice.tensor(np.asarray(indices))

    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor) or output.shape[-1] != width:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise SparcomError(f"{where}: the activation output has shape {shape}, expected a last axis of {width}")
        at = index.on(output.device)
        new = replacement(output.index_select(output.dim() - 1, at))
        if new is None:
            return None
        return output.index_copy(output.dim() - 1, at, new.to(output.dtype).expand(*output.shape[:-1], at.numel()))

    return hook


def _constant(values: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """``mean``: every token's selected activations become ``values`` [k]."""
    table = PerDevice.tensor(np.asarray(values, dtype=np.float32), dtype=torch.float32)
    return lambda current: table.on(current.device).to(current.dtype)


def _resampled(donors: DonorValues, where: str) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """``resample``: kept while the donors run, replaced by the aligned donor values in the scored forward."""

    def replacement(current: torch.Tensor) -> torch.Tensor | None:
        if donors.capturing:
            donors.capture(where, current)
            return None
        return donors.values(where, current)

    return replacement


def _layer_means(request: _Request, kind: str, layer: int) -> np.ndarray:
    means = request.reference.means.get((kind, layer))
    if means is None:
        raise SparcomError(f"mean ablation: no mean activation of {kind} components in layer {layer}; the profile run "
                           "that made the selection does not cover them (re-profile with this model)")
    return means


# ----------------------------------------------------------------------------------------------- expert neurons


def _routed_calls(implementation: str, index: torch.Tensor, num_experts: int) -> list[torch.Tensor]:
    """The expert of every row of each activation call an experts forward makes, in call order, from the plan the
    counting hooks verify (:func:`sparcom.models.moe.call_plan`)."""
    plan = call_plan(implementation, index.to(torch.int64), num_experts)
    if plan.call_experts is None:  # one call mixing experts: the pairs' experts in the plan's row order
        return [index.reshape(-1).to(torch.int64)[plan.order]]
    return [torch.full((size,), expert, dtype=torch.int64, device=index.device)
            for expert, size in zip(plan.call_experts, plan.sizes, strict=True)]


def _mean_expert_neurons(site: MoeSite, pairs: np.ndarray, means: np.ndarray) -> Callable[[], None]:
    """``mean`` for expert neurons: a hook on the experts' activation module replaces A of the selected (expert,
    neuron) pairs by their means on the rows routed to that expert; the rows' experts follow from the call's
    ``top_k_index`` and the implementation that runs (each call's row count is checked)."""
    experts, layout = site.experts, site.layout
    act_module = activation_module(experts, layout)
    if act_module is None:
        raise SparcomError(f"layer {site.layer}: {type(experts).__name__} has no activation module, so its expert "
                           "neurons cannot be mean-ablated; use --intervention zero")
    mask = np.zeros((layout.num_experts + 1, layout.width), dtype=bool)  # row E: invalid expert ids, never patched
    mask[pairs[:, 0], pairs[:, 1]] = True
    values = np.zeros(mask.shape, dtype=np.float32)
    values[:-1][mask[:-1]] = means[mask[:-1]]
    lookup, table = PerDevice.tensor(mask, dtype=torch.bool), PerDevice.tensor(values, dtype=torch.float32)
    pending: list[torch.Tensor] = []

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        implementation = getattr(getattr(module, "config", None), "_experts_implementation", None) or "eager"
        if implementation not in PLANNED_IMPLEMENTATIONS:
            raise SparcomError(f"layer {site.layer}: experts implementation {implementation!r} cannot be "
                               "mean-ablated per expert neuron; use --intervention zero")
        pending[:] = _routed_calls(implementation, ExpertsCall.parse(args, kwargs).top_k_index, layout.num_experts)

    def act(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
        if not pending:
            return None  # a call outside a routed forward (the module is not shared with other MLPs in tests)
        rows = pending.pop(0)
        flat = output.reshape(-1, layout.width)
        if flat.shape[0] != rows.numel():
            raise SparcomError(f"layer {site.layer}: an expert activation call had {flat.shape[0]} rows, not the "
                               f"{rows.numel()} its routing plans; use --intervention zero for this model")
        rows = torch.where((rows >= 0) & (rows < layout.num_experts), rows, layout.num_experts).to(flat.device)
        patched = torch.where(lookup.on(flat.device)[rows], table.on(flat.device)[rows].to(flat.dtype), flat)
        return patched.reshape(output.shape)

    def post(module: nn.Module, args, output) -> None:
        if pending:
            left = len(pending)
            pending.clear()
            raise SparcomError(f"layer {site.layer}: {left} planned expert activation calls did not happen; this "
                               "experts implementation cannot be mean-ablated per expert neuron (use --intervention "
                               "zero)")

    handles = [experts.register_forward_pre_hook(pre, with_kwargs=True, prepend=True),
               act_module.register_forward_hook(act, prepend=True), experts.register_forward_hook(post)]

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove



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


@dataclass
class _Request:
    """One intervention being installed: which, with what reference, counting into which stats."""

    intervention: str
    expert_removal: str
    stats: AblationStats
    reference: InterventionReference
    donors: DonorValues | None = None


@contextmanager
def _intervene(model: nn.Module, ablation: ComponentSet, intervention: str, sites: ModelSites | None,
               expert_removal: str, reference: InterventionReference | None) -> Iterator[AblationStats]:
    """Install ``intervention`` on ``ablation``'s components; remove every hook and restore every weight after."""
    sites = sites or model_sites(model)
    check_ablation(ablation, sites, expert_removal)
    reference = reference or InterventionReference()
    request = _Request(intervention, expert_removal, AblationStats(), reference)
    if intervention == "resample":
        if reference.donors is None:
            raise SparcomError("resample ablation needs donor rows (an InterventionReference with donors)")
        request.donors = DonorValues(sites.backbone, reference.donors)
        request.stats.before_batch = request.donors.prepare
    undo: list[Callable[[], None]] = []
    try:
        for kind in ablation.kinds:
            for layer, members in sorted(ablation.members[kind].items()):
                if len(members):
                    undo.append(_DEACTIVATE[kind](sites, layer, np.asarray(members), kind, request))
        yield request.stats
    finally:
        for step in reversed(undo):
            step()


@contextmanager
def ablate(
    model: nn.Module,
    ablation: ComponentSet,
    *,
    sites: ModelSites | None = None,
    expert_removal: str = "renormalize",
    reference: InterventionReference | None = None,
) -> Iterator[AblationStats]:
    """Zero ``ablation``'s components of ``model`` inside the block (experts: removed from the routing); restore the
    model exactly afterwards. ``reference`` is not needed (accepted so every intervention is called alike).

    >>> with ablate(model, ComponentSet.from_masks(selection.masks, "math", ["neuron"])) as stats:
    ...     logits = model(input_ids).logits
    """
    with _intervene(model, ablation, "zero", sites, expert_removal, reference) as stats:
        yield stats


@contextmanager
def mean_ablate(model: nn.Module, ablation: ComponentSet, *, sites: ModelSites | None = None,
                expert_removal: str = "renormalize", reference: InterventionReference | None = None,
                ) -> Iterator[AblationStats]:
    """Set ``ablation``'s neurons to their mean activation (``reference.means``; expert neurons: on the tokens
    routed to their expert) inside the block; experts are removed as by :func:`ablate`."""
    with _intervene(model, ablation, "mean", sites, expert_removal, reference) as stats:
        yield stats


@contextmanager
def resample_ablate(model: nn.Module, ablation: ComponentSet, *, sites: ModelSites | None = None,
                    expert_removal: str = "renormalize", reference: InterventionReference | None = None,
                    ) -> Iterator[AblationStats]:
    """Give ``ablation``'s neurons their values on each row's donor row (``reference.donors``,
    :mod:`sparcom.causal.resample`) inside the block: call ``stats.before_batch(rows, batch)`` before each scored
    batch. Experts are removed as by :func:`ablate`; expert neurons cannot be resampled (a donor token need not be
    routed to the same expert)."""
    with _intervene(model, ablation, "resample", sites, expert_removal, reference) as stats:
        yield stats


@contextmanager
def amplify(model: nn.Module, components: ComponentSet, factor: float, *,
            sites: ModelSites | None = None) -> Iterator[None]:
    """Multiply ``components``' activations by ``factor`` on every token inside the block (the sufficiency pilot's
    steering, :mod:`sparcom.causal.sufficiency`); restore the model exactly afterwards. Only neurons at activation
    sites (dense and shared-expert): scaling a routed expert's neuron or an expert has no single meaning here."""
    sites = sites or model_sites(model)
    check_ablation(components, sites)
    routed = [k for k in components.kinds if KIND_TABLE[k].routed and components.size(k)]
    if routed:
        raise SparcomError(f"amplifying scales neurons at activation sites; the set holds {', '.join(routed)} "
                           "components (use a set of neuron or shared_neuron components)")
    undo: list[Callable[[], None]] = []
    try:
        for kind in components.kinds:
            for layer, members in sorted(components.members[kind].items()):
                if len(members):
                    site = sites.site(kind, layer)
                    hook = replace_units_hook(np.asarray(members), site.width, f"{kind} layer {layer}",
                                              lambda current: current * factor)
                    undo.append(site.module.register_forward_hook(hook, prepend=True).remove)
        yield
    finally:
        for step in reversed(undo):
            step()


def _units(sites: ModelSites, layer: int, indices: np.ndarray, kind: str, request: _Request) -> Callable[[], None]:
    site = sites.site(kind, layer)
    where = f"{kind} layer {layer}"
    if request.intervention == "zero":
        hook = zero_units_hook(indices, site.width, where)
    elif request.intervention == "mean":
        hook = replace_units_hook(indices, site.width, where, _constant(_layer_means(request, kind, layer)[indices]))
    else:
        hook = replace_units_hook(indices, site.width, where, _resampled(request.donors, where))
    return site.module.register_forward_hook(hook, prepend=True).remove


def _expert_neurons(sites: ModelSites, layer: int, pairs: np.ndarray, kind: str,
                    request: _Request) -> Callable[[], None]:
    pairs = pairs.reshape(-1, 2)
    if request.intervention == "zero":
        return _zero_down_columns(sites.moe[layer], pairs)
    if request.intervention == "mean":
        return _mean_expert_neurons(sites.moe[layer], pairs, _layer_means(request, kind, layer))
    raise SparcomError("expert neurons cannot be resample-ablated (a donor token is not routed to the same expert); "
                       "use --intervention zero or mean, or --targets neuron,shared_neuron")


def _remove_experts(sites: ModelSites, layer: int, experts: np.ndarray, kind: str,
                    request: _Request) -> Callable[[], None]:
    moe, stats = sites.moe[layer], request.stats
    mask = np.zeros(moe.num_experts, dtype=bool)
    mask[experts] = True
    lookup = PerDevice.tensor(mask, dtype=torch.bool)
    if request.expert_removal == "renormalize":
        return moe.experts.register_forward_pre_hook(_renormalize_pre_hook(lookup, stats), with_kwargs=True,
                                                     prepend=True).remove
    return ShadowAttribute(moe.router, "forward", _next_best_forward(moe, moe.router.forward, lookup, stats)).remove


def _deactivation(kind: Kind) -> Callable[..., Callable[[], None]]:
    """How a kind is deactivated (docs/causal.md, "The interventions"): a kind at an activation site through its
    outputs; expert neurons through their down-projection columns (zero) or their activation (mean); experts by
    taking them out of the routing (every intervention)."""
    if not kind.routed:
        return _units
    return _expert_neurons if kind.ndim == 2 else _remove_experts


_DEACTIVATE = {name: _deactivation(kind) for name, kind in KIND_TABLE.items()}
