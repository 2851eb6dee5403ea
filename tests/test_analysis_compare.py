"""Base → tuned alterations: hand examples, a run against itself, divergences and correlations against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import spearmanr
from test_analysis_support import make_run, manifest, synthetic_counts

from sparcom.analysis.compare import (
    class_transitions,
    incompatibilities,
    jensen_shannon,
    rank_correlation,
    routing_shift,
    set_changes,
    set_changes_per_group,
    structure_change,
)
from sparcom.analysis.pipeline import compare
from sparcom.analysis.selection import SelectionRule
from sparcom.components import Layout
from sparcom.errors import SparcomError

BASE = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=bool)
TUNED = np.array([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=bool)


def test_set_changes_by_hand():
    a, b = set_changes(BASE, TUNED, ("x", "y"))
    assert a == {"category": "x", "base": 2, "tuned": 2, "retained": 1, "gained": 1, "lost": 1,
                 "jaccard": 1 / 3, "retained_share": 0.5}
    assert b == {"category": "y", "base": 2, "tuned": 3, "retained": 2, "gained": 1, "lost": 0,
                 "jaccard": 2 / 3, "retained_share": 1.0}


def test_set_changes_of_empty_sets():
    empty = np.zeros((1, 3), dtype=bool)
    (row,) = set_changes(empty, empty, ("x",))
    assert row["retained"] == row["gained"] == row["lost"] == 0
    assert math.isnan(row["jaccard"]) and math.isnan(row["retained_share"])


def test_set_changes_per_layer():
    layout = Layout("neuron", (0, 1), ((2,), (2,)))
    rows = set_changes_per_group(BASE, TUNED, layout, ("x", "y"))
    assert [(r["category"], r["layer"], r["retained"], r["gained"], r["lost"]) for r in rows] == [
        ("x", 0, 1, 0, 1), ("y", 0, 1, 0, 0), ("x", 1, 0, 1, 0), ("y", 1, 1, 1, 0)]


def test_class_transitions_by_hand():
    # base classes (K=2): 0 unique, 1 general, 2 unique, 3 never; tuned: 0 unique, 1 unique, 2 general, 3 unique
    matrix = class_transitions(BASE, TUNED)
    expected = np.zeros((4, 4), dtype=int)
    expected[1, 1] = expected[3, 1] = expected[1, 3] = expected[0, 1] = 1
    assert matrix.tolist() == expected.tolist()
    changes = {r["statistic"]: r for r in structure_change(BASE, TUNED, ("x", "y"))}
    assert changes["general"] == {"statistic": "general", "base": 1, "tuned": 1, "change": 0}
    assert changes["unique_total"]["base"] == 2 and changes["unique_total"]["tuned"] == 3
    assert changes["never_selected"]["change"] == -1


def test_jensen_shannon_matches_scipy_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.uniform(0, 1, 8), rng.uniform(0, 1, 8)
        assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert jensen_shannon([1, 2, 3], [2, 4, 6]) == 0.0
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert math.isnan(jensen_shannon([0, 0], [1, 1]))


def test_routing_shift_per_layer():
    layout = Layout("expert", (0, 1), ((2,), (2,)))
    base = np.array([[0.5, 0.5, 1.0, 0.0]])
    tuned = np.array([[0.25, 0.25, 0.0, 1.0]])
    rows = routing_shift(base, tuned, layout, ("x",))
    assert rows[0]["js_divergence_bits"] == 0.0  # same distribution (the scale does not matter)
    assert rows[1]["js_divergence_bits"] == pytest.approx(1.0)
    assert (rows[1]["top_expert_base"], rows[1]["top_expert_tuned"]) == (0, 1)


def test_rank_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 50).astype(float)
    y = x + rng.integers(0, 3, 50)
    assert rank_correlation(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(rank_correlation(np.ones(4), np.arange(4.0)))


def test_compare_run_with_itself_retains_everything():
    run = make_run(synthetic_counts(5, moe=True))
    result = compare(run, run, SelectionRule("percentile", 0.05))
    assert set(result.kinds) == {"neuron", "expert", "expert_neuron"}
    for kind, c in result.kinds.items():
        for row in c.changes:
            assert row["gained"] == 0 and row["lost"] == 0, kind
            assert row["retained"] == row["base"] == row["tuned"] > 0
            assert row["jaccard"] == 1.0
        for row in c.changes_per_layer:
            assert row["gained"] == row["lost"] == 0
        for row in c.correlation:
            assert row["spearman"] == pytest.approx(1.0) and row["pearson"] == pytest.approx(1.0)
            assert row["mean_abs_change"] == 0.0
        assert np.count_nonzero(c.transitions - np.diag(np.diag(c.transitions))) == 0
        assert all(r["change"] == 0 for r in c.structure)
    assert all(r["js_divergence_bits"] == 0.0 for r in result.kinds["expert"].routing)
    assert "identical" in " ".join(result.notes)


@pytest.mark.parametrize(("field", "value"), [("model__architecture", "OtherForCausalLM"), ("tokenizer_hash", "tok2"),
                                              ("scope", "all"), ("template", "raw"), ("system_prompt", "Be brief."),
                                              ("model__sizes", {"layers": 4})])
def test_compare_refuses_mismatched_settings_unless_forced(field, value):
    counts = synthetic_counts(0)
    base = make_run(counts)
    tuned = make_run(counts)
    tuned.manifest = manifest(base.categories, **{field: value})
    reasons = incompatibilities(base.manifest, tuned.manifest)
    assert len(reasons) == 1 and reasons[0].startswith(field.replace("__", ".") + " differs")
    with pytest.raises(SparcomError, match=r"cannot compare .*differs.*pass --force"):
        compare(base, tuned)
    forced = compare(base, tuned, force=True)
    assert forced.overridden == reasons
    assert forced.summary()["forced_despite"] == reasons


def test_compare_refuses_different_shapes_even_when_forced():
    base = make_run(synthetic_counts(0, width=40))
    tuned = make_run(synthetic_counts(0, width=30))
    with pytest.raises(SparcomError, match="cannot be compared component by component"):
        compare(base, tuned, force=True)


def test_compare_uses_common_categories_only():
    base = make_run(synthetic_counts(0, categories=("cls", "code", "qa")))
    tuned = make_run(synthetic_counts(1, categories=("code", "qa", "math")))
    result = compare(base, tuned, force=True)
    assert result.categories == ("code", "qa")
    assert "cls, math" in result.notes[0]
    with pytest.raises(SparcomError, match="no category in common"):
        compare(make_run(synthetic_counts(0, categories=("cls",))), make_run(synthetic_counts(0, categories=("sum",))))
