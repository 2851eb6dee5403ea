"""Bootstrap intervals from replicate counters: per-replicate frequencies, the interval, and the no-counter case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_analysis_support import make_run, synthetic_counts

from sparcom.analysis.bootstrap import HOW_TO_ENABLE, percentile_interval, replicate_statistics
from sparcom.analysis.frequencies import kind_frequencies, replicate_count, replicate_frequencies
from sparcom.analysis.pipeline import identify
from sparcom.analysis.selection import SelectionRule
from sparcom.errors import SparcomError


def _counts():
    return {
        "tokens/a": torch.tensor(10), "tokens/b": torch.tensor(10),
        "neuron/a/0": torch.tensor([5, 1, 0]), "neuron/b/0": torch.tensor([1, 5, 0]),
        "bootstrap/tokens/a": torch.tensor([10, 20]), "bootstrap/tokens/b": torch.tensor([5, 0]),
        "bootstrap/neuron/a/0": torch.tensor([[5, 1, 0], [2, 8, 4]]),
        "bootstrap/neuron/b/0": torch.tensor([[1, 4, 0], [0, 0, 0]]),
    }


def test_replicate_frequencies_by_hand():
    counts = _counts()
    layout = kind_frequencies(counts, ["a", "b"], "neuron").layout
    assert replicate_count(counts, ["a", "b"], "neuron") == 2
    first, second = list(replicate_frequencies(counts, ["a", "b"], layout))
    assert first.tolist() == [[0.5, 0.1, 0.0], [0.2, 0.8, 0.0]]
    assert second.tolist() == [[0.1, 0.4, 0.2], [0.0, 0.0, 0.0]]  # b drew no instruction: p = 0


def test_rule_is_applied_per_replicate():
    counts = _counts()
    layout = kind_frequencies(counts, ["a", "b"], "neuron").layout
    stats = replicate_statistics(replicate_frequencies(counts, ["a", "b"], layout), layout, ["a", "b"],
                                 SelectionRule("threshold", 0.3))
    # replicate 1: a {0}, b {1} -> no general, two unique; replicate 2: a {1}, b {} -> one unique
    assert stats["selected_a"].tolist() == [1, 1]
    assert stats["selected_b"].tolist() == [1, 0]
    assert stats["unique_total"].tolist() == [2, 1]
    assert stats["unique_share"].tolist() == [1.0, 1.0]
    assert stats["general"].tolist() == [0, 0]
    assert math.isnan(stats["unique_share_b"][1])  # b's set is empty in replicate 2


def test_percentile_interval():
    values = np.arange(101, dtype=float)
    assert percentile_interval(values, 0.9) == (5.0, 95.0)
    assert percentile_interval(np.array([np.nan, 1.0, 1.0]), 0.95) == (1.0, 1.0)
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan]), 0.95))
    with pytest.raises(SparcomError, match="confidence level"):
        percentile_interval(values, 1.0)


def test_missing_replicates_are_reported_not_fatal():
    counts = _counts()
    del counts["bootstrap/neuron/b/0"]
    assert replicate_count(counts, ["a", "b"], "neuron") is None
    run = make_run(synthetic_counts(0, categories=("a", "b")))
    result = identify(run, sweep=False)
    summary = result.summary()["kinds"]["neuron"]["bootstrap"]
    assert summary == {"available": False, "note": HOW_TO_ENABLE}
    assert "--bootstrap" in HOW_TO_ENABLE


def test_identify_with_replicates_gives_intervals_around_the_estimate():
    counts = synthetic_counts(3, categories=("a", "b", "c"), replicates=40, moe=True)
    run = make_run(counts)
    result = identify(run, sweep=False, ci_level=0.9)
    for kind in ("neuron", "expert", "expert_neuron"):
        rows = {r["statistic"]: r for r in result.kinds[kind].intervals}
        assert result.kinds[kind].replicates == 40
        for name in ("general", "unique_total", "selected_a"):
            row = rows[name]
            assert row["replicates"] == 40 and row["level"] == 0.9
        # every replicate selects the favourite neurons planted in the synthetic counts, so the selected count varies
        # little; the estimate on all data is inside the interval
        assert rows["selected_a"]["low"] <= rows["selected_a"]["estimate"] <= rows["selected_a"]["high"]
    # The neuron interval of "selected in a" from the replicate counters directly: p_r = count_r / tokens_r per
    # category (layers side by side), the rule applied to each replicate, the 5th and 95th percentiles.
    layout = result.kinds["neuron"].freqs.layout
    selected_a = []
    for r in range(40):
        p = np.stack([np.concatenate([counts[f"bootstrap/neuron/{c}/{layer}"][r].numpy() for layer in range(3)])
                      / int(counts[f"bootstrap/tokens/{c}"][r]) for c in ("a", "b", "c")])
        selected_a.append(int(result.rule.apply(p, layout)[0].sum()))
    row = {r["statistic"]: r for r in result.kinds["neuron"].intervals}["selected_a"]
    assert (row["low"], row["high"]) == tuple(np.quantile(selected_a, [0.05, 0.95]))
    assert row["estimate"] == int(result.kinds["neuron"].mask[0].sum())
    assert result.summary()["kinds"]["neuron"]["bootstrap"]["available"] is True
