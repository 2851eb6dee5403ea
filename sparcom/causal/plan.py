"""The causal check's conditions, listed once: what one process runs, what the ranks share, what the progress bar
counts and what the resume digest hashes.

A *condition* is one pass over rows under one state of the model: an NLL pass over a fold's rows or a generation
pass over the prompts, with nothing deactivated, with a category's selected set deactivated, or with one of its
random control sets. Conditions do not depend on each other. :func:`build_plan` lists them all, in the order one
process runs them, each with its :class:`ConditionKey` (its name in the checkpoint and in the results), the set
it deactivates and its cost in forward batches. Everything else reads that list:

- the single process iterates it; torchrun ranks take their share of it (:mod:`sparcom.causal.spread`);
- the progress total is :meth:`Plan.batches`;
- the resume digest (:func:`plan_digest`) hashes it with the encoded rows and the settings that change numbers;
- the results of a run, keyed by condition, are assembled into the result object (``causal.check.assemble``).

A new kind of condition — another control (how random sets are matched), another intervention (how a set is
deactivated), a dose–response over set sizes — is a new field of :class:`ConditionKey` with a default and a new
axis in :func:`build_plan`; the key's name, its stream, the loop, the shares, the progress and the digest follow.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from sparcom.causal.checkpoint import Digest
from sparcom.causal.controls import CONTROL_TABLE, Drawer, Matching
from sparcom.causal.interventions import AblationStats, InterventionReference, ablate, mean_ablate, resample_ablate
from sparcom.causal.scoring import ScoringPlan
from sparcom.components import ComponentSet

#: What a pass measures: per-row summed NLL of the reference responses, or greedy generations of the prompts.
PASSES: tuple[str, ...] = ("nll", "generate")
#: What a condition deactivates: nothing, a category's selected set, or one of its random control sets.
ROLES: tuple[str, ...] = ("unablated", "selected", "random")
#: How a random control set is drawn, by control name: (selected set, seed, stream label, matching) → random set.
#: ``shape``: the selected set's count in every layer and expert, uniformly (:mod:`sparcom.random_sets`);
#: ``frequency`` / ``magnitude``: also in every bin of the pooled activation frequency / of E|A| × ‖W_down column‖,
#: the selected components excluded (:mod:`sparcom.causal.controls`; the binned statistic is ``Axes.matching``);
#: ``frequency-bin`` / ``magnitude-bin`` (the default is ``frequency-bin``): in every bin of the same statistics,
#: drawn from the whole bin (the selected included).
CONTROLS: dict[str, Drawer] = {name: control.draw for name, control in CONTROL_TABLE.items()}
#: How a set is deactivated, by intervention name (docs/causal.md "The interventions"): ``zero`` (activations and
#: expert-neuron columns zeroed), ``mean`` (activations set to their mean over the profile run's counted tokens),
#: ``resample`` (activations taken from a donor row of another category, same position class); experts are taken
#: out of the routing under each. (model, set, sites=, expert_removal=, reference=) → context.
INTERVENTIONS: dict[str, Callable[..., AbstractContextManager[AblationStats]]] = {
    "zero": ablate, "mean": mean_ablate, "resample": resample_ablate}
#: Settings that only change the statistics computed from the stored sums (or nothing at all), or that the plan's
#: conditions hash themselves (``controls``, ``dose_points``: every condition's key names its control and its top-k
#: size, and its set is hashed): not hashed as
#: settings. Every other setting is hashed, including any added later.
STATISTICS_ONLY: frozenset[str] = frozenset({"replicates", "force", "controls", "dose_points", "stop_when_decided"})


@dataclass(frozen=True)
class ConditionKey:
    """The name of one condition. Its text form (checkpoint files, progress) lists every field that is not at its
    default, so adding a field with a default keeps the existing names."""

    pass_kind: str
    role: str
    target: str | None = None
    category: str | None = None
    fold: int | None = None
    draw: int | None = None  # the random set's index (seed = settings.seed + draw)
    control: str = "shape"
    intervention: str = "zero"
    size: int | None = None  # dose–response: the top-k of the selected set (None: the whole set)

    def __post_init__(self) -> None:
        if self.pass_kind not in PASSES or self.role not in ROLES or self.control not in CONTROLS \
                or self.intervention not in INTERVENTIONS:
            raise ValueError(f"unknown condition {self}")
        if (self.role == "random") != (self.draw is not None) or (self.role == "unablated") != (self.target is None):
            raise ValueError(f"condition {self}: its draw and target do not fit its role")

    def __str__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.default is dataclasses.MISSING:
                parts.append(str(value))
            elif value != field.default:
                parts.append(f"{field.name}={value}")
        return "/".join(parts)

    @property
    def stream(self) -> str:
        """The random-set stream label: one per target, category and fold (and non-default control), shared by the
        NLL and the generation passes, so random set r is the same set in both."""
        parts = [f"{self.target}/{self.category}"]
        if self.control != "shape":
            parts.append(self.control)
        if self.size is not None:
            parts.append(f"top{self.size}")
        if self.fold is not None:
            parts.append(f"fold{self.fold}")
        return "/".join(parts)

    @property
    def label(self) -> str:
        """How the progress bar names the condition."""
        return str(self).replace("/", " ")


@dataclass
class Fold:
    """Rows scored with one family of sets: every row with a selection's sets, or (cross-fitting) the rows of one
    held-out fold with the sets selected on the other folds."""

    index: int | None
    rows: np.ndarray  # positions in the check's examples
    scoring: ScoringPlan  # the batches of those rows, built once
    sets: dict[str, dict[str, ComponentSet]]  # target → category → selected set

    @property
    def batches(self) -> int:
        return len(self.scoring.batches)


@dataclass(frozen=True)
class Condition:
    """One pass: its key, the rows it scores (NLL: a fold; generation: the prompts), the selected set it is about
    and its cost in forward batches. A random set is drawn from its stream when it is needed."""

    key: ConditionKey
    fold: Fold | None
    selected: ComponentSet | None
    seed: int | None
    batches: int
    matching: Matching | None = None  # what the key's control matches on (matched controls only)

    def components(self) -> ComponentSet | None:
        """What the condition deactivates: nothing, the selected set, or its random set of the key's control."""
        if self.key.role != "random":
            return self.selected
        return CONTROLS[self.key.control](self.selected, self.seed, self.key.stream, self.matching)

    def deactivated(self, model, sites, expert_removal: str, reference: InterventionReference | None = None
                    ) -> AbstractContextManager[AblationStats]:
        """A context in which ``model`` runs under this condition (the key's intervention on its set, with the
        check's ``reference``: means and donors)."""
        components = self.components()
        if components is None:
            return contextlib.nullcontext(AblationStats())
        return INTERVENTIONS[self.key.intervention](model, components, sites=sites, expert_removal=expert_removal,
                                                    reference=reference)


