"""How the causal check is run: its settings and the named targets (component kinds deactivated together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparcom.causal.interventions import EXPERT_REMOVAL
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS

FORMAT = "sparcom-causal"
VERSION = 1
#: Named targets: the component kinds ablated together. Any single kind name is a target too.
TARGETS: dict[str, tuple[str, ...]] = {
    "neurons": ("neuron", "shared_neuron", "expert_neuron"),
    "experts": ("expert",),
}
DEFAULT_SEEDS = 20
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class CausalSettings:
    """How the causal check is run."""

    seeds: int = DEFAULT_SEEDS
    seed: int = 0
    per_category: int | None = None
    batch_size: int = 8
    expert_removal: str = "renormalize"
    targets: tuple[str, ...] | None = None
    generate: bool = False
    max_new_tokens: int = 64
    generate_seeds: int = 3
    exclude_profiled: bool = False
    force: bool = False
    #: Deactivate only the components unique to each category (in its set and in no other category's set).
    unique: bool = False

    def check(self) -> None:
        if self.seeds < 0:
            raise SparcomError(f"--seeds must be 0 (no random baseline) or more, got {self.seeds}")
        if self.per_category is not None and self.per_category < 1:
            raise SparcomError(f"--per-category must be at least 1, got {self.per_category}")
        if self.batch_size < 1:
            raise SparcomError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.expert_removal not in EXPERT_REMOVAL:
            raise SparcomError(f"--expert-removal must be one of {', '.join(EXPERT_REMOVAL)}, "
                               f"got {self.expert_removal!r}")
        if self.max_new_tokens < 1:
            raise SparcomError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.generate_seeds < 0:
            raise SparcomError(f"--generate-seeds must be 0 or more, got {self.generate_seeds}")
        for target in self.targets or ():
            if target not in TARGETS and target not in KINDS:
                raise SparcomError(f"unknown target {target!r}; choose from {', '.join([*TARGETS, *KINDS])}")

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "seed": self.seed, "per_category": self.per_category,
                "batch_size": self.batch_size, "expert_removal": self.expert_removal,
                "targets": list(self.targets) if self.targets else None, "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "generate_seeds": self.generate_seeds,
                "exclude_profiled": self.exclude_profiled, "force": self.force, "unique": self.unique}
