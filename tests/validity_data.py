"""Synthetic per-instruction counts with known category-specific components (numpy only), for validity tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparcom.analysis.groups import GroupCounts
from sparcom.components import Layout


def synthetic_groups(categories: Sequence[str] = ("a", "b", "c", "d"), layers: int = 4, width: int = 60,
                     per_source: int = 12, specific: int = 4, boost: float = 1.5, seed: int = 0,
                     signal_sources: Sequence[str] = ("ai", "human"), experts: int | None = None,
                     kind: str = "neuron", tokens: tuple[int, int] = (20, 80), specific_rate: float | None = None,
                     ) -> tuple[GroupCounts, np.ndarray]:
    """Groups (one per instruction) of a model whose ``specific`` components per layer and category fire more.

    Rates: logit r_gn = logit(base_n) + 0.5 ξ_gn (instruction-level noise), plus ``boost`` on the true components
    of the instruction's category when its source is in ``signal_sources`` (none: a null case). Counts are
    Binomial(tokens_g, r_gn). ``specific_rate`` sets the base rate of the true components (e.g. low, so that they
    are never among the most frequent). Returns the groups and the true mask [K, N].
    """
    rng = np.random.default_rng(seed)
    shape = (width,) if experts is None else (experts, width // experts)
    layout = Layout(kind, tuple(range(layers)), tuple(shape for _ in range(layers)))
    n = layout.size
    k = len(categories)
    truth = np.zeros((k, n), dtype=bool)
    per_layer = int(np.prod(shape))
    for j in range(layers):
        chosen = rng.choice(per_layer, size=k * specific, replace=False) + j * per_layer
        for c in range(k):
            truth[c, chosen[c * specific:(c + 1) * specific]] = True
    base = rng.beta(2.0, 4.0, size=n)
    if specific_rate is not None:
        base[truth.any(axis=0)] = specific_rate
    logit = np.log(base / (1 - base))
    labels, cats, sources, rows, counted = [], [], [], [], []
    for c, category in enumerate(categories):
        for source in ("ai", "human"):
            for i in range(per_source):
                shift = logit + 0.5 * rng.standard_normal(n)
                if source in signal_sources:
                    shift = shift + boost * truth[c]
                rate = 1 / (1 + np.exp(-shift))
                t = int(rng.integers(*tokens))
                labels.append(f"{category}-{source}-{i}")
                cats.append(category)
                sources.append(source)
                counted.append(t)
                rows.append(rng.binomial(t, rate))
    groups = GroupCounts(kind, layout, tuple(labels), tuple(cats), tuple(sources), np.array(rows),
                         np.array(counted))
    return groups, truth
