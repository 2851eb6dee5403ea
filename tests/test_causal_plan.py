"""The causal check's one list of conditions: every condition exactly once, and the loop, the ranks' shares, the
progress total and the resume digest all read it — a condition kind added in one place shows up in all four."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from sparcom.causal import plan as plan_module
from sparcom.causal.check import run_plan
from sparcom.causal.plan import Axes, ConditionKey, Fold, build_plan, plan_digest, set_size
from sparcom.causal.settings import INTERVENTION_NAMES, CausalSettings
from sparcom.causal.spread import my_conditions
from sparcom.components import ComponentSet
from sparcom.distributed import SINGLE, Launch, Ranks
from sparcom.random_sets import random_like

TARGETS = ["neurons", "experts"]
CATEGORIES = ["cls", "math", "qa"]
SEEDS = 3


def component_set(seed: int, empty: bool = False) -> ComponentSet:
    mask = np.random.default_rng(seed).random(16) < 0.3
    return ComponentSet.from_layer_masks({"neuron": {0: mask & (not empty)}})


def fold(index: int | None, rows: list[int], batches: int, empty: set[tuple[str, str]] = frozenset()) -> Fold:
    scoring = SimpleNamespace(batches=tuple(SimpleNamespace(rows=(i,)) for i in range(batches)))
    sets = {t: {c: component_set(10 * (index or 0) + i + 3 * j, (t, c) in empty) for i, c in enumerate(CATEGORIES)}
            for j, t in enumerate(TARGETS)}
    return Fold(index, np.array(rows), scoring, sets)


def folds() -> list[Fold]:
    """Cross-fitting with two folds of 2 and 3 batches; one set empty in fold 1."""
    return [fold(0, [0, 2, 4], 2), fold(1, [1, 3], 3, {("experts", "qa")})]


def plan_of(axes: Axes | None = None, prompts: int = 0, the_folds=None):
    return build_plan(the_folds or folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=100, prompts=prompts,
                      generate_seeds=2, batch_size=4, axes=axes or Axes())


def test_every_condition_once_with_its_cost():
    plan = plan_of()
    keys = plan.keys()
    assert len(set(keys)) == len(keys) and len({str(k) for k in keys}) == len(keys)  # checkpoint names too
    # per fold: the unablated pass; per target, category and fold with a set: the set and its random sets
    nonempty = {0: 6, 1: 5}
    assert len(plan) == 2 + sum(n * (1 + SEEDS) for n in nonempty.values())
    assert plan.empty == (("experts", "qa", 1),)
    assert plan.batches() == 2 * (1 + 6 * (1 + SEEDS)) + 3 * (1 + 5 * (1 + SEEDS))  # the progress total
    unablated = [k for k in keys if k.role == "unablated"]
    assert unablated == [ConditionKey("nll", "unablated", fold=0), ConditionKey("nll", "unablated", fold=1)]
    for condition in plan:
        assert condition.batches == condition.fold.batches
        if condition.key.role == "random":
            assert condition.seed == 100 + condition.key.draw


def test_generation_conditions_follow_the_nll_ones():
    single = [fold(None, [0, 1, 2], 2, {("neurons", "cls")})]
    plan = plan_of(prompts=9, the_folds=single)
    generate = [c for c in plan if c.key.pass_kind == "generate"]
    # unablated, then per target and category with a set: the set and its first min(generate_seeds, seeds) random sets
    assert len(generate) == 1 + 5 * (1 + 2)
    assert all(c.batches == 3 for c in generate) and all(c.fold is None for c in generate)
    assert [c.key.pass_kind for c in plan] == ["nll"] * (len(plan) - len(generate)) + ["generate"] * len(generate)


def test_the_random_stream_is_one_label_for_nll_and_generation():
    nll = ConditionKey("nll", "random", "neurons", "math", draw=2)
    assert nll.stream == ConditionKey("generate", "random", "neurons", "math", draw=2).stream == "neurons/math"
    assert dataclasses.replace(nll, fold=3).stream == "neurons/math/fold3"  # the labels the pinned numbers use
    single = [fold(None, [0, 1, 2], 2)]
    plan = plan_of(prompts=4, the_folds=single)
    drawn = {}
    for condition in plan:
        if condition.key.role == "random":
            drawn.setdefault((condition.key.target, condition.key.category, condition.key.draw), []).append(
                condition.components().digest())
    assert all(len(set(d)) == 1 for d in drawn.values())  # random set r is the same set in both passes
    assert any(len(d) == 2 for d in drawn.values())
    condition = next(c for c in plan if c.key.role == "random")
    assert condition.components().digest() == random_like(condition.selected, condition.seed, "neurons/cls").digest()


def test_key_names_list_only_what_is_not_default():
    assert str(ConditionKey("nll", "unablated")) == "nll/unablated"
    key = ConditionKey("nll", "random", "neurons", "math", 1, 7)
    assert str(key) == "nll/random/target=neurons/category=math/fold=1/draw=7"
    with pytest.raises(ValueError):
        ConditionKey("nll", "random", "neurons", "math")  # a random set needs its draw
    with pytest.raises(ValueError):
        ConditionKey("nll", "selected", "neurons", "math", control="nonsense")


class FakeEvaluator:
    """Runs a condition by recording it (what the check's evaluator does with a model)."""

    def __init__(self, stored=None) -> None:
        self.ran, self.kept, self.advanced = [], [], 0
        self.bar, self.task, self.store = self, None, stored

    def advance(self, task, batches=1) -> None:
        self.advanced += batches

    def run(self, condition):
        self.ran.append(condition.key)
        self.advance(None, condition.batches)
        return str(condition.key)

    def stored(self, plan):
        return {c.key: f"stored {c.key}" for c in plan if self.store and c.key in self.store}

    def keep(self, condition, value) -> None:
        self.kept.append(condition.key)


def test_the_loop_runs_the_plan_and_resumes_from_what_is_stored():
    plan = plan_of()
    evaluator = FakeEvaluator()
    results = run_plan(plan, evaluator, SINGLE)
    assert evaluator.ran == plan.keys() and list(results) == plan.keys()
    assert evaluator.advanced == plan.batches()
    stored = set(plan.keys()[:5])
    again = FakeEvaluator(stored)
    results = run_plan(plan, again, SINGLE)
    assert again.ran == plan.keys()[5:] and set(results) == set(plan.keys())
    assert all(results[k].startswith("stored") for k in stored) and again.advanced == plan.batches()


def test_the_ranks_share_the_plan_once_each():
    plan = plan_of()
    shares = [[plan.conditions[i].key for i in my_conditions(len(plan), Ranks(Launch(r, 3, r, 3)))] for r in range(3)]
    taken = [k for share in shares for k in share]
    assert len(taken) == len(plan) and set(taken) == set(plan.keys())  # every condition, by exactly one rank
    assert [len(s) for s in shares] == [len(plan) // 3 + (r < len(plan) % 3) for r in range(3)]


def digest(plan, settings: CausalSettings | None = None) -> str:
    examples = [SimpleNamespace(row_id=str(i), category="math", input_ids=(1, 2, i), scored=(False, True, True))
                for i in range(5)]
    return plan_digest(plan, examples, settings or CausalSettings(seeds=SEEDS), {"fingerprint": "abc"})


def test_the_digest_hashes_the_plan_and_the_settings_that_change_numbers():
    base = digest(plan_of())
    assert base == digest(plan_of())
    assert base != digest(build_plan(folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=101))  # other random sets
    assert base != digest(plan_of(), CausalSettings(seeds=SEEDS, expert_removal="next-best"))
    assert base == digest(plan_of(), CausalSettings(seeds=SEEDS, replicates=10, force=True))
    assert {f.name for f in dataclasses.fields(CausalSettings)} >= plan_module.STATISTICS_ONLY


def test_a_condition_kind_added_in_one_place_reaches_the_loop_shares_progress_and_digest(monkeypatch):
    """A new control is an entry of CONTROLS and an axis of the plan: nothing else changes, and all four see it."""
    monkeypatch.setitem(plan_module.CONTROLS, "complement", lambda selected, seed, stream, matching: random_like(
        selected, seed, stream, exclude=selected))
    before, after = plan_of(), plan_of(Axes(controls=("shape", "complement")))
    added = [c for c in after if c.key.control == "complement"]
    assert len(added) == 11 * SEEDS and len(after) == len(before) + len(added)
    assert all(c.key.stream.endswith(("complement", "complement/fold0", "complement/fold1")) for c in added)
    evaluator = FakeEvaluator()
    run_plan(after, evaluator, SINGLE)  # the loop
    assert [k for k in evaluator.ran if k.control == "complement"] == [c.key for c in added]
    shared = {after.conditions[i].key for r in range(2) for i in my_conditions(len(after), Ranks(Launch(r, 2, r, 2)))}
    assert {c.key for c in added} <= shared  # the ranks' shares
    assert after.batches() == before.batches() + sum(c.batches for c in added)  # the progress total
    assert digest(after) != digest(before)  # the resume digest
    drawn = added[0].components()
    assert not (drawn.flat("neuron") & added[0].selected.flat("neuron")).any()  # the control's own draw


def test_cross_fitted_set_size_is_the_mean_of_the_fold_sizes():
    assert set_size([7]) == 7 and isinstance(set_size([7]), int)
    assert set_size([4, 5, 6, 7]) == 5.5
    assert set_size([0, 0, 3]) == 1.0  # not tested only when every fold's set is empty


def test_every_intervention_is_an_entry_that_the_plan_runs_once_per_set(monkeypatch):
    """The interventions are entries of INTERVENTIONS; an axis of several gives each set and its random sets once per
    intervention, seen by the loop, the shares, the progress total and the digest (a fake entry too)."""
    assert tuple(plan_module.INTERVENTIONS) == INTERVENTION_NAMES  # what the CLI offers, without importing torch
    monkeypatch.setitem(plan_module.INTERVENTIONS, "fake", plan_module.INTERVENTIONS["zero"])
    before = plan_of()
    after = plan_of(Axes(interventions=("zero", "mean", "fake")))
    sets = sum(1 for c in before if c.key.role != "unablated")
    assert len(after) == len(before) + 2 * sets
    for name in ("mean", "fake"):
        added = [c for c in after if c.key.intervention == name]
        assert len(added) == sets and all(f"intervention={name}" in str(c.key) for c in added)
        assert [c.key for c in added] == [dataclasses.replace(c.key, intervention=name) for c in before
                                          if c.key.role != "unablated"]
    evaluator = FakeEvaluator()
    run_plan(after, evaluator, SINGLE)
    assert evaluator.ran == after.keys() and after.batches() == before.batches() + 2 * sum(
        c.batches for c in before if c.key.role != "unablated")
    shared = {after.conditions[i].key for r in range(2) for i in my_conditions(len(after), Ranks(Launch(r, 2, r, 2)))}
    assert shared == set(after.keys())
    assert digest(after) != digest(before) != digest(plan_of(Axes(interventions=("mean",))))
    random = [c for c in after if c.key.role == "random" and c.key.draw == 0 and c.key.category == "cls"]
    assert len({c.components().digest() for c in random if c.key.fold == 0 and c.key.target == "neurons"}) == 1
