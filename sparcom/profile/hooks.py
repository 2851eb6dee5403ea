"""Forward hooks that turn activations into counts inside the hook call.

The runner publishes, before each forward pass, which flattened token positions of the batch are counted for
which category (:class:`BatchSelection`). Each hook compares the activation with zero on those rows only and
adds the column sums to its layer's counter; the activation tensor is dropped when the hook returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sparcom.profile.counters import CountStore


@dataclass
class CategoryRows:
    """The counted rows of one category in the flattened [batch × sequence] activations."""

    category: str
    rows: torch.Tensor  # int64 [n]
    #: Poisson bootstrap weight of each counted row [replicates, n], or None when bootstrap is off.
    replicate_weights: torch.Tensor | None = None


@dataclass
class BatchSelection:
    """What the hooks count in the current batch; cached per device for models spread over devices."""

    groups: list[CategoryRows]
    _per_device: dict[torch.device, list[CategoryRows]] = field(default_factory=dict)

    def on(self, device: torch.device) -> list[CategoryRows]:
        if device not in self._per_device:
            self._per_device[device] = [
                CategoryRows(
                    g.category,
                    g.rows.to(device, non_blocking=True),
                    None if g.replicate_weights is None else g.replicate_weights.to(device, non_blocking=True),
                )
                for g in self.groups
            ]
        return self._per_device[device]


class SelectionBoard:
    """Shared slot the runner writes the current batch's selection into and every hook reads."""

    def __init__(self) -> None:
        self.current: BatchSelection | None = None


def count_active(
    store: CountStore, board: SelectionBoard, key_prefix: str, layer: int, width: int, replicates: int
):
    """Build a forward hook that counts rows with activation > 0 into ``{key_prefix}/{cat}/{layer}``."""
    counters: dict[str, torch.Tensor] = {}
    boot: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args, output: torch.Tensor) -> None:
        selection = board.current
        if selection is None:
            return
        flat = output.reshape(-1, width)
        for group in selection.on(flat.device):
            counter = counters.get(group.category)
            if counter is None or counter.device != flat.device:
                counter = store.zeros(f"{key_prefix}/{group.category}/{layer}", (width,), flat.device)
                if counter.device != flat.device:  # created earlier on another device (resume, device map)
                    counter.data = counter.data.to(flat.device)
                counters[group.category] = counter
            active = flat.index_select(0, group.rows) > 0
            counter += active.sum(0)
            if replicates:
                key = f"bootstrap/{key_prefix}/{group.category}/{layer}"
                target = boot.get(group.category)
                if target is None:
                    target = store.zeros(key, (replicates, width), flat.device)
                    boot[group.category] = target
                # Exact: float32 sums of small integers stay exact far beyond any batch's token count.
                target += (group.replicate_weights @ active.to(torch.float32)).round().to(torch.int64)

    return hook
