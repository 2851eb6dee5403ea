"""Components and sets of them, in one address space: :class:`Component`, :class:`ComponentSet` and :class:`Layout`.

A :class:`Component` is one countable unit (a neuron, an expert, an expert neuron; :mod:`sparcom.kinds`). A
:class:`ComponentSet` is the one type of a set of them — a category's selection, a random control set, what the
causal check deactivates, the components an examples pass records — and converts to and from every other form:
the count-keyed masks of a selection file, one kind's flat mask over a :class:`Layout` (analysis), per-layer
indices, and component ids. Sizes and digests are derived from it. For one kind, a :class:`Layout` flattens every
layer's array in layer order into a single vector of N components and remembers how to go back. This module sits
below analysis, artifacts, causal and examples, which all address components through it. Pure numpy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from sparcom.errors import SparcomError
from sparcom.kinds import KINDS, CountKey, component_id, count_key, kind_of, parse_component_id


@dataclass(frozen=True)
class Layout:
    """Where each layer's components sit in the flat vector of a kind."""

    kind: str
    layers: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.array([int(np.prod(s)) for s in self.shapes], dtype=np.int64)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start of each layer in the flat vector, plus the total at the end."""
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def layer_slice(self, layer: int) -> slice:
        position = self.layers.index(layer)
        return slice(int(self.offsets[position]), int(self.offsets[position + 1]))

    def flatten(self, per_layer: Mapping[int, np.ndarray]) -> np.ndarray:
        """Concatenate per-layer arrays (shapes must match the layout) into one vector."""
        parts = []
        for layer, shape in zip(self.layers, self.shapes, strict=True):
            array = np.asarray(per_layer[layer])
            if array.shape != shape:
                raise SparcomError(f"{self.kind} layer {layer}: shape {array.shape} does not match {shape}")
            parts.append(array.reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0)

    def split(self, flat: np.ndarray) -> dict[int, np.ndarray]:
        """The inverse of :meth:`flatten` (views into ``flat``)."""
        return {layer: flat[self.layer_slice(layer)].reshape(shape) for layer, shape in zip(self.layers, self.shapes, strict=True)}

    @property
    def has_experts(self) -> bool:
        """True when each layer is [experts, neurons] (``expert_neuron``)."""
        return all(len(s) == 2 for s in self.shapes) and bool(self.shapes)

    def groups(self, by: str = "layer") -> Iterator[tuple[dict[str, int], slice]]:
        """Contiguous slices of the flat vector: one per layer, or per (layer, expert) for ``by='expert'``."""
        if by not in ("layer", "expert"):
            raise SparcomError(f"unknown grouping {by!r}; use 'layer' or 'expert'")
        for position, (layer, shape) in enumerate(zip(self.layers, self.shapes, strict=True)):
            start = int(self.offsets[position])
            if by == "expert" and len(shape) == 2:
                width = shape[1]
                for expert in range(shape[0]):
                    yield {"layer": layer, "expert": expert}, slice(start + expert * width, start + (expert + 1) * width)
            else:
                yield {"layer": layer}, slice(start, start + int(self.sizes[position]))

    def locate(self, flat_index: np.ndarray) -> dict[str, np.ndarray]:
        """Layer (and expert) and index within layer (or expert) of flat positions."""
        flat_index = np.asarray(flat_index, dtype=np.int64)
        position = np.searchsorted(self.offsets, flat_index, side="right") - 1
        within = flat_index - self.offsets[position]
        result = {"layer": np.asarray(self.layers, dtype=np.int64)[position]}
        if self.has_experts:
            widths = np.array([s[1] for s in self.shapes], dtype=np.int64)[position]
            result["expert"] = within // widths
            within = within % widths
        result["index"] = within
        return result

    def to_json(self) -> dict:
        return {"kind": self.kind, "layers": list(self.layers), "shapes": [list(s) for s in self.shapes]}


# ----------------------------------------------------------------------------------------------- one component


@dataclass(frozen=True, order=True)
class Component:
    """One countable unit: a neuron (kind, layer, index), an expert (``expert``, layer, expert number as index)
    or an expert neuron (``expert_neuron``, layer, index, expert)."""

    kind: str
    layer: int
    index: int
    expert: int | None = None

    @property
    def key(self) -> str:
        """``kind/layer/index`` or ``expert_neuron/layer/expert/index``: the id used in files and the report."""
        return component_id(self.kind, self.layer, self.index, self.expert)

    @classmethod
    def from_key(cls, key: str) -> Component:
        return cls(*parse_component_id(key))

    @property
    def position(self) -> tuple[int, ...]:
        """Its index in its layer's array: (index,), or (expert, index) for a 2-D kind."""
        return (self.index,) if self.expert is None else (self.expert, self.index)

    def describe(self) -> str:
        if kind_of(self.kind).routed and kind_of(self.kind).ndim == 1:
            return f"layer {self.layer}, expert {self.index}"
        if self.expert is not None:
            return f"layer {self.layer}, expert {self.expert}, neuron {self.index}"
        return f"layer {self.layer}, neuron {self.index}"


