"""Which components get a card: the top members of each category's set, by frequency or by a specificity score.

A *score* is a [K, N] array over the categories and components of one kind (higher = more characteristic of the
category). Two are built in: ``frequency`` (p itself) and ``margin`` (p_c minus the largest p of the other
categories, a simple specificity score). A selection that carries its own per-component score (the validity
work) passes it as an array; :func:`top_components` does not care where a score comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sparcom.analysis.specificity import contrast_scores
from sparcom.components import Component, Layout
from sparcom.errors import SparcomError


def frequency_score(p: np.ndarray) -> np.ndarray:
    """The frequency p_c itself."""
    return np.asarray(p, dtype=np.float64)


def margin_score(p: np.ndarray) -> np.ndarray:
    """p_c − max over the other categories of p: the ``contrast`` score of :mod:`sparcom.analysis.specificity`."""
    return contrast_scores(p, "max")


#: Built-in scores by name; a caller may pass any [K, N] array instead.
SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"frequency": frequency_score, "margin": margin_score}
SCORE_DESCRIPTIONS: dict[str, str] = {
    "frequency": "p_c, the share of the category's counted tokens on which the component is active",
    "margin": "p_c minus the largest p of the other categories (a simple specificity score)",
}


def component_at(layout: Layout, flat: int) -> Component:
    where = layout.locate(np.array([flat]))
    expert = int(where["expert"][0]) if "expert" in where else None
    return Component(layout.kind, int(where["layer"][0]), int(where["index"][0]), expert)


def flat_position(layout: Layout, component: Component) -> int:
    """The position of ``component`` in the flat vector of its kind."""
    if component.kind != layout.kind or component.layer not in layout.layers:
        raise SparcomError(f"component {component.key} is not in the {layout.kind} layout")
    part = layout.layer_slice(component.layer)
    shape = layout.shapes[layout.layers.index(component.layer)]
    if len(shape) == 2 and (component.expert is None or not 0 <= component.expert < shape[0]
                            or not 0 <= component.index < shape[1]):
        raise SparcomError(f"component {component.key} is outside layer {component.layer} (shape {shape})")
    within = component.index if component.expert is None else component.expert * shape[1] + component.index
    if not 0 <= within < part.stop - part.start:
        raise SparcomError(f"component {component.key} is outside layer {component.layer} (shape {shape})")
    return part.start + within


def top_components(p: np.ndarray, mask: np.ndarray, layout: Layout, categories: Sequence[str], n: int,
                   score: str | np.ndarray = "frequency") -> dict[str, list[tuple[Component, float]]]:
    """Per category, the ``n`` members of its set with the highest score (ties broken by flat position).

    ``p`` and ``mask`` are [K, N]; ``score`` is a name in :data:`SCORES` or a [K, N] array.
    """
    values = _score(p, score)
    mask = np.asarray(mask, dtype=bool)
    result = {}
    for i, category in enumerate(categories):
        members = np.flatnonzero(mask[i] & np.isfinite(values[i]))
        order = members[np.lexsort((members, -values[i, members]))][:n]
        result[category] = [(component_at(layout, int(f)), float(values[i, f])) for f in order]
    return result


def _score(p: np.ndarray, score: str | np.ndarray) -> np.ndarray:
    if isinstance(score, str):
        if score not in SCORES:
            raise SparcomError(f"unknown score {score!r}; choose from {', '.join(SCORES)} or pass an array")
        return SCORES[score](p)
    values = np.asarray(score, dtype=np.float64)
    if values.shape != np.shape(p):
        raise SparcomError(f"a score array must have the frequencies' shape {np.shape(p)}, got {values.shape}")
    return values


def card_components(p: np.ndarray, mask: np.ndarray, layout: Layout, categories: Sequence[str], n: int,
                    scores: Sequence[str] | Mapping[str, np.ndarray] = ("frequency", "margin")) -> list[Component]:
    """The union, over categories and scores, of the top ``n`` members: the components that get a card."""
    chosen: set[Component] = set()
    items = scores.items() if isinstance(scores, Mapping) else [(s, s) for s in scores]
    for _, score in items:
        for ranked in top_components(p, mask, layout, categories, n, score).values():
            chosen.update(c for c, _ in ranked)
    return sorted(chosen)
