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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Condition:
    """One pass of the check: ``kind`` "nll" over a fold's rows or "generate" over the prompts, under ``ablation``
    (None: unablated), named by its checkpoint ``key``."""

    kind: str
    key: str
    ablation: Ablation | None
    fold: Any = None


def planned_conditions(inputs, settings, prompts: Sequence) -> list[Condition]:
    """The passes the check will ask for, in its order and with its keys (causal/check.py): per fold the unablated
    NLL; per target, category and fold the selected set and its random sets; then, when there are prompts to
    generate from, the same for generation (the first ``generate_seeds``)."""
    planned = [Condition("nll", fold.key("none"), None, fold) for fold in inputs.folds]
    for name in inputs.targets:
        for category in inputs.categories:
            for fold in inputs.folds:
                ablation = fold.ablations[name][category]
                if ablation.is_empty():
                    continue
                planned.append(Condition("nll", fold.key(name, category, "selected"), ablation, fold))
                planned += [Condition("nll", fold.key(name, category, f"random/{s:04d}"),
                                      random_like(ablation, settings.seed + s, fold.stream(name, category)), fold)
                            for s in range(settings.seeds)]
    if prompts:
        planned.append(Condition("generate", "generate/none", None))
        for name in inputs.targets:
            for category in inputs.categories:
                ablation = inputs.ablations[name][category]
                if ablation.is_empty():
                    continue
                key = f"generate/{name}/{category}"
                planned.append(Condition("generate", f"{key}/selected", ablation))
                planned += [Condition("generate", f"{key}/random/{s:04d}",
                                      random_like(ablation, settings.seed + s, f"{name}/{category}"))
                            for s in range(min(settings.generate_seeds, settings.seeds))]
    return planned


class SharedPasses:
    """The check's evaluator, with its planned passes computed once over the ranks and served from memory.

    Rank 0 alone keeps the checkpoint: conditions it already holds are sent to every rank instead of computed, and
    conditions computed by other ranks are saved into it, so ``--resume`` works the same under torchrun."""

    def __init__(self, evaluator, planned: list[Condition], prompts: Sequence, ranks: Ranks) -> None:
        self.evaluator = evaluator
        self.prompts = prompts
        store = evaluator.store
        with ranks.step("reading the check's checkpoint"):
            stored = {c.key: _load(store, c) for c in planned if store is not None and _has(store, c)}
        stored = ranks.broadcast(stored if ranks.is_main else None, "sending the checkpoint's finished conditions")
        todo = [c for c in planned if c.key not in stored]

        def compute(condition: Condition):
            label = "shared pass" if condition.ablation is None else condition.ablation.label
            if condition.kind == "nll":
                return evaluator.nll(condition.fold, condition.ablation, condition.key, label)
            return evaluator.generate(condition.ablation, prompts, condition.key, label)

        results = run_shared(todo, compute, ranks)
        self.done: dict[str, Any] = dict(stored)
        self.done.update({c.key: r for c, r in zip(todo, results, strict=True)})
        if store is not None:  # rank 0: keep what the other ranks computed
            for condition in todo:
                if not _has(store, condition):
                    _save(store, condition, self.done[condition.key])
        mine = {todo[i].key for i in my_conditions(len(todo), ranks)}
        self.counted = mine | set(stored) if ranks.is_main else mine  # already on this rank's bar

    def _advance(self, key: str, batches: int) -> None:
        if key not in self.counted:  # computed elsewhere: count it on this rank's bar once, as done
            self.evaluator.bar.advance(self.evaluator.task, batches)
            self.counted.add(key)

    def nll(self, fold, ablation: Ablation | None, key: str, description: str):
        if key not in self.done:
            return self.evaluator.nll(fold, ablation, key, description)
        self._advance(key, len(fold.scoring.batches))
        return self.done[key]

    def generate(self, ablation: Ablation | None, prompts, key: str, description: str) -> list[str]:
        if key not in self.done or prompts is not self.prompts:
            return self.evaluator.generate(ablation, prompts, key, description)
        self._advance(key, -(-len(prompts) // self.evaluator.settings.batch_size))
        return self.done[key]


def _has(store, condition: Condition) -> bool:
    return store.has(condition.key) if condition.kind == "nll" else store.has_texts(condition.key)


def _load(store, condition: Condition):
    return store.load(condition.key) if condition.kind == "nll" else store.load_texts(condition.key)


def _save(store, condition: Condition, value) -> None:
    if condition.kind == "nll":
        store.save(condition.key, *value)
    else:
        store.save_texts(condition.key, value)


def share_passes(evaluator, inputs, settings, prompts: Sequence, ranks: Ranks | None = None):
    """The evaluator itself for one process; under torchrun, a :class:`SharedPasses` over it."""
    ranks = ranks or current()
    if ranks.world_size == 1:
        return evaluator
    return SharedPasses(evaluator, planned_conditions(inputs, settings, prompts), prompts, ranks)


__all__ = ["Condition", "SharedPasses", "my_conditions", "planned_conditions", "run_shared", "share_passes"]
