"""Random control sets keep the selected set's per-layer and per-expert counts and are reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from sparcom.causal.statistics import cell_statistics as significance
from sparcom.components import ComponentSet
from sparcom.random_sets import random_like, random_sets
from sparcom.seeding import stream_seed


def selection_masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    masks = {}
    for layer, width in ((0, 48), (1, 48), (3, 30)):
        masks[f"neuron/math/{layer}"] = rng.random(width) < 0.2
    masks["neuron/math/2"] = np.zeros(48, dtype=bool)  # a layer with nothing selected
    masks["shared_neuron/math/1"] = rng.random(24) < 0.3
    for layer in (1, 2):
        masks[f"expert/math/{layer}"] = np.isin(np.arange(8), [1, 6])
        experts = np.zeros((8, 16), dtype=bool)
        experts[2, [0, 3, 9]] = True
        experts[5, :] = True  # a whole expert
        experts[7, 15] = True
        masks[f"expert_neuron/math/{layer}"] = experts
    masks["neuron/code/0"] = np.ones(48, dtype=bool)  # another category is ignored
    return masks


@pytest.fixture
def ablation() -> ComponentSet:
    return ComponentSet.from_masks(selection_masks(), "math", ["neuron", "shared_neuron", "expert", "expert_neuron"])


def test_random_sets_keep_per_layer_and_per_expert_counts(ablation):
    for control in random_sets(ablation, seeds=5, base_seed=11):
        assert control.shapes == ablation.shapes
        for kind in ("neuron", "shared_neuron", "expert"):
            assert control.counts(kind) == ablation.counts(kind)
            for layer, indices in control.members[kind].items():
                assert len(np.unique(indices)) == len(indices)
                assert indices.min(initial=0) >= 0 and indices.max(initial=0) < ablation.shapes[kind][layer][0]
        for layer, counts in ablation.expert_counts().items():
            assert np.array_equal(control.expert_counts()[layer], counts)
            pairs = control.members["expert_neuron"][layer]
            assert len({tuple(p) for p in pairs}) == len(pairs)
            assert pairs[:, 1].max() < 16
        assert control.size() == ablation.size()
    assert ablation.counts("neuron")[2] == 0


def test_random_sets_are_reproducible_and_differ_between_seeds(ablation):
    first, again = random_like(ablation, 4, "neurons/math"), random_like(ablation, 4, "neurons/math")
    other_seed, other_label = random_like(ablation, 5, "neurons/math"), random_like(ablation, 4, "neurons/code")
    for kind in ablation.kinds:
        for layer in ablation.members[kind]:
            assert np.array_equal(first.members[kind][layer], again.members[kind][layer])
    assert any(not np.array_equal(first.members["neuron"][j], other_seed.members["neuron"][j]) for j in (0, 1, 3))
    assert any(not np.array_equal(first.members["neuron"][j], other_label.members["neuron"][j]) for j in (0, 1, 3))
    # the stream seed is a SHA-256 of its parts: fixed across processes, platforms and hash randomisation
    assert stream_seed(0, "neurons/math", "neuron", 0) == 6275158450072175102
    assert stream_seed(0, "a") != stream_seed(1, "a")


def test_random_sets_are_uniform_over_the_layer(ablation):
    hits = np.zeros(48)
    one_layer = ComponentSet({"neuron": {0: np.arange(6)}}, {"neuron": {0: (48,)}}, "x")
    for seed in range(2000):
        hits[random_like(one_layer, seed).members["neuron"][0]] += 1
    expected = 2000 * 6 / 48
    assert np.all(np.abs(hits - expected) < 6 * np.sqrt(expected))


def test_significance_by_hand():
    observed = np.array([[0.5, 0.0]])
    random = np.array([[[0.1, 0.0], [0.2, 0.1], [0.6, -0.1], [0.3, 0.0]]])  # [A=1, N=4, C=2]
    sig = significance(observed, random)
    assert sig["mean"][0, 0] == pytest.approx(0.3)
    assert sig["std"][0, 0] == pytest.approx(np.std([0.1, 0.2, 0.6, 0.3], ddof=1))
    assert sig["z"][0, 0] == pytest.approx((0.5 - 0.3) / np.std([0.1, 0.2, 0.6, 0.3], ddof=1))
    assert sig["p"][0, 0] == pytest.approx((1 + 1) / 5)  # one random set (0.6) is at least as damaging
    assert sig["p"][0, 1] == pytest.approx((1 + 3) / 5)  # ties count against the selected set
    assert sig["excess"][0, 1] == pytest.approx(0.0)
    none = significance(observed, np.zeros((1, 0, 2)))
    assert np.isnan(none["p"]).all() and np.isnan(none["z"]).all()
    constant = significance(observed, np.zeros((1, 3, 2)))
    assert np.isnan(constant["z"]).all() and constant["p"][0, 0] == pytest.approx(0.25)
