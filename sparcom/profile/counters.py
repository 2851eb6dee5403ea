"""Exact integer counters (and float64 activation sums) that add and save (in the spirit of baukit's running statistics).

A :class:`CountStore` is a flat mapping from artifact keys (DESIGN §3, e.g. ``neuron/code/3``) to int64
tensors. Tensors stay on whatever device they were created on (each layer's own device under a device map)
until :meth:`state_dict` gathers them on the CPU. Runs of the same measurement merge by addition
(:func:`sparcom.artifacts.run.merge_runs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


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

    def zeros(self, key: str, shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Create (or return the existing) counter ``key``; the tensor is updated in place by the hooks.

        Counters are int64, except counts below the category (int32: a group's count never exceeds its tokens) and
        the activation sums (float64).
        """
        if key not in self._tensors:
            self._tensors[key] = torch.zeros(tuple(shape), dtype=dtype, device=device)
        return self._tensors[key]

    def add(self, key: str, value: torch.Tensor | int) -> None:
        """Add ``value`` to counter ``key`` (created as a scalar or with value's shape on first use)."""
        if key not in self._tensors:
            shape = value.shape if isinstance(value, torch.Tensor) else ()
            device = value.device if isinstance(value, torch.Tensor) else "cpu"
            self.zeros(key, shape, device)
        target = self._tensors[key]
        if isinstance(value, torch.Tensor):
            target += value.to(device=target.device, dtype=target.dtype)
        else:
            target += int(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All counters as contiguous CPU tensors, sorted by key (stable file bytes)."""
        return {key: self._tensors[key].detach().to("cpu").contiguous() for key in sorted(self._tensors)}

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the values of existing counters (keeping their devices) and add any new ones."""
        for key, value in tensors.items():
            if key in self._tensors:
                self._tensors[key].copy_(value.to(self._tensors[key].dtype))
            else:
                self._tensors[key] = value.to(torch.float64 if value.is_floating_point() else torch.int64).clone()
