"""Exact integer counters that add, merge and save (in the spirit of baukit's running statistics).

A :class:`CountStore` is a flat mapping from artifact keys (DESIGN §3, e.g. ``neuron/code/3``) to int64
tensors. Tensors stay on whatever device they were created on (each layer's own device under a device map)
until :meth:`state_dict` gathers them on the CPU. Two stores of the same model and settings merge by addition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from sparcom.errors import SparcomError


class CountStore:
    """Named int64 count tensors."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def keys(self) -> Iterable[str]:
        return self._tensors.keys()

    def zeros(self, key: str, shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu") -> torch.Tensor:
        """Create (or return the existing) counter ``key``; the tensor is updated in place by the hooks."""
        if key not in self._tensors:
            self._tensors[key] = torch.zeros(tuple(shape), dtype=torch.int64, device=device)
        return self._tensors[key]

    def add(self, key: str, value: torch.Tensor | int) -> None:
        """Add ``value`` to counter ``key`` (created as a scalar or with value's shape on first use)."""
        if key not in self._tensors:
            shape = value.shape if isinstance(value, torch.Tensor) else ()
            device = value.device if isinstance(value, torch.Tensor) else "cpu"
            self.zeros(key, shape, device)
        target = self._tensors[key]
        if isinstance(value, torch.Tensor):
            target += value.to(device=target.device, dtype=torch.int64)
        else:
            target += int(value)

    def merge(self, other: CountStore | Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Add another store key by key; shapes must agree, and with ``strict`` the key sets too."""
        tensors = other.state_dict() if isinstance(other, CountStore) else dict(other)
        if strict and self._tensors and set(tensors) != set(self._tensors):
            only_here = sorted(set(self._tensors) - set(tensors))[:3]
            only_there = sorted(set(tensors) - set(self._tensors))[:3]
            raise SparcomError(f"count keys differ (only in one: {only_here}, only in the other: {only_there})")
        for key, value in tensors.items():
            if key in self._tensors and self._tensors[key].shape != value.shape:
                raise SparcomError(
                    f"count {key!r} has shape {tuple(value.shape)} in one run and {tuple(self._tensors[key].shape)} "
                    "in the other"
                )
            self.add(key, value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All counters as contiguous CPU tensors, sorted by key (stable file bytes)."""
        return {key: self._tensors[key].detach().to("cpu").contiguous() for key in sorted(self._tensors)}

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the values of existing counters (keeping their devices) and add any new ones."""
        for key, value in tensors.items():
            if key in self._tensors:
                self._tensors[key].copy_(value.to(torch.int64))
            else:
                self._tensors[key] = value.to(torch.int64).clone()
