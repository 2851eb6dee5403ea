"""Generality and uniqueness of selected sets (DESIGN §1), overall, per layer and per expert.

Input is a selection mask ``mask[K, N]`` (K categories, N components). A component selected for every category
is *general*; selected for exactly m categories it is *shared by m*; selected for category c only it is
*unique to c*; selected for none it is *never selected*. Ratios whose denominator is 0 are NaN (undefined),
never 0 or 1, so an empty set is not mistaken for no or full overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparcom.analysis.selection import SelectionRule
from sparcom.components import Layout

#: Membership classes, in display order.
CLASSES: tuple[str, ...] = ("never", "unique", "shared", "general")


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def membership(mask: np.ndarray) -> np.ndarray:
    """For each component, the number of categories that selected it."""
    return np.asarray(mask, dtype=bool).sum(axis=0)


def classify(mask: np.ndarray) -> np.ndarray:
    """Class index into :data:`CLASSES` per component (with one category, every selected component is general)."""
    k = mask.shape[0]
    m = membership(mask)
    classes = np.full(m.shape, 2, dtype=np.int8)
    classes[m == 0] = 0
    classes[m == 1] = 1
    classes[m == k] = 3
    return classes


def set_counts(mask: np.ndarray, categories: Sequence[str]) -> dict[str, int]:
    """Sizes, general, shared-by-m (2 ≤ m < K), unique per category and never-selected counts of ``mask[K, N]``."""
    mask = np.asarray(mask, dtype=bool)
    k = len(categories)
    m = membership(mask)
    row: dict[str, int] = {"components": int(mask.shape[1]), "selected_any": int((m > 0).sum()),
                           "general": int((m == k).sum()) if k else 0, "never_selected": int((m == 0).sum())}
    for i, category in enumerate(categories):
        row[f"selected_{category}"] = int(mask[i].sum())
    for shared in range(2, k):
        row[f"shared_by_{shared}"] = int((m == shared).sum())
    only = m == 1
    row["unique_total"] = int(only.sum()) if k > 1 else 0
    for i, category in enumerate(categories):
        row[f"unique_{category}"] = int((mask[i] & only).sum()) if k > 1 else 0
    return row


def activity_counts(p: np.ndarray, tokens: np.ndarray | None = None) -> dict[str, int]:
    """Dead (never fires on a counted token of any category) and always-on (fires on every one) components.

    Categories without counted tokens are left out; with none left, nothing is called dead or always on.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if tokens is not None:
        p = p[np.asarray(tokens) > 0]
    if p.shape[0] == 0:
        return {"dead": 0, "always_on": 0}
    return {"dead": int((p == 0).all(axis=0).sum()), "always_on": int((p == 1).all(axis=0).sum())}


def shares(counts: dict[str, int], categories: Sequence[str]) -> dict[str, float]:
    """Shares of the selected components: general and unique over the union, and within each category's set."""
    union = counts["selected_any"]
    result = {"general_share": ratio(counts["general"], union), "unique_share": ratio(counts["unique_total"], union)}
    for category in categories:
        size = counts[f"selected_{category}"]
        result[f"general_share_{category}"] = ratio(counts["general"], size)
        result[f"unique_share_{category}"] = ratio(counts[f"unique_{category}"], size)
    return result


def chance_baseline(sizes: Sequence[int], n: int) -> dict[str, float]:
    """Expected general and unique counts if each category's set were drawn at random (independently, same size)."""
    fractions = np.asarray(sizes, dtype=np.float64) / n if n else np.zeros(len(sizes))
    general = float(n * np.prod(fractions)) if len(sizes) else 0.0
    unique = [float(n * f * np.prod(np.delete(1 - fractions, i))) for i, f in enumerate(fractions)]
    union = float(n * (1 - np.prod(1 - fractions))) if len(sizes) else 0.0
    return {"chance_general": general, "chance_unique_total": float(sum(unique)) if len(sizes) > 1 else 0.0,
            "chance_selected_any": union,
            "chance_general_share": ratio(general, union),
            "chance_unique_share": ratio(sum(unique), union) if len(sizes) > 1 else float("nan")}


