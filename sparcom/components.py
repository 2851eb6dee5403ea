"""Sets of components and where they sit: the :class:`Layout` of one kind's components, flattened over layers.

For one kind (:mod:`sparcom.kinds`), every layer's array is flattened in layer order into a single vector of N
components; a :class:`Layout` remembers how to go back. It sits below analysis, artifacts and causal, which all
address components through it. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sparcom.errors import SparcomError


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
