"""Card rankings against plain loops: the margin score, the top members of a set, component keys."""

from __future__ import annotations

import numpy as np
import pytest

from sparcom.analysis.ranking import (
    Component,
    card_components,
    component_at,
    flat_position,
    margin_score,
    top_components,
)
from sparcom.components import Layout
from sparcom.errors import SparcomError


def test_margin_score_direct():
    rng = np.random.default_rng(0)
    p = rng.random((4, 9))
    score = margin_score(p)
    for c in range(4):
        for n in range(9):
            others = max(p[o, n] for o in range(4) if o != c)
            assert score[c, n] == pytest.approx(p[c, n] - others)
    assert np.isnan(margin_score(p[:1])).all()


def test_top_components_direct():
    layout = Layout("neuron", (0, 3), ((5,), (4,)))
    rng = np.random.default_rng(1)
    p = rng.random((3, 9)).round(1)  # ties on purpose: broken by flat position
    mask = rng.random((3, 9)) < 0.6
    ranked = top_components(p, mask, layout, ["a", "b", "c"], 3, "margin")
    score = margin_score(p)
    for i, category in enumerate("abc"):
        members = sorted((-score[i, n], n) for n in range(9) if mask[i, n])[:3]
        expected = [(Component("neuron", 0 if n < 5 else 3, n if n < 5 else n - 5), -s) for s, n in members]
        assert [(c, pytest.approx(v)) for c, v in ranked[category]] == expected
    union = card_components(p, mask, layout, ["a", "b", "c"], 2)
    manual = set()
    for name in ("frequency", "margin"):
        for ranked_list in top_components(p, mask, layout, ["a", "b", "c"], 2, name).values():
            manual.update(c for c, _ in ranked_list)
    assert union == sorted(manual)
    with pytest.raises(SparcomError, match="shape"):
        top_components(p, mask, layout, ["a", "b", "c"], 2, np.zeros((3, 2)))


def test_expert_neuron_positions_round_trip():
    layout = Layout("expert_neuron", (1, 2), ((2, 3), (2, 3)))
    for flat in range(12):
        component = component_at(layout, flat)
        assert flat_position(layout, component) == flat
        assert Component.from_key(component.key) == component
    assert component_at(layout, 10) == Component("expert_neuron", 2, 1, 1)
    assert Component("expert_neuron", 2, 1, 1).key == "expert_neuron/2/1/1"
    with pytest.raises(SparcomError, match="outside"):
        flat_position(layout, Component("expert_neuron", 1, 3, 0))
