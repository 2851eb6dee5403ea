"""What every section of the HTML report may use: the :class:`Context` (study, category order, card settings) and
the small helpers that name sections and tag rows and columns for the page's filters."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.data.schema import category_label
from sparcom.report.studies import Output, Study
from sparcom.report.widgets import cat_badge

DEFAULT_CARDS = 6


@dataclass
class Context:
    """What every section may use: the study, the categories in display order and the card settings."""

    study: Study
    cards_per_category: int = DEFAULT_CARDS
    categories: list[str] = field(default_factory=list)
    #: Extra per-component scores for the cards: name → function(identify output, kind, p [K, N]) → [K, N] or None.
    score_sources: dict[str, Callable[[Output, str, np.ndarray], np.ndarray | None]] = field(default_factory=dict)

    def badge(self, category: str) -> str:
        return cat_badge(category, self.categories)


def mean_of(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def section_id(output: Output, *parts: str) -> str:
    base = "-".join([output.kind, output.name, *parts])
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base)


def category_attrs(categories: Sequence[str]) -> list[dict[str, Any]]:
    return [{"data-cat": c} for c in categories]


def layer_attrs(layers: Sequence[int]) -> list[dict[str, Any]]:
    return [{"data-layer": j} for j in layers]


def category_labels(categories: Sequence[str]) -> list[str]:
    return [category_label(c) for c in categories]


__all__ = ["DEFAULT_CARDS", "Context", "category_attrs", "category_labels", "layer_attrs", "mean_of",
           "section_id"]
