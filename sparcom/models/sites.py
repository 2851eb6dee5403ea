"""One site map per model: every place sparcom counts and intervenes on, built from the family table alone.

The profiler's counting hooks and the causal check's interventions both take a :class:`ModelSites`, so what is
counted and what is deactivated are the same modules by construction (as in LAPE, where counting and zeroing patch
the same spot, and baukit, where reading and editing share one named site). Per decoder layer it holds:

- the dense MLP activation module and its width (``neuron``), for every layer without routed experts;
- for a MoE layer: the routed experts module with its weight layout (``expert``, ``expert_neuron``), the router and
  top-k, and the shared expert's activation module and width (``shared_neuron``) where the family has one.

Nothing is discovered by name or weight shape: a path the family entry names and the model lacks is an error at
load time that names the path (like nnterp's load-time check). The module also owns the small pieces both
consumers need: the experts call signature, shadowing an attribute reversibly, and a tensor cached per device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from sparcom.errors import SparcomError
from sparcom.kinds import KINDS, kind_of
from sparcom.models.families import HOW_TO_ADD, Family, family_for
from sparcom.models.moe import ExpertsLayout, experts_layout


def get_path(root: nn.Module, dotted: str) -> nn.Module:
    """Follow a dotted attribute path ("model.layers") from ``root``."""
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


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


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@dataclass(frozen=True)
class NeuronSite:
    """An activation module whose output's last axis holds one layer's neurons (A = f(gate(x)))."""

    layer: int
    module: nn.Module
    width: int
    device: torch.device


@dataclass(frozen=True)
class MoeSite:
    """One MoE layer: its routed experts module (and layout), its router and top-k."""

    layer: int
    experts: nn.Module
    router: nn.Module
    layout: ExpertsLayout
    top_k: int | None
    device: torch.device

    @property
    def num_experts(self) -> int:
        return self.layout.num_experts

    @property
    def width(self) -> int:
        """Neurons per expert (I_e)."""
        return self.layout.width


def site_shape(kind: str, site: NeuronSite | MoeSite) -> tuple[int, ...]:
    """The count (and mask) shape of ``kind`` at ``site``: an activation site's neurons [I]; a MoE layer's experts
    [E], or experts × neurons [E, I_e] for a 2-D kind."""
    if isinstance(site, NeuronSite):
        return (site.width,)
    return (site.num_experts, site.width)[:kind_of(kind).ndim]


@dataclass(frozen=True)
class ModelSites:
    """Every site of one model, by decoder layer (dicts in layer order)."""

    family: Family
    backbone: nn.Module
    layers: int
    dense: dict[int, NeuronSite]
    shared: dict[int, NeuronSite]
    moe: dict[int, MoeSite]

    def sites_of(self, kind: str) -> dict[int, NeuronSite] | dict[int, MoeSite]:
        """The sites ``kind`` lives at, by layer (its :class:`~sparcom.kinds.Kind` names the map)."""
        return getattr(self, kind_of(kind).site)

    def site(self, kind: str, layer: int) -> NeuronSite | MoeSite | None:
        """The site of ``kind`` in ``layer``, or None when the layer has no such part."""
        return self.sites_of(kind).get(layer)

    def shape(self, kind: str, layer: int) -> tuple[int, ...] | None:
        """The count (and mask) shape of ``kind`` at ``layer``, or None when the layer has no such part: an
        activation site's neurons [I]; a MoE layer's experts [E], or experts × neurons [E, I_e] for a 2-D kind."""
        site = self.site(kind, layer)
        return None if site is None else site_shape(kind, site)

    def shapes(self, kinds: tuple[str, ...] | None = None) -> dict[str, dict[int, tuple[int, ...]]]:
        """``{kind: {layer: shape}}`` for every kind the model has (or those of ``kinds``)."""
        result: dict[str, dict[int, tuple[int, ...]]] = {}
        for kind in kinds or KINDS:
            layers = {j: self.shape(kind, j) for j in range(self.layers)}
            present = {j: s for j, s in layers.items() if s is not None}
            if present:
                result[kind] = present
        return result

    def description(self, model: nn.Module) -> dict[str, Any]:
        """What a run's manifest records about the model's architecture and sizes."""
        config = model.config
        sizes: dict[str, Any] = {
            "layers": self.layers,
            "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "n_embd", None),
            "mlp_neurons": [self.dense[j].width if j in self.dense else None for j in range(self.layers)],
        }
        if self.moe:
            experts = sorted({site.num_experts for site in self.moe.values()})
            sizes["moe"] = {
                "num_experts": experts[0] if len(experts) == 1 else [
                    self.moe[j].num_experts if j in self.moe else None for j in range(self.layers)],
                "top_k": next(iter(self.moe.values())).top_k,
                "moe_layers": sorted(self.moe),
                "dense_layers": sorted(self.dense),
                "expert_neurons": [self.moe[j].width if j in self.moe else None for j in range(self.layers)],
                "shared_neurons": [self.shared[j].width if j in self.shared else None for j in range(self.layers)]
                if self.shared else None,
            }
        return {"architecture": type(model).__name__, "model_type": config.model_type, "family": self.family.name,
                "sizes": sizes}


def _missing(family: Family, index: int, what: str, path: str) -> SparcomError:
    return SparcomError(f"layer {index} of this {family.name} model has no {what} at {path!r} (the family table's "
                        f"path); fix the {family.name!r} entry in sparcom/models/families.py")


def _top_k(router: nn.Module, model: nn.Module, family: Family) -> int | None:
    value = getattr(router, "top_k", None)
    if value is None:
        value = getattr(model.config, family.top_k_config, None)
    return int(value) if isinstance(value, int) else None


def _neuron_site(index: int, layer: nn.Module, family: Family, activation: str, width_from: str, fused: bool,
                 what: str) -> NeuronSite:
    module = find_path(layer, activation)
    if module is None:
        raise _missing(family, index, f"{what} activation module", activation)
    projection = find_path(layer, width_from)
    if projection is None:
        raise _missing(family, index, f"{what} width projection", width_from)
    width = width_of(projection)
    return NeuronSite(index, module, width // 2 if fused else width, _device_of(layer))


def model_sites(model: nn.Module) -> ModelSites:
    """Build the site map of ``model`` from its family entry; a one-line error names any path that is missing."""
    family = family_for(getattr(model.config, "model_type", "unknown"))
    backbone = find_path(model, family.backbone)
    if backbone is None:
        raise SparcomError(f"this {family.name} model has no decoder stack at {family.backbone!r}; fix the "
                           f"{family.name!r} entry in sparcom/models/families.py")
    layers = find_path(backbone, family.layers)
    if layers is None:
        raise SparcomError(f"this {family.name} model has no decoder layers at {family.backbone}.{family.layers}; "
                           f"fix the {family.name!r} entry in sparcom/models/families.py")
    dense: dict[int, NeuronSite] = {}
    shared: dict[int, NeuronSite] = {}
    moe: dict[int, MoeSite] = {}
    for index, layer in enumerate(layers):
        experts = find_path(layer, family.experts)
        if experts is None:
            dense[index] = _neuron_site(index, layer, family, family.activation, family.width_from,
                                        family.fused_gate_up, "dense MLP")
            continue
        router = find_path(layer, family.router)
        if router is None:
            raise _missing(family, index, "router", str(family.router))
        layout = experts_layout(experts, family.expert_activation_rule)
        moe[index] = MoeSite(index, experts, router, layout, _top_k(router, model, family), _device_of(experts))
        if family.shared_activation is not None and find_path(layer, family.shared_activation) is not None:
            shared[index] = _neuron_site(index, layer, family, family.shared_activation, str(family.shared_width_from),
                                         family.shared_fused_gate_up, "shared-expert")
    seen: dict[int, int] = {}
    for site in [*dense.values(), *shared.values()]:
        owner = seen.setdefault(id(site.module), site.layer)
        if owner != site.layer:
            raise SparcomError(f"the activation module of layer {site.layer} is shared with layer {owner}; sparcom "
                               "cannot count or deactivate one layer's neurons without the other's")
    return ModelSites(family, backbone, len(layers), dense, shared, moe)


# --------------------------------------------------------------------------------------------- shared mechanics


@dataclass
class ExpertsCall:
    """One call of a routed experts module, ``experts(hidden_states, top_k_index, top_k_weights)``."""

    hidden_states: torch.Tensor
    top_k_index: torch.Tensor
    top_k_weights: torch.Tensor | None
    args: tuple
    kwargs: dict

    INDEX_NAMES = ("top_k_index", "router_indices", "selected_experts")
    WEIGHT_NAMES = ("top_k_weights", "routing_weights")

    @classmethod
    def parse(cls, args: tuple, kwargs: dict) -> ExpertsCall:
        """Read the call's arguments, positional or by keyword; an error for anything else."""
        hidden = args[0] if args else kwargs.get("hidden_states")
        index = args[1] if len(args) > 1 else next((kwargs[k] for k in cls.INDEX_NAMES if k in kwargs), None)
        weights = args[2] if len(args) > 2 else next((kwargs[k] for k in cls.WEIGHT_NAMES if k in kwargs), None)
        if not isinstance(hidden, torch.Tensor) or not isinstance(index, torch.Tensor):
            raise SparcomError("the experts module was not called as experts(hidden_states, top_k_index, "
                               "top_k_weights); sparcom supports experts modules of the transformers 5 form only")
        return cls(hidden, index, weights if isinstance(weights, torch.Tensor) else None, args, kwargs)

    def with_weights(self, weights: torch.Tensor) -> tuple[tuple, dict]:
        """(args, kwargs) of the same call with other top-k weights (a forward pre-hook's return value)."""
        if len(self.args) > 2:
            return (*self.args[:2], weights, *self.args[3:]), self.kwargs
        name = next((k for k in self.WEIGHT_NAMES if k in self.kwargs), "top_k_weights")
        return self.args, {**self.kwargs, name: weights}


class ShadowAttribute:
    """Shadow ``owner.name`` with an instance attribute; :meth:`remove` puts back exactly what was there."""

    def __init__(self, owner: object, name: str, value: object) -> None:
        self.owner, self.name = owner, name
        self.had = name in owner.__dict__
        self.previous = owner.__dict__.get(name)
        owner.__dict__[name] = value

    def remove(self) -> None:
        if self.had:
            self.owner.__dict__[self.name] = self.previous
        else:
            self.owner.__dict__.pop(self.name, None)


T = TypeVar("T")


class PerDevice(Generic[T]):
    """A value made once per device it is asked for (index tensors and masks for models spread over devices)."""

    def __init__(self, make: Callable[[torch.device], T]) -> None:
        self.make = make
        self.cache: dict[torch.device, T] = {}

    @classmethod
    def tensor(cls, values: Any, dtype: torch.dtype = torch.long) -> PerDevice[torch.Tensor]:
        cpu = torch.as_tensor(values, dtype=dtype)
        return cls(lambda device: cpu.to(device, non_blocking=True))

    def on(self, device: torch.device) -> T:
        if device not in self.cache:
            self.cache[device] = self.make(device)
        return self.cache[device]
