"""Dose–response: deactivate the top-k of each category's set for k on a geometric grid up to the set's size.

Zeroing a whole set can break the model (+2 nats per token on every category), where specificity can no longer
show. The curve asks at which size damage appears, and whether it appears on the set's own category before the
others: for each category c and each k, the top-k members of S_c — ranked by the selection rule's own score
(:mod:`sparcom.analysis.rule_rankings`, recomputed from the selection's profile run) — are deactivated, and so are random sets matched
to that top-k set by each of the check's controls (:data:`sparcom.causal.plan.CONTROLS`; a near-miss control,
``frequency`` or ``magnitude``, excludes the top-k set itself). Every (k, set) is a condition of the check's one plan
(``ConditionKey.size``); the largest k is the whole set, whose conditions are the check's own.

:func:`dose_sets` builds the top-k sets before any pass; :class:`DoseCurve` (one per target and category) holds the
ΔNLL of every evaluated category at every k for the top-k set and for each random set; :class:`DoseResponse`
renders them as tables and summary records. The figure is :func:`sparcom.report.causal.dose_response_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.components import ComponentSet
from sparcom.errors import SparcomError


def dose_grid(size: int, points: int) -> tuple[int, ...]:
    """Set sizes 1 … ``size`` spaced geometrically: ``points`` values of round(size^(i/(points−1))), duplicates
    dropped; the last is always ``size``."""
    if size < 1:
        return ()
    grid = np.unique(np.round(np.geomspace(1, size, max(points, 2))).astype(np.int64))
    return tuple(int(k) for k in grid if 1 <= k <= size)


def top_k(selected: ComponentSet, scores: Mapping[str, np.ndarray], k: int) -> ComponentSet:
    """The ``k`` members of ``selected`` with the highest ``scores`` (per kind, [N] over the set's layout), ties
    broken by kind order and position (stable): a nested family of sets as k grows."""
    kinds = list(selected.shapes)
    flats = {kind: selected.flat(kind) for kind in kinds}
    members = [(kind, position) for kind in kinds for position in np.flatnonzero(flats[kind])]
    values = np.array([scores[kind][position] for kind, position in members], dtype=np.float64)
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:k]
    chosen = {kind: np.zeros_like(flat) for kind, flat in flats.items()}
    for index in order:
        kind, position = members[index]
        chosen[kind][position] = True
    return ComponentSet.from_layer_masks({kind: selected.layout(kind).split(chosen[kind]) for kind in kinds},
                                         f"{selected.label}:top{k}")


def rule_scores(run, meta: Mapping[str, Any], category: str, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """Per kind, the selection rule's own score of every component for ``category`` (the ranking the probing
    curves use too, :mod:`sparcom.analysis.rule_rankings`), from ``run``'s frequencies (``test``: its
    per-instruction counts; ``attribution``: its attribution run's effects)."""
    from sparcom.analysis.attribution import attribution_of, rule_effects
    from sparcom.analysis.evidence import run_groups
    from sparcom.analysis.frequencies import kind_frequencies
    from sparcom.analysis.rule_rankings import RULE_RANKINGS, rule_from_parameters, rule_ranking

    parameters = {"rule": meta.get("rule"), "epsilon": meta.get("epsilon"), **(meta.get("parameters") or {})}
    if parameters["rule"] not in RULE_RANKINGS:
        raise SparcomError(f"--dose-response ranks a set by its rule's score; rule {parameters['rule']!r} has none "
                           f"(rules with one: {', '.join(RULE_RANKINGS)})")
    if category not in run.categories:
        raise SparcomError(f"--dose-response: the selection's run {run.path} has no category {category!r}")
    rule = rule_from_parameters(parameters)
    attribution = attribution_of(rule, run)
    scores = {}
    for kind in kinds:
        freqs = kind_frequencies(run.counts, run.categories, kind)
        groups = run_groups(run, kind) if rule.needs_groups else None
        if rule.needs_groups and groups is None:
            raise SparcomError(f"--dose-response ranks rule 'test''s sets by their Welch p, which needs counts per "
                               f"instruction; {run.path} was profiled by category (profile with --group-by "
                               "instruction)")
        effects = rule_effects(run, attribution, kind) if attribution is not None else None
        score, _ = rule_ranking(rule, freqs.p, freqs.layout, None if groups is None else groups.moments, effects)
        scores[kind] = score[list(freqs.categories).index(category)]
    return scores