def group_table(mask: np.ndarray, layout: Layout, categories: Sequence[str], by: str = "layer",
                p: np.ndarray | None = None, tokens: np.ndarray | None = None) -> list[dict]:
    """One row of :func:`set_counts` (and :func:`activity_counts` when ``p`` is given) per layer or expert."""
    rows = []
    for labels, part in layout.groups(by):
        row: dict = dict(labels)
        row.update(set_counts(mask[:, part], categories))
        if p is not None:
            row.update(activity_counts(p[:, part], tokens))
        rows.append(row)
    return rows


def selected_per_group(mask: np.ndarray, layout: Layout, categories: Sequence[str], by: str = "layer") -> list[dict]:
    """Long format: selected count and fraction per category and layer (or expert)."""
    rows = []
    for labels, part in layout.groups(by):
        size = part.stop - part.start
        for i, category in enumerate(categories):
            selected = int(mask[i, part].sum())
            rows.append({"category": category, **labels, "components": size, "selected": selected,
                         "fraction": ratio(selected, size)})
    return rows


@dataclass
class Overlap:
    """Pairwise overlap of the K category sets: |A∩B|, Jaccard |A∩B|/|A∪B| and containment |A∩B|/|A| (row A)."""

    categories: tuple[str, ...]
    sizes: np.ndarray  # [K]
    intersection: np.ndarray  # [K, K]
    jaccard: np.ndarray  # [K, K]
    containment: np.ndarray  # [K, K]

    def rows(self) -> list[dict]:
        result = []
        for a, ca in enumerate(self.categories):
            for b, cb in enumerate(self.categories):
                result.append({"category_a": ca, "category_b": cb, "size_a": int(self.sizes[a]),
                               "size_b": int(self.sizes[b]), "intersection": int(self.intersection[a, b]),
                               "union": int(self.sizes[a] + self.sizes[b] - self.intersection[a, b]),
                               "jaccard": float(self.jaccard[a, b]), "containment_a_in_b": float(self.containment[a, b])})
        return result


def overlap(mask: np.ndarray, categories: Sequence[str]) -> Overlap:
    """Pairwise overlap matrices of the rows of ``mask[K, N]``."""
    m = np.asarray(mask, dtype=np.int64)
    intersection = m @ m.T
    sizes = np.diag(intersection).copy()
    union = sizes[:, None] + sizes[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, intersection / np.where(union > 0, union, 1), np.nan)
        containment = np.where(sizes[:, None] > 0, intersection / np.where(sizes > 0, sizes, 1)[:, None], np.nan)
    return Overlap(tuple(categories), sizes, intersection, jaccard, containment)


def summary_statistics(mask: np.ndarray, categories: Sequence[str]) -> dict[str, float]:
    """Counts, shares and the chance baseline of one selection (what the ε sweep and the bootstrap track)."""
    counts = set_counts(mask, categories)
    result: dict[str, float] = dict(counts)
    result.update(shares(counts, categories))
    result.update(chance_baseline([counts[f"selected_{c}"] for c in categories], counts["components"]))
    return result


def epsilon_sweep(p: np.ndarray, layout: Layout, categories: Sequence[str], rule: SelectionRule,
                  epsilons: Sequence[float] | None = None, groups=None, effects: np.ndarray | None = None,
                  ) -> list[dict]:
    """The general/unique structure of the selection for each ε of a grid (the rule's default grid if None).

    ``groups`` (the groups pooled into ``p``, or their moments) are handed to the rule: the ``test`` rule needs them;
    ``effects`` likewise for the ``attribution`` rule.
    """
    rows = []
    for epsilon in sorted(set(epsilons or rule.sweep_grid) | {rule.epsilon}):
        mask = rule.with_epsilon(epsilon).apply(p, layout, groups, effects)
        rows.append({"epsilon": float(epsilon), "is_default": epsilon == rule.epsilon,
                     **summary_statistics(mask, categories)})
    return rows


def selected_components(mask: np.ndarray, p: np.ndarray, layout: Layout, categories: Sequence[str]) -> list[dict]:
    """Every selected (category, component): its layer, expert (if any), index, frequency and membership."""
    m = membership(mask)
    rows = []
    for i, category in enumerate(categories):
        flat = np.flatnonzero(mask[i])
        where = layout.locate(flat)
        for n, position in enumerate(flat):
            row = {"category": category, "layer": int(where["layer"][n])}
            if "expert" in where:
                row["expert"] = int(where["expert"][n])
            row.update(index=int(where["index"][n]), p=float(p[i, position]), categories_selecting=int(m[position]))
            rows.append(row)
    return rows