@dataclass(frozen=True)
class Axes:
    """The variants every selected set is run under: its random-set controls and its interventions, and for each
    matched control the statistic it matches on."""

    controls: tuple[str, ...] = ("shape",)
    interventions: tuple[str, ...] = ("zero",)
    matching: Mapping[str, Matching] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Every condition of one check, in the order one process runs them."""

    conditions: tuple[Condition, ...]
    #: (target, category, fold) of the selected sets that are empty: their rows are unchanged by definition.
    empty: tuple[tuple[str, str, int | None], ...] = ()

    def __iter__(self) -> Iterator[Condition]:
        return iter(self.conditions)

    def __len__(self) -> int:
        return len(self.conditions)

    def batches(self) -> int:
        """Forward batches of the whole check: the progress bar's total."""
        return sum(c.batches for c in self.conditions)

    def keys(self) -> list[ConditionKey]:
        return [c.key for c in self.conditions]

    def stages(self) -> list[list[Condition]]:
        """The plan in the order a check that may stop once settled runs it: first every condition but the main
        NLL random sets (the unablated rows, the selected sets, the dose–response and generation passes), then
        draw 0 of every main random set, draw 1, … — after each draw the decisions can be checked
        (``--stop-when-decided``)."""
        first = [c for c in self.conditions if not is_main_draw(c.key)]
        draws: dict[int, list[Condition]] = {}
        for condition in self.conditions:
            if is_main_draw(condition.key):
                draws.setdefault(condition.key.draw, []).append(condition)
        return [first, *(draws[d] for d in sorted(draws))]


def is_main_draw(key: ConditionKey) -> bool:
    """A random set of the check's tests (an NLL pass of a whole selected set), as opposed to the unablated and
    selected passes, the dose–response's top-k sets and the generations."""
    return key.pass_kind == "nll" and key.role == "random" and key.size is None


