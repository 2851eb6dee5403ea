"""Each selection rule's own order of the components: the one table the probing curves and the dose–response read.

A ranking is a score [K, N] per category and component (higher = kept first; −inf = the rule never keeps it) and
an optional tie-break of the same shape. The top of a rule's ranking is the rule's selection (tested against
:meth:`SelectionRule.apply` for every rule): ``percentile`` and ``threshold`` rank by p_c; ``layer-percentile`` by
the component's rank within its layer as a fraction (so the top k go round the layers as the rule does);
``contrast`` by its score (only positive); ``lape`` by −entropy among the components the LAPE filter keeps and
assigns to c; ``test`` by the one-sided Welch p (smaller first, the order in which Benjamini–Hochberg admits
components; ties by the effect) among components with effect ≥ δ; ``attribution`` by the contrast of the estimated
effects (only positive contrasts of positive effects). p_c = 0 is never kept by the frequency rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sparcom.analysis.groups import GroupMoments
from sparcom.analysis.selection import EFFECTS_NEEDED, GROUPS_NEEDED, SelectionRule, kth_smallest, lape_entropy
from sparcom.analysis.specificity import contrast_scores, moments_welch
from sparcom.components import Layout
from sparcom.errors import SparcomError

Ranking = tuple[np.ndarray, np.ndarray | None]


def _positive(score: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.where(p > 0, score, -np.inf)


def _layer_rank(p: np.ndarray, layout: Layout) -> np.ndarray:
    score = np.empty_like(p)
    for _, part in layout.groups("layer"):
        block = p[:, part]
        order = np.argsort(np.argsort(block, axis=1, kind="stable"), axis=1, kind="stable")
        score[:, part] = (order + 1) / block.shape[1]
    return score


def _lape(p: np.ndarray, layout: Layout, rule: SelectionRule, moments, effects) -> Ranking:
    pooled = p.reshape(-1)
    kept = (p > kth_smallest(pooled, round(pooled.size * rule.filter_rate))).any(axis=0)
    assigned = p > kth_smallest(pooled, round(pooled.size * rule.activation_bar_ratio))
    return np.where(assigned & kept[None, :], -lape_entropy(p)[None, :], -np.inf), None


def _test(p: np.ndarray, layout: Layout, rule: SelectionRule, moments: GroupMoments | None, effects) -> Ranking:
    if moments is None:
        raise SparcomError(GROUPS_NEEDED)
    welch = moments_welch(moments)
    eligible = (welch.effect >= rule.epsilon) & (welch.effect > 0) & (p > 0)
    return np.where(eligible, -welch.pvalue, -np.inf), welch.effect


def _contrast(values: np.ndarray, against: str) -> np.ndarray:
    scores = contrast_scores(values, against)
    return np.where((scores > 0) & (values > 0), scores, -np.inf)


def _attribution(p: np.ndarray, layout: Layout, rule: SelectionRule, moments, effects: np.ndarray | None) -> Ranking:
    if effects is None:
        raise SparcomError(EFFECTS_NEEDED)
    effects = np.atleast_2d(np.asarray(effects, dtype=np.float64))
    if effects.shape != p.shape:
        raise SparcomError(f"rule 'attribution': the effects are {effects.shape} but the frequencies {p.shape}; "
                           "the attribution run belongs to another model")
    return _contrast(effects, rule.against), None


#: rule name → (p [K, N], layout, rule, moments or None, effects or None) → (score [K, N], tie-break or None).
RULE_RANKINGS: dict[str, Callable[..., Ranking]] = {
    "percentile": lambda p, layout, rule, moments, effects: (_positive(p, p), None),
    "threshold": lambda p, layout, rule, moments, effects: (_positive(p, p), None),
    "layer-percentile": lambda p, layout, rule, moments, effects: (_positive(_layer_rank(p, layout), p), None),
    "contrast": lambda p, layout, rule, moments, effects: (_contrast(p, rule.against), None),
    "lape": _lape,
    "test": _test,
    "attribution": _attribution,
}


def rule_ranking(rule: SelectionRule, p: np.ndarray, layout: Layout, moments: GroupMoments | None = None,
                 effects: np.ndarray | None = None) -> Ranking:
    """The rule's own order of the components per category: (score [K, N], tie-break or None). ``moments``
    (per-instruction groups) are needed by ``test``, ``effects`` [K, N] by ``attribution``."""
    if rule.name not in RULE_RANKINGS:
        raise SparcomError(f"rule {rule.name!r} has no ranking; rankings exist for {', '.join(RULE_RANKINGS)}")
    return RULE_RANKINGS[rule.name](np.atleast_2d(np.asarray(p, dtype=np.float64)), layout, rule, moments, effects)


def rule_from_parameters(parameters: Mapping[str, Any]) -> SelectionRule:
    """The rule a selection recorded (``SelectionRule.parameters``), rebuilt to rank its components."""
    name = parameters.get("rule")
    if name == "lape":
        return SelectionRule("lape", parameters.get("top_rate", parameters.get("epsilon")),
                             filter_rate=parameters["filter_rate"],
                             activation_bar_ratio=parameters["activation_bar_ratio"])
    if name == "test":
        return SelectionRule("test", parameters.get("min_effect", parameters.get("epsilon")), fdr=parameters["fdr"])
    return SelectionRule(name or "", parameters.get("epsilon"), against=parameters.get("against", "max"),
                         attribution=parameters.get("attribution"))


__all__ = ["RULE_RANKINGS", "Ranking", "rule_from_parameters", "rule_ranking"]
