"""One component-set type: every conversion against a direct implementation on small arrays, and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from sparcom.components import Component, ComponentSet, Layout
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_NOUNS, KIND_TABLE, KIND_UNITS, KINDS, kind_of

SHAPES = {"neuron": {0: (12,), 2: (9,)}, "shared_neuron": {1: (7,)}, "expert": {1: (4,), 2: (4,)},
          "expert_neuron": {1: (4, 5), 2: (4, 5)}}


def random_masks(seed: int, category: str = "math") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{kind}/{category}/{layer}": rng.random(shape) < 0.35
            for kind, layers in SHAPES.items() for layer, shape in layers.items()}


@pytest.fixture
def masks() -> dict[str, np.ndarray]:
    return {**random_masks(1), **random_masks(2, "code")}


def test_from_masks_holds_each_layers_members_and_shape(masks):
    one = ComponentSet.from_masks(masks, "math")
    assert one.kinds == list(KINDS)
    for kind, layers in SHAPES.items():
        assert list(one.members[kind]) == sorted(layers)  # every layer, in layer order
        for layer, shape in layers.items():
            mask = masks[f"{kind}/math/{layer}"]
            expected = np.flatnonzero(mask) if mask.ndim == 1 else np.argwhere(mask)
            assert np.array_equal(one.members[kind][layer], expected)
            assert one.shapes[kind][layer] == shape
    assert one.size() == sum(int(m.sum()) for k, m in masks.items() if "/math/" in k)
    assert one.size("expert") == sum(int(masks[f"expert/math/{j}"].sum()) for j in (1, 2))
    only = ComponentSet.from_masks(masks, "code", ["expert"])
    assert only.kinds == ["expert"] and only.label == "code"


def test_masks_round_trip(masks):
    one = ComponentSet.from_masks(masks, "math")
    back = one.to_masks("math")
    assert set(back) == {k for k in masks if "/math/" in k}
    for key, mask in back.items():
        assert mask.dtype == bool and np.array_equal(mask, masks[key])


def test_flat_mask_over_a_layout_round_trip(masks):
    one = ComponentSet.from_masks(masks, "math")
    for kind, layers in SHAPES.items():
        layout = one.layout(kind)
        assert layout == Layout(kind, tuple(sorted(layers)), tuple(layers[j] for j in sorted(layers)))
        direct = np.concatenate([masks[f"{kind}/math/{j}"].reshape(-1) for j in sorted(layers)])
        assert np.array_equal(one.flat(kind), direct)
        again = ComponentSet.from_flat(layout, direct)
        assert again.kinds == [kind]
        for layer in layers:
            assert np.array_equal(again.members[kind][layer], one.members[kind][layer])


def test_ids_round_trip_and_match_a_direct_listing(masks):
    one = ComponentSet.from_masks(masks, "math")
    direct = []
    for kind in KINDS:
        for layer in sorted(SHAPES[kind]):
            mask = masks[f"{kind}/math/{layer}"]
            if mask.ndim == 1:
                direct += [Component(kind, layer, int(i)) for i in np.flatnonzero(mask)]
            else:
                direct += [Component(kind, layer, int(i), int(e)) for e, i in np.argwhere(mask)]
    assert one.ids() == direct
    keys = [c.key for c in direct]
    again = ComponentSet.from_ids(reversed(keys), one)  # any order, ids as text; shapes from the set itself
    for kind in KINDS:
        for layer, members in again.members[kind].items():
            assert np.array_equal(members, one.members[kind][layer])
    assert again.ids() == direct


def test_from_indices_equals_the_masks_it_names():
    shapes = ComponentSet({}, SHAPES)
    built = ComponentSet.from_indices({"neuron": {2: [8, 1, 1]}, "expert_neuron": {1: [(3, 4), (0, 2)]}}, shapes)
    assert built.members["neuron"][2].tolist() == [1, 8]  # a set: sorted, once each
    assert built.members["expert_neuron"][1].tolist() == [[0, 2], [3, 4]]
    assert built.mask("expert_neuron", 1)[3, 4] and built.mask("expert_neuron", 1).sum() == 2
    with pytest.raises(SparcomError, match="has no neuron"):
        ComponentSet.from_indices({"neuron": {1: [0]}}, shapes)
    with pytest.raises(SparcomError, match="out of range"):
        ComponentSet.from_indices({"expert": {1: [4]}}, shapes)
    with pytest.raises(SparcomError, match="no expert_neuron site at layer 0"):
        ComponentSet.from_ids(["expert_neuron/0/1/1"], shapes)
    with pytest.raises(SparcomError, match=r"outside 0\.\.8"):
        ComponentSet.from_ids(["neuron/2/9"], shapes)


def test_counts_and_block_counts_equal_direct_sums(masks):
    one = ComponentSet.from_masks(masks, "math")
    assert one.counts("neuron") == {j: int(masks[f"neuron/math/{j}"].sum()) for j in (0, 2)}
    for layer in (1, 2):
        assert np.array_equal(one.expert_counts()[layer], masks[f"expert_neuron/math/{layer}"].sum(axis=1))
    rows = one.block_counts()
    for row in rows:
        mask = masks[f"{row['kind']}/math/{row['layer']}"]
        assert row["selected"] == int(mask.sum() if row["expert"] is None else mask[row["expert"]].sum())
    # every layer of a 1-D kind (even empty ones); the experts of a 2-D kind that have members
    assert sum(r["kind"] == "neuron" for r in rows) == 2
    assert {(r["layer"], r["expert"]) for r in rows if r["kind"] == "expert_neuron"} == {
        (j, int(e)) for j in (1, 2) for e in np.flatnonzero(masks[f"expert_neuron/math/{j}"].sum(axis=1))}


def test_digest_is_what_the_set_is(masks):
    one = ComponentSet.from_masks(masks, "math")
    assert one.digest() == ComponentSet.from_masks(masks, "math", label="another name").digest()
    assert one.digest() != ComponentSet.from_masks(masks, "code").digest()
    moved = dict(masks)
    moved["neuron/math/0"] = ~masks["neuron/math/0"]
    assert one.digest() != ComponentSet.from_masks(moved, "math").digest()


def test_the_kind_table_is_the_one_source_of_kind_facts():
    assert KINDS == ("neuron", "shared_neuron", "expert", "expert_neuron")
    assert [k.ndim for k in KIND_TABLE.values()] == [1, 1, 1, 2]
    assert [k.site for k in KIND_TABLE.values()] == ["dense", "shared", "moe", "moe"]
    assert KIND_NOUNS["expert"] == "ISEs" and KIND_UNITS["shared_neuron"] == "shared-expert neurons"
    assert kind_of("expert").routed and not kind_of("neuron").routed
    with pytest.raises(SparcomError, match="unknown component kind"):
        kind_of("head")
    assert Component("expert", 3, 5).describe() == "layer 3, expert 5"
    assert Component("expert_neuron", 3, 5, 1).describe() == "layer 3, expert 1, neuron 5"
