"""The counts vocabulary: the component kinds (one table, one order) and the key grammar of counts and masks.

A :class:`Kind` says what a kind of component is — its names, how many axes one layer's array has and which site
of a model it lives at — so code asks the table instead of testing kind names.

Every count, selection mask and intervention is addressed by a key (DESIGN §3):

- ``tokens/{cat}`` and ``instructions/{cat}``: scalars, the counted tokens and instructions of a category;
- ``{kind}/{cat}/{layer}``: the counts (or mask) of one component kind in one decoder layer (0-based);
- ``bootstrap/`` + any of the above: the Poisson-bootstrap replicate counters ([R, ...]);
- ``groups/tokens`` and ``groups/{kind}/{layer}``: counts below the category, one row per group (``--group-by``);
- ``sums/{kind}/{cat}/{layer}`` and ``abs_sums/{kind}/{cat}/{layer}``: float64 sums of the activations A and of |A|
  over the same counted tokens as the counts (expert neurons: over the tokens routed to the expert), stored beside
  the counts (``sums.safetensors``) for mean ablation and magnitude-matched controls.

This module is the only place that formats or parses them (in the manner of baukit's ``CombinedStat``, where only
the container knows the key prefixes). It imports nothing heavy, so every layer of the package can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sparcom.errors import SparcomError


@dataclass(frozen=True)
class Kind:
    """What one kind of component is: its names, the shape of one layer's components and the site it lives at.

    ``site`` names the part of a model's site map (:class:`sparcom.models.sites.ModelSites`) that holds it:
    ``dense`` and ``shared`` are activation modules whose last axis holds the neurons; ``moe`` is a routed-experts
    layer, whose first axis is the experts (``ndim`` 1: the experts themselves; 2: [experts, neurons per expert]).
    """

    name: str
    noun: str  # the selected sets of this kind, in prose
    unit: str  # what one component is called in axis labels
    ndim: int  # axes of one layer's counts and masks
    site: str  # "dense" | "shared" | "moe"

    @property
    def routed(self) -> bool:
        """Lives in a routed-experts layer (counted and deactivated through the routing, not an activation)."""
        return self.site == "moe"


#: Every component kind, in the one order tables, plots, masks and interventions use.
KIND_TABLE: dict[str, Kind] = {k.name: k for k in (
    Kind("neuron", "ISNs", "neurons", 1, "dense"),
    Kind("shared_neuron", "shared-expert ISNs", "shared-expert neurons", 1, "shared"),
    Kind("expert", "ISEs", "experts", 1, "moe"),
    Kind("expert_neuron", "expert ISNs", "expert neurons", 2, "moe"),
)}
KINDS: tuple[str, ...] = tuple(KIND_TABLE)
#: Short human names of the selected sets of each kind.
KIND_NOUNS: dict[str, str] = {k.name: k.noun for k in KIND_TABLE.values()}
#: What one component of a kind is called in axis labels.
KIND_UNITS: dict[str, str] = {k.name: k.unit for k in KIND_TABLE.values()}

TOKENS = "tokens"
INSTRUCTIONS = "instructions"
BOOTSTRAP = "bootstrap/"
GROUPS = "groups/"
SUMS = "sums/"
ABS_SUMS = "abs_sums/"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SparcomError(f"unknown component kind {kind!r}; choose from {', '.join(KINDS)}")
    return kind


def kind_of(name: str) -> Kind:
    """The :class:`Kind` called ``name``; a one-line error for anything else."""
    return KIND_TABLE[check_kind(name)]


@dataclass(frozen=True)
class CountKey:
    """``{kind}/{category}/{layer}``: one kind's counts (or mask) of one category in one layer."""

    kind: str
    category: str
    layer: int

    def __str__(self) -> str:
        return f"{self.kind}/{self.category}/{self.layer}"

    @classmethod
    def parse(cls, key: str) -> CountKey | None:
        """The parts of a component key; None for any other key (totals, bootstrap, groups)."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] not in KINDS or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]))


def count_key(kind: str, category: str, layer: int) -> str:
    return f"{kind}/{category}/{layer}"


def tokens_key(category: str) -> str:
    return f"{TOKENS}/{category}"


def instructions_key(category: str) -> str:
    return f"{INSTRUCTIONS}/{category}"


def bootstrap_key(key: str) -> str:
    """The replicate counter of a plain key (``bootstrap/neuron/code/3``)."""
    return BOOTSTRAP + key


def sum_key(kind: str, category: str, layer: int, absolute: bool = False) -> str:
    """The activation sum (``absolute``: sum of |A|) of one kind, category and layer: ``sums/neuron/code/3``."""
    return (ABS_SUMS if absolute else SUMS) + count_key(kind, category, layer)


def is_sum_key(key: str) -> bool:
    """A ``sums/`` or ``abs_sums/`` key (float64 activation sums, not counts)."""
    return key.startswith((SUMS, ABS_SUMS))


def group_key(kind: str, layer: int) -> str:
    """Counts below the category: [G, ...] rows of one kind in one layer."""
    return f"{GROUPS}{kind}/{layer}"


GROUP_TOKENS_KEY = f"{GROUPS}{TOKENS}"


def is_group_counts(key: str) -> bool:
    """A ``groups/{kind}/{layer}`` key (counts below the category; not the groups' token counts)."""
    return key.startswith(GROUPS) and key != GROUP_TOKENS_KEY


def component_id(kind: str, layer: int, index: int, expert: int | None = None) -> str:
    """One component's id in files and reports: ``kind/layer/index``, or ``expert_neuron/layer/expert/index``."""
    return f"{kind}/{layer}/{index}" if expert is None else f"{kind}/{layer}/{expert}/{index}"


def parse_component_id(text: str) -> tuple[str, int, int, int | None]:
    """(kind, layer, index, expert) of a component id; a one-line error for anything else."""
    parts = text.split("/")
    if parts[0] in KINDS and len(parts) in (3, 4) and all(p.isdigit() for p in parts[1:]):
        if len(parts) == 3:
            return parts[0], int(parts[1]), int(parts[2]), None
        return parts[0], int(parts[1]), int(parts[3]), int(parts[2])
    raise SparcomError(f"component {text!r} is not kind/layer/index or expert_neuron/layer/expert/index")


def component_keys(keys: Iterable[str]) -> list[CountKey]:
    """The component keys among ``keys`` (parsed; totals, bootstrap and group keys left out)."""
    return [parsed for parsed in map(CountKey.parse, keys) if parsed is not None]


def kinds_in(keys: Iterable[str]) -> list[str]:
    """The component kinds that have keys, in :data:`KINDS` order."""
    present = {key.kind for key in component_keys(keys)}
    return [k for k in KINDS if k in present]


def layers_of(keys: Iterable[str], kind: str) -> list[int]:
    """The layers that have ``kind`` keys, sorted."""
    return sorted({key.layer for key in component_keys(keys) if key.kind == kind})


def categories_with_tokens(keys: Iterable[str]) -> list[str]:
    """Categories that have a ``tokens/{cat}`` key, sorted (for runs whose manifest lists none)."""
    prefix = f"{TOKENS}/"
    return sorted({key[len(prefix):] for key in keys if key.startswith(prefix)})