# ----------------------------------------------------------------------------------------------- a set of them


class LayerShapes(Protocol):
    """Anything that knows the shape of a kind's array at a layer (a model's site map, :meth:`ComponentSet.shape`)."""

    def shape(self, kind: str, layer: int) -> tuple[int, ...] | None: ...


def _members(mask: np.ndarray) -> np.ndarray:
    """The members of one layer's boolean mask: sorted indices (1-D) or (expert, neuron) rows in row-major order."""
    return np.flatnonzero(mask).astype(np.int64) if mask.ndim == 1 else np.argwhere(mask).astype(np.int64)


@dataclass(frozen=True)
class ComponentSet:
    """A set of components of one or more kinds: per kind and layer, its members and the layer's array shape.

    Members of a 1-D kind are sorted index vectors; of a 2-D kind (``expert_neuron``), [n, 2] rows of (expert,
    neuron) in row-major order. Every layer of ``shapes`` is part of the set's address space, members or not, so
    a random set of the same shape can be drawn from it without the model (:mod:`sparcom.random_sets`).
    """

    members: Mapping[str, Mapping[int, np.ndarray]]
    shapes: Mapping[str, Mapping[int, tuple[int, ...]]]
    label: str = ""

    # -- building

    @classmethod
    def from_masks(cls, masks: Mapping[str, np.ndarray], category: str, kinds: Sequence[str] = KINDS,
                   label: str = "") -> ComponentSet:
        """One category's set from boolean masks keyed like the counts (``{kind}/{category}/{layer}``)."""
        layers: dict[str, dict[int, np.ndarray]] = {}
        for key, mask in masks.items():
            parsed = CountKey.parse(key)
            if parsed is not None and parsed.kind in kinds and parsed.category == category:
                layers.setdefault(parsed.kind, {})[parsed.layer] = np.asarray(mask, dtype=bool)
        return cls.from_layer_masks(layers, label or category)

    @classmethod
    def from_layer_masks(cls, masks: Mapping[str, Mapping[int, np.ndarray]], label: str = "") -> ComponentSet:
        """From ``{kind: {layer: boolean mask}}``."""
        members: dict[str, dict[int, np.ndarray]] = {}
        shapes: dict[str, dict[int, tuple[int, ...]]] = {}
        for kind in [k for k in KINDS if k in masks]:
            for layer in sorted(masks[kind]):
                mask = np.asarray(masks[kind][layer], dtype=bool)
                members.setdefault(kind, {})[layer] = _members(mask)
                shapes.setdefault(kind, {})[layer] = tuple(int(s) for s in mask.shape)
        return cls(members, shapes, label)

    @classmethod
    def from_flat(cls, layout: Layout, flat: np.ndarray, label: str = "") -> ComponentSet:
        """One kind's set from its flat boolean mask [N] over ``layout``."""
        return cls.from_layer_masks({layout.kind: layout.split(np.asarray(flat, dtype=bool))}, label)

    @classmethod
    def from_indices(cls, indices: Mapping[str, Mapping[int, object]], sites: LayerShapes,
                     label: str = "") -> ComponentSet:
        """From plain index lists (e.g. ``{"neuron": {0: [3, 7]}}``, expert neurons as (expert, neuron) pairs);
        the shapes come from ``sites`` (a model's site map)."""
        masks: dict[str, dict[int, np.ndarray]] = {}
        for kind, layers in indices.items():
            for layer, chosen in layers.items():
                shape = sites.shape(kind, int(layer))
                if shape is None:
                    raise SparcomError(f"layer {layer} of this model has no {kind} components")
                rows = np.asarray(chosen, dtype=np.int64).reshape(-1, len(shape))
                if rows.size and (rows.min() < 0 or np.any(rows >= np.asarray(shape))):
                    raise SparcomError(f"{kind} indices of layer {layer} are out of range for shape {shape}")
                mask = np.zeros(shape, dtype=bool)
                mask[tuple(rows.T)] = True
                masks.setdefault(kind, {})[int(layer)] = mask
        return cls.from_layer_masks(masks, label)

    @classmethod
    def from_ids(cls, components: Iterable[Component | str], sites: LayerShapes, label: str = "") -> ComponentSet:
        """From components (or their ids); each is checked against ``sites`` (a model's site map)."""
        indices: dict[str, dict[int, list[tuple[int, ...]]]] = {}
        for c in components:
            c = c if isinstance(c, Component) else Component.from_key(c)
            shape = sites.shape(c.kind, c.layer)
            if shape is None:
                raise SparcomError(f"component {c.key}: this model has no {c.kind} site at layer {c.layer}")
            if len(shape) == 2 and (c.expert is None or not 0 <= c.expert < shape[0]):
                raise SparcomError(f"component {c.key}: expert {c.expert} is not in layer {c.layer}")
            if not 0 <= c.index < shape[-1]:
                raise SparcomError(f"component {c.key}: index {c.index} is outside 0..{shape[-1] - 1}")
            indices.setdefault(c.kind, {}).setdefault(c.layer, []).append(c.position)
        return cls.from_indices(indices, sites, label)

    # -- reading

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.members]

    def shape(self, kind: str, layer: int) -> tuple[int, ...] | None:
        return self.shapes.get(kind, {}).get(layer)

    def size(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else self.kinds
        return int(sum(len(v) for k in kinds for v in self.members.get(k, {}).values()))

    def is_empty(self) -> bool:
        return self.size() == 0

    def counts(self, kind: str) -> dict[int, int]:
        """Members per layer."""
        return {layer: len(v) for layer, v in sorted(self.members.get(kind, {}).items())}

    def expert_counts(self, kind: str = "expert_neuron") -> dict[int, np.ndarray]:
        """A 2-D kind's members per expert, per layer ([E] counts)."""
        return {layer: np.bincount(rows[:, 0], minlength=self.shapes[kind][layer][0]) if len(rows)
                else np.zeros(self.shapes[kind][layer][0], dtype=np.int64)
                for layer, rows in sorted(self.members.get(kind, {}).items())}

    def mask(self, kind: str, layer: int) -> np.ndarray:
        """One layer's boolean mask."""
        mask = np.zeros(self.shapes[kind][layer], dtype=bool)
        mask[tuple(np.asarray(self.members[kind][layer]).reshape(-1, mask.ndim).T)] = True
        return mask

    def layout(self, kind: str) -> Layout:
        """The flat address space of one kind over the set's layers."""
        layers = tuple(sorted(self.shapes[kind]))
        return Layout(kind, layers, tuple(tuple(self.shapes[kind][j]) for j in layers))

    def flat(self, kind: str) -> np.ndarray:
        """One kind's flat boolean mask over :meth:`layout`."""
        return self.layout(kind).flatten({j: self.mask(kind, j) for j in self.shapes[kind]}).astype(bool)

    def to_masks(self, category: str) -> dict[str, np.ndarray]:
        """Boolean masks keyed like the counts, as a selection file stores them."""
        return {count_key(kind, category, layer): self.mask(kind, layer)
                for kind in self.kinds for layer in sorted(self.shapes[kind])}

    def ids(self) -> list[Component]:
        """The members as components, in kind, layer and index order."""
        found = []
        for kind in self.kinds:
            for layer, rows in sorted(self.members[kind].items()):
                found += [Component(kind, layer, int(r)) if np.ndim(r) == 0 else
                          Component(kind, layer, int(r[1]), int(r[0])) for r in np.asarray(rows)]
        return found

    def block_counts(self) -> list[dict[str, int | str | None]]:
        """Members per layer, and per expert for a 2-D kind (the blocks whose sizes a random set keeps)."""
        rows: list[dict[str, int | str | None]] = []
        for kind in self.kinds:
            if kind_of(kind).ndim == 2:
                rows += [{"kind": kind, "layer": layer, "expert": e, "selected": int(n)}
                         for layer, per_expert in self.expert_counts(kind).items() for e, n in enumerate(per_expert) if n]
            else:
                rows += [{"kind": kind, "layer": layer, "expert": None, "selected": n}
                         for layer, n in self.counts(kind).items()]
        return rows

    def digest(self) -> str:
        """SHA-256 of the members and shapes (what the set is, not its label)."""
        hashed = hashlib.sha256()
        for kind in self.kinds:
            for layer in sorted(self.shapes[kind]):
                hashed.update(f"{kind}/{layer}/{self.shapes[kind][layer]}".encode())
                hashed.update(np.ascontiguousarray(self.members[kind][layer], dtype=np.int64).tobytes())
        return hashed.hexdigest()

    # -- combining

    def without(self, others: Iterable[ComponentSet], label: str | None = None) -> ComponentSet:
        """The members that are in none of ``others`` (compared kind by kind, layer by layer)."""
        others = list(others)
        masks = {kind: {layer: self.mask(kind, layer) for layer in self.shapes[kind]} for kind in self.kinds}
        for other in others:
            for kind, layers in masks.items():
                for layer, mask in layers.items():
                    if layer in other.members.get(kind, {}):
                        mask &= ~other.mask(kind, layer)
        return ComponentSet.from_layer_masks(masks, self.label if label is None else label)

    @staticmethod
    def union(sets: Iterable[ComponentSet], label: str = "") -> ComponentSet:
        """Every member of every set (of the kinds and layers they have)."""
        masks: dict[str, dict[int, np.ndarray]] = {}
        for one in sets:
            for kind in one.kinds:
                for layer in one.shapes[kind]:
                    current = masks.setdefault(kind, {}).get(layer)
                    mask = one.mask(kind, layer)
                    masks[kind][layer] = mask if current is None else current | mask
        return ComponentSet.from_layer_masks(masks, label)
