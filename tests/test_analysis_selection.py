"""Selection rules on hand-computed examples, and LAPE against a direct implementation of its procedure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparcom.analysis.frequencies import frequencies_from_counts, kind_frequencies
from sparcom.analysis.selection import (
    SelectionRule,
    kth_smallest,
    lape,
    lape_entropy,
    layer_percentile_mask,
    percentile_mask,
    threshold_mask,
)
from sparcom.components import Layout
from sparcom.errors import SparcomError

P = np.array([[0.1, 0.5, 0.5, 0.9, 0.0]])


def test_percentile_keeps_ties_at_the_cut():
    # sorted 0, .1, .5, .5, .9; quantile(0.6) at position 2.4 lies between the two 0.5s -> both kept
    assert percentile_mask(P, 0.4).tolist() == [[False, True, True, True, False]]


def test_percentile_interpolated_cut_between_values():
    # quantile(0.8) at position 3.2 = 0.5 + 0.2 * 0.4 = 0.58 -> only 0.9 passes
    assert percentile_mask(P, 0.2).tolist() == [[False, False, False, True, False]]


def test_percentile_never_selects_components_that_never_fire():
    assert percentile_mask(P, 1.0).tolist() == [[True, True, True, True, False]]
    assert not percentile_mask(np.zeros((2, 6)), 0.5).any()


def test_percentile_is_per_category_and_global_over_layers():
    p = np.array([[0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.8]])
    assert percentile_mask(p, 0.25).tolist() == [[True, False, False, False], [False, False, False, True]]


def test_percentile_with_no_components():
    assert percentile_mask(np.zeros((3, 0)), 0.1).shape == (3, 0)


def test_threshold_is_inclusive():
    assert threshold_mask(P, 0.5).tolist() == [[False, True, True, True, False]]
    assert threshold_mask(P, 0.95).tolist() == [[False] * 5]


def test_layer_percentile_selects_within_each_layer():
    layout = Layout("neuron", (0, 1), ((3,), (2,)))
    p = np.array([[0.9, 0.8, 0.1, 0.3, 0.2]])
    # layer 0: quantile(0.7) of (.9 .8 .1) = .8 + .4 * .1 = .84 -> .9; layer 1: quantile(0.7) of (.3 .2) = .27 -> .3
    assert layer_percentile_mask(p, layout, 0.3).tolist() == [[True, False, False, True, False]]
    # globally: quantile(0.7) of (.1 .2 .3 .8 .9) = .3 + .8 * .5 = .7 -> .8 and .9, both in layer 0
    assert percentile_mask(p, 0.3).tolist() == [[True, True, False, False, False]]


@pytest.mark.parametrize("epsilon", [0.0, -0.1, 1.5, float("nan")])
def test_epsilon_out_of_range_is_refused(epsilon):
    with pytest.raises(SparcomError, match="epsilon"):
        SelectionRule("percentile", epsilon)


def test_rule_defaults_and_errors():
    assert SelectionRule().epsilon == 0.01
    assert SelectionRule("lape").parameters == {"rule": "lape", "epsilon": 0.01, "top_rate": 0.01,
                                                "filter_rate": 0.95, "activation_bar_ratio": 0.95}
    with pytest.raises(SparcomError, match="threshold' needs --epsilon"):
        SelectionRule("threshold")
    with pytest.raises(SparcomError, match="unknown selection rule 'top'"):
        SelectionRule("top")
    with pytest.raises(SparcomError, match="LAPE filter rate"):
        SelectionRule("lape", 0.1, filter_rate=0)


def test_frequencies_divide_by_tokens_and_zero_for_empty_categories():
    p = frequencies_from_counts(np.array([[2, 4], [1, 1]]), np.array([8, 0]))
    assert p.tolist() == [[0.25, 0.5], [0.0, 0.0]]


def test_kind_frequencies_flattens_layers_in_order():
    counts = {"tokens/a": torch.tensor(10), "neuron/a/1": torch.tensor([5, 6]), "neuron/a/0": torch.tensor([1, 2, 3])}
    freqs = kind_frequencies(counts, ["a"], "neuron")
    assert freqs.layout.layers == (0, 1)
    assert freqs.p.tolist() == [[0.1, 0.2, 0.3, 0.5, 0.6]]
    assert freqs.layout.split(freqs.p[0])[1].tolist() == [0.5, 0.6]


def test_kind_frequencies_missing_token_count_is_an_error():
    with pytest.raises(SparcomError, match="no token count for category b"):
        kind_frequencies({"tokens/a": torch.tensor(1), "neuron/a/0": torch.tensor([1])}, ["a", "b"], "neuron")


def test_kind_frequencies_missing_category_layer_is_an_error():
    counts = {"tokens/a": torch.tensor(1), "tokens/b": torch.tensor(1), "neuron/a/0": torch.tensor([1])}
    with pytest.raises(SparcomError, match="no neuron counts for category b at layer 0"):
        kind_frequencies(counts, ["a", "b"], "neuron")


# LAPE: hand example --------------------------------------------------------------------------------------------

LAPE_P = np.array([[0.8, 0.4, 0.0, 0.1],
                   [0.0, 0.4, 0.0, 0.1]])


def test_lape_entropy_by_hand():
    assert np.allclose(lape_entropy(LAPE_P), [0.0, math.log(2), 0.0, math.log(2)])


def test_lape_by_hand():
    # pooled sorted: 0 0 0 .1 .1 .4 .4 .8; filter k = round(8 * 0.5) = 4 -> 0.1; only components 0 and 1 have p > 0.1
    # top_rate 0.5 -> round(2) = 2 lowest entropies among them: 0 (H=0) and 1 (H=ln 2); component 2 (H=0) is filtered
    result = lape(LAPE_P, top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.75)
    assert result.filter_value == 0.1
    assert result.candidates.tolist() == [True, True, False, False]
    # bar k = round(8 * 0.75) = 6 -> 0.4; assigned where p > 0.4 (strict): only component 0 for the first category
    assert result.activation_bar == 0.4
    assert result.mask.tolist() == [[True, False, False, False], [False, False, False, False]]
    # a lower bar assigns component 1 to both categories
    assert lape(LAPE_P, 0.5, 0.5, 0.5).mask.tolist() == [[True, True, False, False], [False, True, False, False]]


def test_lape_selects_nothing_when_round_gives_zero():
    assert not lape(LAPE_P, top_rate=0.1).mask.any()  # round(4 * 0.1) = 0


def test_kth_smallest_is_one_based_and_clamped():
    assert kth_smallest(np.array([3.0, 1.0, 2.0]), 1) == 1.0
    assert kth_smallest(np.array([3.0, 1.0, 2.0]), 3) == 3.0
    assert kth_smallest(np.array([3.0, 1.0, 2.0]), 0) == 1.0
    assert kth_smallest(np.array([3.0, 1.0, 2.0]), 9) == 3.0


# LAPE: against a direct implementation on random counts ----------------------------------------------------------

def direct_lape(over_zero: torch.Tensor, n: torch.Tensor, top_rate: float, filter_rate: float, bar_ratio: float):
    """The LAPE procedure written from its description: over_zero [layers, neurons, categories], n [categories].

    Returns, per category, the set of selected (layer, neuron) pairs.
    """
    probs = over_zero.double() / n.double()
    normed = probs / probs.sum(-1, keepdim=True)
    normed = torch.nan_to_num(normed, nan=0.0)
    plogp = torch.where(normed > 0, normed * normed.log(), torch.zeros_like(normed))
    entropy = -plogp.sum(-1)
    pooled = probs.flatten()
    filter_value = pooled.kthvalue(round(pooled.numel() * filter_rate)).values
    entropy[(probs > filter_value).sum(-1) == 0] = math.inf
    flat_entropy = entropy.flatten()
    keep = flat_entropy.topk(round(flat_entropy.numel() * top_rate), largest=False).indices
    layer, neuron = keep // entropy.shape[1], keep % entropy.shape[1]
    bar = pooled.kthvalue(round(pooled.numel() * bar_ratio)).values
    chosen = probs[layer, neuron] > bar  # [kept, categories]
    return [{(int(layer[i]), int(neuron[i])) for i in torch.nonzero(chosen[:, c]).flatten().tolist()}
            for c in range(probs.shape[-1])]


@pytest.mark.parametrize(("seed", "top_rate", "filter_rate", "bar"),
                         [(0, 0.01, 0.95, 0.95), (1, 0.05, 0.95, 0.95), (2, 0.1, 0.9, 0.8), (3, 0.2, 0.5, 0.99)])
def test_lape_matches_direct_implementation(seed, top_rate, filter_rate, bar):
    rng = np.random.default_rng(seed)
    layers, neurons, k = 4, 250, 6
    n = rng.integers(200_000, 400_000, size=k)
    rates = rng.beta(0.6, 3.0, size=(layers, neurons, k))
    rates[:, :10, :] = 0.0  # dead neurons
    rates[:, 10:20, 0] = rng.uniform(0.5, 0.9, size=(layers, 10))  # specialists of the first category
    over_zero = rng.binomial(n[None, None, :], rates)
    expected = direct_lape(torch.tensor(over_zero), torch.tensor(n), top_rate, filter_rate, bar)

    counts = {f"tokens/c{c}": torch.tensor(int(n[c])) for c in range(k)}
    for c in range(k):
        for j in range(layers):
            counts[f"neuron/c{c}/{j}"] = torch.tensor(over_zero[j, :, c])
    freqs = kind_frequencies(counts, [f"c{c}" for c in range(k)], "neuron")
    mask = SelectionRule("lape", top_rate, filter_rate, bar).apply(freqs.p, freqs.layout)
    for c in range(k):
        where = freqs.layout.locate(np.flatnonzero(mask[c]))
        got = set(zip(where["layer"].tolist(), where["index"].tolist(), strict=True))
        assert got == expected[c]
    assert mask.any()
