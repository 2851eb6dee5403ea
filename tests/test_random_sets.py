"""The one random-set drawer: same shape in every block, only candidates, the exclusion honoured, and both
strategies equal to direct implementations of the draws whose numbers are pinned (causal controls, validity)."""

from __future__ import annotations

import numpy as np
import pytest

from sparcom.components import ComponentSet, Layout
from sparcom.errors import SparcomError
from sparcom.random_sets import (
    batched,
    blocks,
    draw,
    draw_like,
    frequency_matched,
    per_set,
    quantile_strata,
    random_like,
    uniform_subsets,
)
from sparcom.seeding import stream_seed

DENSE = Layout("neuron", (0, 1, 3), ((20,), (20,), (12,)))
EXPERTS = Layout("expert_neuron", (1, 2), ((4, 6), (4, 6)))


def selected(layout: Layout, seed: int = 0, rate: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).random(layout.size) < rate


def block_of(layout: Layout) -> np.ndarray:
    """[N] the block (layer, or layer × expert) of every flat position, written directly."""
    labels, start = [], 0
    for shape in layout.shapes:
        width = shape[-1]
        per_row = np.repeat(np.arange(int(np.prod(shape)) // width), width) if len(shape) == 2 else np.zeros(shape[0])
        labels.append(start + per_row)
        start += (shape[0] if len(shape) == 2 else 1)
    return np.concatenate(labels).astype(int)


@pytest.mark.parametrize("layout", [DENSE, EXPERTS])
@pytest.mark.parametrize("strategy", [per_set, batched])
def test_every_set_keeps_the_count_of_every_block(layout, strategy):
    mask = selected(layout)
    sets = draw(layout, mask, 40, (7, "x"), strategy)
    where = block_of(layout)
    want = np.bincount(where[mask], minlength=where.max() + 1)
    assert sets.shape == (40, mask.sum())
    for row in sets:
        assert len(np.unique(row)) == len(row) and np.all(np.diff(row) > 0)  # a sorted set
        assert np.array_equal(np.bincount(where[row], minlength=where.max() + 1), want)


@pytest.mark.parametrize("strategy", [per_set, batched])
def test_strata_and_exclusion_are_honoured(strategy):
    layout = Layout("expert_neuron", (1, 2), ((4, 30), (4, 30)))
    mask = selected(layout, 3, 0.15)
    strata = np.random.default_rng(5).integers(0, 3, layout.size)  # e.g. frequency bins
    where = block_of(layout) * 3 + strata
    sets = draw(layout, mask, 30, (1, "y"), strategy, strata=strata, exclude=mask)
    want = np.bincount(where[mask], minlength=where.max() + 1)
    for row in sets:
        assert not mask[row].any()  # the selected components themselves are never drawn
        assert np.array_equal(np.bincount(where[row], minlength=where.max() + 1), want)
    # without exclusion, the selected components are candidates like any other
    assert any(mask[row].any() for row in draw(layout, mask, 30, (1, "y"), strategy, strata=strata))


def test_a_block_without_enough_candidates_is_refused():
    mask = np.zeros(DENSE.size, dtype=bool)
    mask[:15] = True  # 15 of layer 0's 20, and only 5 are left once they are excluded
    with pytest.raises(SparcomError, match="15 components to draw but only 5 candidates"):
        blocks(DENSE, mask, exclude=mask)


def test_draws_with_exclusion_are_uniform_over_the_candidates():
    layout = Layout("neuron", (0,), ((10,),))
    mask = np.zeros(10, dtype=bool)
    mask[[0, 1]] = True
    hits = np.zeros(10)
    for row in draw(layout, mask, 4000, ("u",), batched, exclude=mask):
        hits[row] += 1
    expected = 4000 * 2 / 8
    assert hits[:2].sum() == 0 and np.all(np.abs(hits[2:] - expected) < 5 * np.sqrt(expected))


def test_per_set_is_the_causal_controls_draw():
    """Set r of (seed, label): per block, numpy's choice from a generator seeded by (seed + r, label, kind, layer[,
    expert]) — the draw the pinned ΔNLL numbers were recorded with."""
    mask = selected(EXPERTS, 8)
    sets = draw(EXPERTS, mask, 3, (10, "neurons/math"), per_set)
    for r in range(3):
        direct = []
        for position, (layer, shape) in enumerate(zip(EXPERTS.layers, EXPERTS.shapes, strict=True)):
            layer_mask = EXPERTS.split(mask)[layer]
            for expert in range(shape[0]):
                n = int(layer_mask[expert].sum())
                if n:
                    rng = np.random.default_rng(stream_seed(10 + r, "neurons/math", "expert_neuron", layer, expert))
                    within = np.sort(rng.choice(shape[1], size=n, replace=False))
                    direct += list(EXPERTS.offsets[position] + expert * shape[1] + within)
        assert sets[r].tolist() == sorted(direct)


def test_batched_is_validitys_draw():
    """R sets at once: per block, the smallest of uniform keys from a generator seeded by (label..., position)."""
    mask = selected(DENSE, 9)
    sets = draw_like(mask, DENSE, 5, 2, "fold", "math")
    parts = []
    for position, part in enumerate(part for _, part in DENSE.groups("expert")):
        count = int(mask[part].sum())
        if count:
            rng = np.random.default_rng(stream_seed(2, "fold", "math", position))
            parts.append(uniform_subsets(rng, part.stop - part.start, count, 5) + part.start)
    assert np.array_equal(sets, np.sort(np.concatenate(parts, axis=1), axis=1))


def test_random_like_draws_a_component_set_of_the_same_shape():
    shapes = {"neuron": {0: (20,), 1: (20,)}, "expert_neuron": {1: (4, 6)}}
    masks = {f"{kind}/math/{layer}": np.random.default_rng(layer).random(shape) < 0.3
             for kind, layers in shapes.items() for layer, shape in layers.items()}
    chosen = ComponentSet.from_masks(masks, "math")
    control = random_like(chosen, 4, "neurons/math")
    assert control.shapes == chosen.shapes and control.label == "random:neurons/math:4"
    assert control.counts("neuron") == chosen.counts("neuron")
    assert np.array_equal(control.expert_counts()[1], chosen.expert_counts()[1])
    for kind in chosen.kinds:  # the flat draw of each kind, turned back into the set
        assert np.array_equal(np.flatnonzero(control.flat(kind)),
                              draw(chosen.layout(kind), chosen.flat(kind), 1, (4, "neurons/math"), per_set)[0])
    excluded = random_like(chosen, 4, "neurons/math", exclude=chosen)
    assert all(not (excluded.flat(k) & chosen.flat(k)).any() for k in chosen.kinds)


def test_frequency_matched_sets_keep_every_layer_and_bin_count_and_may_hold_members():
    layout = Layout("neuron", (0, 1, 2), ((80,), (80,), (80,)))
    rng = np.random.default_rng(5)
    values = rng.beta(2, 3, layout.size)
    mask = np.zeros(layout.size, dtype=bool)
    mask[np.argsort(-values)[:12]] = True  # the most frequent, as the paper's rule selects
    sets = frequency_matched(mask, layout, 200, values, "t", 1)
    strata = quantile_strata(values)
    assert sets.shape == (200, 12)
    for row in sets:
        drawn = np.zeros(layout.size, dtype=bool)
        drawn[row] = True
        for j in range(3):
            part = layout.layer_slice(j)
            for label in np.unique(strata[part]):
                inside = strata[part] == label
                assert drawn[part][inside].sum() == mask[part][inside].sum()
    # members are candidates like any other of their (layer, bin): a draw holds member i's cell's share of members
    layer = np.arange(layout.size) // 80
    cell_share = [mask[(strata == strata[i]) & (layer == layer[i])].mean() for i in np.flatnonzero(mask)]
    assert np.isin(sets, np.flatnonzero(mask)).mean() == pytest.approx(np.mean(cell_share), abs=0.05)
    np.testing.assert_array_equal(sets, frequency_matched(mask, layout, 200, values, "t", 1))  # one stream
    assert not np.array_equal(sets, frequency_matched(mask, layout, 200, values, "t", 2))
    assert values[sets].mean() > values[draw_like(mask, layout, 200, "t", 1)].mean()  # nearer in frequency
