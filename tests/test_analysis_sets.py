"""Generality / uniqueness statistics on hand-computed examples, including ties and empty sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.sets import (
    activity_counts,
    chance_baseline,
    classify,
    epsilon_sweep,
    group_table,
    overlap,
    selected_components,
    selected_per_group,
    set_counts,
    shares,
    summary_statistics,
)
from sparcom.components import Layout

CATS = ("a", "b", "c")
# components:       0  1  2  3  4  5
MASK = np.array([[1, 1, 1, 0, 0, 0],   # a: {0, 1, 2}
                 [1, 1, 0, 1, 0, 0],   # b: {0, 1, 3}
                 [1, 0, 0, 0, 1, 0]],  # c: {0, 4}
                dtype=bool)


def test_set_counts_by_hand():
    counts = set_counts(MASK, CATS)
    assert counts == {
        "components": 6, "selected_any": 5, "general": 1, "never_selected": 1,
        "selected_a": 3, "selected_b": 3, "selected_c": 2,
        "shared_by_2": 1, "unique_total": 3, "unique_a": 1, "unique_b": 1, "unique_c": 1,
    }
    assert classify(MASK).tolist() == [3, 2, 1, 1, 1, 0]


def test_set_counts_of_empty_sets():
    counts = set_counts(np.zeros((3, 4), dtype=bool), CATS)
    assert counts["general"] == 0 and counts["unique_total"] == 0 and counts["never_selected"] == 4
    result = shares(counts, CATS)
    assert all(math.isnan(v) for v in result.values())


def test_single_category_everything_selected_is_general_not_unique():
    counts = set_counts(np.array([[True, False]]), ("a",))
    assert counts["general"] == 1 and counts["unique_total"] == 0 and counts["unique_a"] == 0


def test_shares_by_hand():
    result = shares(set_counts(MASK, CATS), CATS)
    assert result["general_share"] == 1 / 5
    assert result["unique_share"] == 3 / 5
    assert result["unique_share_a"] == 1 / 3
    assert result["general_share_c"] == 1 / 2


def test_overlap_by_hand():
    o = overlap(MASK, CATS)
    assert o.intersection.tolist() == [[3, 2, 1], [2, 3, 1], [1, 1, 2]]
    assert o.jaccard[0, 1] == 2 / 4  # {0,1} of {0,1,2,3}
    assert o.jaccard[0, 2] == 1 / 4  # {0} of {0,1,2,4}
    assert o.containment[2, 0] == 1 / 2  # half of c's set is in a's
    assert o.containment[0, 2] == 1 / 3
    assert np.allclose(np.diag(o.jaccard), 1.0)
    rows = o.rows()
    assert len(rows) == 9
    assert rows[1] == {"category_a": "a", "category_b": "b", "size_a": 3, "size_b": 3, "intersection": 2,
                       "union": 4, "jaccard": 0.5, "containment_a_in_b": 2 / 3}


def test_overlap_with_empty_sets_is_undefined_not_zero():
    mask = np.array([[1, 0], [0, 0]], dtype=bool)
    o = overlap(mask, ("a", "b"))
    assert o.jaccard[0, 1] == 0.0  # one set empty, union not empty: no overlap
    assert math.isnan(o.jaccard[1, 1])  # both empty: undefined
    assert math.isnan(o.containment[1, 0])  # |B| = 0: share of B in A undefined
    assert o.containment[0, 1] == 0.0


def test_activity_dead_and_always_on_ignore_categories_without_tokens():
    p = np.array([[0.0, 1.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [0.7, 0.0, 0.0, 0.0]])
    assert activity_counts(p, np.array([10, 10, 0])) == {"dead": 2, "always_on": 1}
    assert activity_counts(p) == {"dead": 1, "always_on": 0}
    assert activity_counts(p, np.array([0, 0, 0])) == {"dead": 0, "always_on": 0}


def test_chance_baseline_by_hand():
    # two sets of 5 from 10, independent: expected overlap 10 * .5 * .5 = 2.5; unique to each 10 * .5 * .5 = 2.5
    result = chance_baseline([5, 5], 10)
    assert result["chance_general"] == 2.5
    assert result["chance_unique_total"] == 5.0
    assert result["chance_selected_any"] == 7.5
    assert result["chance_general_share"] == 2.5 / 7.5
    assert math.isnan(chance_baseline([0, 0], 10)["chance_general_share"])


def test_group_tables_per_layer_and_per_expert():
    layout = Layout("expert_neuron", (0, 3), ((2, 2), (1, 2)))
    # flat order: layer 0 expert 0 (n0 n1), layer 0 expert 1 (n0 n1), layer 3 expert 0 (n0 n1)
    mask = np.array([[1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0]], dtype=bool)
    p = np.array([[0.5, 0.0, 0.4, 0.0, 0.0, 0.9], [0.5, 0.0, 0.1, 0.3, 0.0, 0.0]])
    per_layer = group_table(mask, layout, ("a", "b"), "layer", p, np.array([5, 5]))
    assert [r["layer"] for r in per_layer] == [0, 3]
    assert per_layer[0]["general"] == 1 and per_layer[0]["unique_a"] == 1 and per_layer[0]["unique_b"] == 1
    assert per_layer[0]["dead"] == 1 and per_layer[1]["dead"] == 1
    per_expert = group_table(mask, layout, ("a", "b"), "expert")
    assert [(r["layer"], r["expert"]) for r in per_expert] == [(0, 0), (0, 1), (3, 0)]
    assert [r["general"] for r in per_expert] == [1, 0, 0]
    assert [r["unique_a"] for r in per_expert] == [0, 1, 1]
    long = selected_per_group(mask, layout, ("a", "b"))
    assert long[0] == {"category": "a", "layer": 0, "components": 4, "selected": 2, "fraction": 0.5}
    rows = selected_components(mask, p, layout, ("a", "b"))
    assert rows[2] == {"category": "a", "layer": 3, "expert": 0, "index": 1, "p": 0.9, "categories_selecting": 1}


def test_epsilon_sweep_includes_the_default_and_grows_with_epsilon():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(3, 200))
    layout = Layout("neuron", (0,), ((200,),))
    rows = epsilon_sweep(p, layout, CATS, SelectionRule("percentile", 0.03), [0.01, 0.1, 0.5])
    assert [r["epsilon"] for r in rows] == [0.01, 0.03, 0.1, 0.5]
    assert [r["is_default"] for r in rows] == [False, True, False, False]
    assert [r["selected_a"] for r in rows] == [2, 6, 20, 100]
    assert rows[-1]["general"] >= rows[0]["general"]
    assert rows[1] | {"epsilon": 0} == {**summary_statistics(SelectionRule("percentile", 0.03).apply(p, layout), CATS),
                                         "epsilon": 0, "is_default": True}


@pytest.mark.parametrize("by", ["layer", "expert"])
def test_layout_locate_and_split_round_trip(by):
    layout = Layout("expert_neuron", (1, 2), ((2, 3), (2, 3)))
    flat = np.arange(layout.size)
    assert layout.flatten(layout.split(flat)).tolist() == flat.tolist()
    where = layout.locate(np.array([0, 4, 6, 11]))
    assert where["layer"].tolist() == [1, 1, 2, 2]
    assert where["expert"].tolist() == [0, 1, 0, 1]
    assert where["index"].tolist() == [0, 1, 0, 2]
    assert sum(part.stop - part.start for _, part in layout.groups(by)) == layout.size
