"""Where a model's components can be deactivated: dense MLP activations, shared-expert activations, MoE layers.

Dense decoder layers and the family's layer list come from the family adapter (:mod:`sparcom.models.adapters`).
For Mixture-of-Experts layers this module locates, on its own, the three things an intervention needs:

- the routed experts module (the transformers 5 form: 3-D ``gate_up_proj``/``up_proj`` and ``down_proj`` weights,
  ``forward(hidden_states, top_k_index, top_k_weights)``), at the adapter's ``experts`` path when it names one,
  otherwise found by its weights;
- the router, the experts module's sibling called ``gate`` or ``router`` that returns
  ``(router_logits, top_k_weights, top_k_index)``;
- the shared expert's activation module, at the adapter's ``shared_activation`` path or a ``shared_expert``,
  ``shared_experts`` or ``shared_mlp`` sibling.

A layer is MoE when it holds an experts module and dense otherwise (DeepSeek's first dense layers, Qwen-MoE's
``mlp_only_layers``), exactly as the profiler classifies layers, so selection masks line up with sites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sparcom.errors import SparcomError
from sparcom.models.adapters import FamilyAdapter, adapter_for, find_path, get_path, width_of

ROUTER_NAMES: tuple[str, ...] = ("gate", "router")
SHARED_NAMES: tuple[str, ...] = ("shared_expert", "shared_experts", "shared_mlp")
ACTIVATION_NAMES: tuple[str, ...] = ("act_fn", "activation_fn", "activation", "act")
SHARED_GATE_NAMES: tuple[tuple[str, bool], ...] = (("gate_proj", False), ("gate_up_proj", True),
                                                   ("input_linear", True))


@dataclass
class UnitSite:
    """An activation module whose output's last axis holds one layer's neurons (A = f(gate(x)))."""

    layer: int
    module: nn.Module
    width: int


@dataclass
class MoeSite:
    """One MoE layer: its routed experts module, its router and the shapes an intervention needs."""

    layer: int
    experts: nn.Module
    router: nn.Module | None
    num_experts: int
    width: int  # neurons per expert (I_e)
    #: ``down_proj`` is stored [E, I_e, H] (x @ W) rather than [E, H, I_e] (F.linear orientation).
    transposed: bool
    top_k: int | None


@dataclass
class CausalSites:
    """Every place of a model where :func:`sparcom.causal.interventions.ablate` can act, by layer."""

    layers: int
    family: str
    dense: dict[int, UnitSite] = field(default_factory=dict)
    shared: dict[int, UnitSite] = field(default_factory=dict)
    moe: dict[int, MoeSite] = field(default_factory=dict)

    def shape(self, kind: str, layer: int) -> tuple[int, ...] | None:
        """The mask shape of ``kind`` at ``layer`` (as in the counts), or None when the layer has no such part."""
        if kind == "neuron":
            site = self.dense.get(layer)
            return None if site is None else (site.width,)
        if kind == "shared_neuron":
            site = self.shared.get(layer)
            return None if site is None else (site.width,)
        moe = self.moe.get(layer)
        if moe is None:
            return None
        if kind == "expert":
            return (moe.num_experts,)
        if kind == "expert_neuron":
            return (moe.num_experts, moe.width)
        raise SparcomError(f"unknown component kind {kind!r}; known: neuron, shared_neuron, expert, expert_neuron")


def _is_experts_module(module: nn.Module) -> bool:
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", None)
    if up is None:
        up = getattr(module, "up_proj", None)
    return isinstance(down, torch.Tensor) and down.dim() == 3 and isinstance(up, torch.Tensor) and up.dim() == 3


def _experts_in(layer: nn.Module, adapter: FamilyAdapter) -> tuple[str, nn.Module] | None:
    """(dotted path, module) of the layer's routed experts, or None for a dense layer."""
    path = getattr(adapter, "experts", None)
    if path:
        module = find_path(layer, path)
        return None if module is None else (path, module)
    for name, module in layer.named_modules():
        if name and _is_experts_module(module):
            return name, module
    return None


def _router_of(parent: nn.Module, experts: nn.Module) -> nn.Module | None:
    for name in ROUTER_NAMES:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module) and module is not experts:
            return module
    return None


def _activation_of(module: nn.Module) -> nn.Module | None:
    for name in ACTIVATION_NAMES:
        found = getattr(module, name, None)
        if isinstance(found, nn.Module):
            return found
    return None


def _shared_site(index: int, layer: nn.Module, parent: nn.Module, adapter: FamilyAdapter) -> UnitSite | None:
    path = getattr(adapter, "shared_activation", None)
    if path:
        module = find_path(layer, path)
        if module is None:
            return None
        width = width_of(get_path(layer, adapter.shared_width))
        return UnitSite(index, module, width // 2 if adapter.shared_fused_gate_up else width)
    for owner in (parent, layer):
        for name in SHARED_NAMES:
            shared = getattr(owner, name, None)
            if not isinstance(shared, nn.Module):
                continue
            activation = _activation_of(shared)
            for gate_name, fused in SHARED_GATE_NAMES:
                gate = getattr(shared, gate_name, None)
                if activation is not None and isinstance(gate, nn.Module):
                    width = width_of(gate)
                    return UnitSite(index, activation, width // 2 if fused else width)
    return None


def _top_k(router: nn.Module | None, model: nn.Module, adapter: FamilyAdapter) -> int | None:
    value = getattr(router, "top_k", None) if router is not None else None
    if value is None:
        value = getattr(model.config, getattr(adapter, "top_k", "num_experts_per_tok"), None)
    return int(value) if isinstance(value, int) else None


def find_sites(model: nn.Module) -> CausalSites:
    """Locate every dense activation, shared-expert activation and MoE layer of ``model``."""
    adapter = adapter_for(getattr(model.config, "model_type", "unknown"))
    layers = get_path(get_path(model, adapter.backbone), adapter.layers)
    sites = CausalSites(len(layers), adapter.name)
    seen: dict[int, str] = {}
    for index, layer in enumerate(layers):
        found = _experts_in(layer, adapter)
        if found is not None:
            path, experts = found
            parent = get_path(layer, path.rsplit(".", 1)[0]) if "." in path else layer
            down = experts.down_proj
            transposed = bool(getattr(experts, "is_transposed", False))
            router = _router_of(parent, experts)
            sites.moe[index] = MoeSite(index, experts, router, int(down.shape[0]),
                                       int(down.shape[1] if transposed else down.shape[2]), transposed,
                                       _top_k(router, model, adapter))
            shared = _shared_site(index, layer, parent, adapter)
            if shared is not None:
                sites.shared[index] = shared
            continue
        activation = find_path(layer, adapter.activation)
        if activation is None:
            raise SparcomError(f"layer {index} of this {adapter.name} model has neither routed experts nor a dense "
                               f"MLP activation at {adapter.activation!r}")
        width = width_of(get_path(layer, adapter.gate_width))
        sites.dense[index] = UnitSite(index, activation, width // 2 if adapter.fused_gate_up else width)
    for site in [*sites.dense.values(), *sites.shared.values()]:
        owner = seen.setdefault(id(site.module), f"layer {site.layer}")
        if owner != f"layer {site.layer}":
            raise SparcomError(f"the activation module of layer {site.layer} is shared with {owner}; "
                               "sparcom cannot deactivate one layer's neurons without the other's")
    return sites
