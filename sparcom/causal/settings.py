"""How the causal check is run: its settings and the named targets (component kinds deactivated together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparcom.artifacts.causal import CAUSAL_FORMAT, CAUSAL_VERSION
from sparcom.causal.decisions import PARAMETRIC_MIN_SETS, TESTS
from sparcom.causal.interventions import EXPERT_REMOVAL
from sparcom.causal.statistics import REPLICATES
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS

FORMAT, VERSION = CAUSAL_FORMAT, CAUSAL_VERSION
#: Named targets: the component kinds ablated together. Any single kind name is a target too.
TARGETS: dict[str, tuple[str, ...]] = {
    "neurons": ("neuron", "shared_neuron", "expert_neuron"),
    "experts": ("expert",),
}
DEFAULT_SEEDS = 20


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
    #: Bootstrap replicates over rows for the intervals (statistics only: they do not change any NLL pass).
    replicates: int = REPLICATES
    #: How damage and specificity p-values are computed: empirical, parametric or auto (docs/causal.md).
    test: str = "auto"
    #: Score only the first N tokens of each reference response (None: all); the sequence ends after them.
    max_scored_tokens: int | None = None
    #: Cross-fitting: select on k − 1 folds of a run's instructions, score the held-out fold (None: a selection).
    folds: int | None = None

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
        if self.replicates < 1:
            raise SparcomError(f"--replicates must be at least 1, got {self.replicates}")
        if self.test not in TESTS:
            raise SparcomError(f"--test must be one of {', '.join(TESTS)}, got {self.test!r}")
        if self.test == "parametric" and self.seeds < PARAMETRIC_MIN_SETS:
            raise SparcomError(f"--test parametric needs at least {PARAMETRIC_MIN_SETS} random sets (--seeds), "
                               f"got {self.seeds}")
        if self.max_scored_tokens is not None and self.max_scored_tokens < 1:
            raise SparcomError(f"--max-scored-tokens must be at least 1, got {self.max_scored_tokens}")
        if self.folds is not None:
            if self.folds < 2:
                raise SparcomError(f"--folds must be at least 2, got {self.folds}")
            if self.exclude_profiled:
                raise SparcomError("--folds scores each profiled row with sets selected without it; "
                                   "--exclude-profiled does not apply (drop it)")
            if self.generate:
                raise SparcomError("--generate is not available with --folds yet; run it on a selection with "
                                   "--exclude-profiled")
        for target in self.targets or ():
            if target not in TARGETS and target not in KINDS:
                raise SparcomError(f"unknown target {target!r}; choose from {', '.join([*TARGETS, *KINDS])}")

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "seed": self.seed, "per_category": self.per_category,
                "batch_size": self.batch_size, "expert_removal": self.expert_removal,
                "targets": list(self.targets) if self.targets else None, "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "generate_seeds": self.generate_seeds,
                "exclude_profiled": self.exclude_profiled, "force": self.force, "unique": self.unique,
                "replicates": self.replicates, "test": self.test, "max_scored_tokens": self.max_scored_tokens,
                "folds": self.folds}