def dose_sets(sets: Mapping[str, Mapping[str, ComponentSet]], run, meta: Mapping[str, Any], points: int
              ) -> dict[tuple[str, str], list[tuple[int, ComponentSet]]]:
    """(target, category) → [(k, top-k set)] for every k of the grid below the set's size (the whole set is the
    check's own condition)."""
    found = {}
    for target, per_category in sets.items():
        for category, selected in per_category.items():
            if selected.is_empty():
                continue
            scores = rule_scores(run, meta, category, list(selected.shapes))
            found[target, category] = [(k, top_k(selected, scores, k)) for k in dose_grid(selected.size(), points)
                                       if k < selected.size()]
    return found


@dataclass
class DoseCurve:
    """One category's set of one target: ΔNLL on every evaluated category at every k, for its top-k set and for
    every random set of each control matched to that top-k set."""

    target: str
    category: str
    sizes: list[int]  # the k grid, the whole set last
    evaluated: list[str]
    delta: np.ndarray  # [K, C]
    random: dict[str, np.ndarray] = field(default_factory=dict)  # control → [K, R, C]

    def own_and_others(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(own-category ΔNLL, unweighted mean ΔNLL of the other evaluated categories) along the last axis."""
        own = self.evaluated.index(self.category) if self.category in self.evaluated else None
        others = [j for j, c in enumerate(self.evaluated) if c != self.category]
        own_values = values[..., own] if own is not None else np.full(values.shape[:-1], np.nan)
        other_values = values[..., others].mean(axis=-1) if others else np.full(values.shape[:-1], np.nan)
        return own_values, other_values

    def band(self, control: str) -> dict[str, np.ndarray]:
        """Per k, the random sets' mean, min and max of own and others' ΔNLL (the random band)."""
        own, others = self.own_and_others(self.random[control])  # [K, R] each
        empty = own.shape[1] == 0
        nan = np.full(len(self.sizes), np.nan)
        return {f"{name}_{stat}": nan if empty else getattr(np, stat)(values, axis=1)
                for name, values in (("own", own), ("others", others)) for stat in ("mean", "min", "max")}

    def rows(self) -> list[dict[str, Any]]:
        own, others = self.own_and_others(self.delta)
        rows = []
        for control in self.random or {"": None}:
            band = self.band(control) if control else {}
            for i, k in enumerate(self.sizes):
                rows.append({"target": self.target, "category": self.category, "k": k, "set_size": self.sizes[-1],
                             "control": control or None, "random_sets": int(self.random[control].shape[1])
                             if control else 0, "own_delta_nll": own[i], "others_delta_nll": others[i],
                             **{key: values[i] for key, values in band.items()}})
        return rows


@dataclass
class DoseResponse:
    """Every category's dose–response curve of one check, with how its sets were ranked."""

    points: int
    ranking: str  # the rule whose score ranked the members
    curves: list[DoseCurve]
    intervention: str = "zero"  # how every top-k set and random set was deactivated (the check's first)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        rows = [row for curve in self.curves for row in curve.rows()]
        cells = [{"target": c.target, "category": c.category, "k": k, "evaluated": e, "delta_nll": c.delta[i, j],
                  **{f"random_mean_{control}": values[i, :, j].mean() if values.shape[1] else np.nan
                     for control, values in c.random.items()}}
                 for c in self.curves for i, k in enumerate(c.sizes) for j, e in enumerate(c.evaluated)]
        return {"dose_response": rows, "dose_response_cells": cells}

    def summary(self) -> dict[str, Any]:
        return {"points": self.points, "ranking": self.ranking, "intervention": self.intervention,
                "band": "the random sets' mean, min and max at each k (own category; mean of the others)",
                "curves": [{"target": c.target, "category": c.category, "sizes": c.sizes, "rows": c.rows()}
                           for c in self.curves]}