def set_size(per_fold: Sequence[int]) -> int | float:
    """A selected set's size: its size without folds; cross-fitted (one set per fold, each selected on the other
    folds), the mean of the per-fold sizes, which the results also keep one by one."""
    return int(per_fold[0]) if len(per_fold) == 1 else float(np.mean(per_fold))


def _set_conditions(pass_kind: str, target: str, category: str, fold: Fold | None, selected: ComponentSet,
                    draws: int, seed: int, batches: int, axes: Axes, size: int | None = None) -> list[Condition]:
    """One selected set (or, dose–response, its top ``size``) under every intervention, each followed by its random
    sets under every control."""
    index = None if fold is None else fold.index
    found = []
    for intervention in axes.interventions:
        key = ConditionKey(pass_kind, "selected", target, category, index, intervention=intervention, size=size)
        found.append(Condition(key, fold, selected, None, batches))
        for control in axes.controls:
            found += [Condition(dataclasses.replace(key, role="random", draw=s, control=control), fold, selected,
                                seed + s, batches, axes.matching.get(control)) for s in range(draws)]
    return found


def build_plan(folds: Sequence[Fold], targets: Sequence[str], categories: Sequence[str], *, seeds: int, seed: int,
               prompts: int = 0, generate_seeds: int = 0, batch_size: int = 1, axes: Axes = Axes(),
               doses: Mapping[tuple[str, str], Sequence[tuple[int, ComponentSet]]] | None = None) -> Plan:
    """Every condition of a check: per fold the unablated NLL; per target, category and fold the selected set and
    its ``seeds`` random sets; with ``doses`` ((target, category) → [(k, top-k set)], checks without folds), each
    top-k set and its random sets; then, when there are ``prompts`` to generate from (checks without folds), the
    unablated generation and, per target and category, the selected set and its first ``generate_seeds`` (of the
    first control)."""
    conditions = [Condition(ConditionKey("nll", "unablated", fold=f.index), f, None, None, f.batches) for f in folds]
    empty = []
    for target in targets:
        for category in categories:
            for fold in folds:
                selected = fold.sets[target][category]
                if selected.is_empty():
                    empty.append((target, category, fold.index))
                    continue
                conditions += _set_conditions("nll", target, category, fold, selected, seeds, seed, fold.batches, axes)
    first = dataclasses.replace(axes, interventions=axes.interventions[:1])  # dose–response: the main intervention
    for (target, category), subsets in (doses or {}).items():
        for k, subset in subsets:
            conditions += _set_conditions("nll", target, category, folds[0], subset, seeds, seed, folds[0].batches,
                                          first, size=k)
    if prompts:
        batches = -(-prompts // batch_size)
        conditions.append(Condition(ConditionKey("generate", "unablated"), None, None, None, batches))
        draws = min(generate_seeds, seeds)
        for target in targets:
            for category in categories:
                selected = folds[0].sets[target][category]
                if not selected.is_empty():  # generations: the main (first) control's random sets only
                    conditions += _set_conditions("generate", target, category, None, selected, draws, seed, batches,
                                                  dataclasses.replace(axes, controls=axes.controls[:1]))
    return Plan(tuple(conditions), tuple(empty))


def plan_digest(plan: Plan, examples: Sequence, settings, model: dict) -> str:
    """What fixes every condition's numbers (:mod:`sparcom.causal.checkpoint`): a resume needs the same digest.

    The model's identity, every setting but :data:`STATISTICS_ONLY`, the encoded rows, and per condition its key,
    its rows and batches, the selected set and the random set's seed.
    """
    digest = Digest()
    digest.add("model", model)
    digest.add("settings", {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                            if f.name not in STATISTICS_ONLY})
    for example in examples:
        digest.add(example.row_id, [example.category, list(example.input_ids), list(example.scored)])
    for condition in plan:
        fold = condition.fold
        record = {"rows": None if fold is None else fold.rows.tolist(),
                  "batches": None if fold is None else [list(b.rows) for b in fold.scoring.batches],
                  "selected": None if condition.selected is None else condition.selected.digest(),
                  "seed": condition.seed, "cost": condition.batches}
        if condition.matching is not None:
            record["matching"] = condition.matching.digest()
        digest.add(str(condition.key), record)
    return digest.hexdigest()


__all__ = ["CONTROLS", "INTERVENTIONS", "PASSES", "ROLES", "STATISTICS_ONLY", "Axes", "Condition", "ConditionKey",
           "Fold", "Plan", "build_plan", "is_main_draw", "plan_digest", "set_size"]
