"""The causal check over the ranks of a torchrun job: conditions shared out, per-row results gathered.

A condition (the unablated model, one category's selected set, one of its random sets; scored by NLL or by
generation) is one full pass over the evaluated rows, and conditions do not depend on each other — so ranks take
every ``world_size``-th condition, compute it exactly as one process would (same batches, same code), and exchange
the per-row results. Every rank then holds every condition's numbers and builds the same result; rank 0 writes it.

:func:`run_shared` is the generic part (a list of conditions → their results, in order, on every rank).
:class:`SharedPasses` fits it to the check's evaluator without changing the check's loop: it computes the check's
planned conditions up front, shared over the ranks, and then answers the loop's ``nll`` / ``generate`` calls from
those results (a condition it did not plan is computed where it is asked for, so the numbers never depend on the
plan being complete).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sparcom.causal.baseline import random_like
from sparcom.causal.interventions import Ablation
from sparcom.distributed import Ranks, current

T = TypeVar("T")
R = TypeVar("R")


def my_conditions(count: int, ranks: Ranks) -> list[int]:
    """The condition indices this rank computes: every ``world_size``-th (all conditions cost one pass)."""
    return list(range(ranks.rank, count, ranks.world_size))


def run_shared(conditions: Sequence[T], compute: Callable[[T], R], ranks: Ranks | None = None,
               where: str = "running the causal check's conditions") -> list[R]:
    """``[compute(c) for c in conditions]``, each computed by one rank, the results (picklable) on every rank."""
    ranks = ranks or current()
    if ranks.world_size == 1:
        return [compute(condition) for condition in conditions]
    mine: dict[int, R] = {}
    with ranks.step(where):
        for index in my_conditions(len(conditions), ranks):
            mine[index] = compute(conditions[index])
    results: dict[int, R] = {}
    for theirs in ranks.gather(mine, where):
        results.update(theirs)
    return [results[index] for index in range(len(conditions))]


def _key(kind: str, ablation: Ablation | None) -> tuple[str, str]:
    return kind, "" if ablation is None else ablation.label


def planned_conditions(inputs, settings, prompts: Sequence) -> list[tuple[str, Ablation | None]]:
    """The passes the check will ask for, in its order: NLL unablated, each category's set and its random sets;
    then, when there are prompts to generate from, the same for generation (the first ``generate_seeds``)."""
    active = [(name, category, inputs.ablations[name][category]) for name in inputs.targets
              for category in inputs.categories if not inputs.ablations[name][category].is_empty()]
    planned: list[tuple[str, Ablation | None]] = [("nll", None)]
    for name, category, ablation in active:
        planned.append(("nll", ablation))
        planned += [("nll", random_like(ablation, settings.seed + s, f"{name}/{category}"))
                    for s in range(settings.seeds)]
    if prompts:
        planned.append(("generate", None))
        for name, category, ablation in active:
            planned.append(("generate", ablation))
            planned += [("generate", random_like(ablation, settings.seed + s, f"{name}/{category}"))
                        for s in range(min(settings.generate_seeds, settings.seeds))]
    return planned


class SharedPasses:
    """The check's evaluator, with its planned passes computed once over the ranks and served from memory."""

    def __init__(self, evaluator, planned: list[tuple[str, Ablation | None]], prompts: Sequence,
                 ranks: Ranks) -> None:
        self.evaluator = evaluator
        self.prompts = prompts

        def compute(condition: tuple[str, Ablation | None]):
            kind, ablation = condition
            label = "shared pass" if ablation is None else ablation.label
            if kind == "nll":
                return evaluator.nll(ablation, label)
            return evaluator.generate(ablation, prompts, label)

        results = run_shared(planned, compute, ranks)
        self.done: dict[tuple[str, str], Any] = {_key(k, a): r for (k, a), r in zip(planned, results, strict=True)}
        self.counted = {_key(*planned[i]) for i in my_conditions(len(planned), ranks)}  # on this rank's bar

    def _advance(self, key: tuple[str, str], batches: int) -> None:
        if key not in self.counted:  # computed by another rank: count it on this rank's bar once, as done
            self.evaluator.bar.advance(self.evaluator.task, batches)
            self.counted.add(key)

    def nll(self, ablation: Ablation | None, description: str):
        key = _key("nll", ablation)
        if key not in self.done:
            return self.evaluator.nll(ablation, description)
        self._advance(key, len(self.evaluator.inputs.plan))
        return self.done[key]

    def generate(self, ablation: Ablation | None, prompts, description: str) -> list[str]:
        key = _key("generate", ablation)
        if key not in self.done or prompts is not self.prompts:
            return self.evaluator.generate(ablation, prompts, description)
        self._advance(key, -(-len(prompts) // self.evaluator.settings.batch_size))
        return self.done[key]


def share_passes(evaluator, inputs, settings, prompts: Sequence, ranks: Ranks | None = None):
    """The evaluator itself for one process; under torchrun, a :class:`SharedPasses` over it."""
    ranks = ranks or current()
    if ranks.world_size == 1:
        return evaluator
    return SharedPasses(evaluator, planned_conditions(inputs, settings, prompts), prompts, ranks)


__all__ = ["SharedPasses", "my_conditions", "planned_conditions", "run_shared", "share_passes"]
