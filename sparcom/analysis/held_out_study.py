"""Rule choice held out: choose the rule and ε on a development split, report validity on the rest.

The rule study (:mod:`sparcom.analysis.rule_study`) ran on all 1,200 rows and the recommended rule was then
evaluated on the same rows (statistics review §1e). Here the study runs on the development part of a
:class:`~sparcom.data.split.DevelopmentSplit` only; the rule and ε with the best held-out set-score accuracy
*there* is chosen (:func:`choose`), and every validity number of the chosen rule (and of the paper's rule, for
comparison) is measured on the evaluation part, which took no part in the choice.

Fold stability compared training splits that share 75% of their rows; :func:`split_half_stability` compares
selections made on two *disjoint* stratified halves instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.analysis import sets
from sparcom.analysis.groups import GroupCounts
from sparcom.analysis.pooling import Pool
from sparcom.analysis.selection import PAPER_RULE, SelectionRule
from sparcom.analysis.subsampling import stratum_ids, subsample
from sparcom.analysis.uniqueness import select_parts
from sparcom.analysis.validity import jaccard_matrix, validity, validity_sweep
from sparcom.data.split import DevelopmentSplit
from sparcom.errors import SparcomError
from sparcom.seeding import stream_seed

#: Disjoint half splits of the split-half stability.
STABILITY_SPLITS = 10


def split_half_stability(groups: GroupCounts, rule: SelectionRule, splits: int = STABILITY_SPLITS,
                         seed: int = 0) -> np.ndarray:
    """[K] mean Jaccard, over ``splits`` random stratified halvings (category × source), between the sets
    selected on one half and on the other (disjoint) half."""
    strata = stratum_ids(groups.categories, groups.sources)
    rng = np.random.default_rng(stream_seed(seed, "split-half-stability"))
    pool = Pool(groups)
    values = []
    for _ in range(splits):
        half = subsample(strata, 0.5, rng)
        masks = select_parts(groups, rule, np.where(half, 0, 1), 2, pool)
        if masks is not None:
            values.append(np.diag(jaccard_matrix(masks[0], masks[1])))
    return np.nanmean(np.array(values), axis=0)


def choose(rows: Sequence[dict]) -> dict:
    """The study row with the highest held-out set-score accuracy (ties: the smaller mean set)."""
    candidates = [r for r in rows if np.isfinite(r["set_score_accuracy"])]
    if not candidates:
        raise SparcomError("no rule of the study decoded any instruction; nothing to choose from")
    return max(candidates, key=lambda r: (r["set_score_accuracy"], -r["mean_fraction"]))


@dataclass
class HeldOutStudy:
    """The development study's rows, the choice made on them, and the evaluation part's validity numbers."""

    split: DevelopmentSplit
    development_rows: list[dict]
    chosen: SelectionRule
    evaluation: dict[str, dict[str, Any]]  # rule variant (and ε) -> numbers on the evaluation part

    def summary(self) -> dict[str, Any]:
        return {"split": {k: v for k, v in self.split.record().items() if k not in ("development", "evaluation")}
                | {"development_rows": len(self.split.development), "evaluation_rows": len(self.split.evaluation)},
                "chosen_on_development": {"rule": self.chosen.variant, "epsilon": self.chosen.epsilon},
                "evaluation": self.evaluation}


def evaluate_rule(groups: GroupCounts, rule: SelectionRule, random_sets: int = 100, seed: int = 0) -> dict[str, Any]:
    """Every validity number of ``rule`` on ``groups``: decoding against random sets, cross-source within and
    across, split-half (disjoint) stability, set sizes and shares."""
    result = validity(groups, rule, seed=seed, random_sets=random_sets)
    stats = sets.summary_statistics(result.mask, result.categories)
    stability = split_half_stability(groups, rule, seed=seed)
    cross = result.cross_source
    return {"rule": rule.variant, "epsilon": rule.epsilon, "instructions": groups.size,
            "selected_any": stats["selected_any"], "general_share": stats["general_share"],
            "unique_share": stats["unique_share"], "decoding": result.decoding.headline() if result.decoding else None,
            "fold_stability_overlapping": result.stability.mean if result.stability else float("nan"),
            "split_half_stability": float(np.nanmean(stability)),
            "split_half_stability_per_category": dict(zip(groups.category_order, map(float, stability), strict=True)),
            "cross_source_within": cross.within_mean if cross else float("nan"),
            "cross_source_across": cross.across_mean if cross else float("nan")}


def held_out_study(groups: GroupCounts, split: DevelopmentSplit, rules: Sequence[SelectionRule],
                   epsilons: Mapping[str, Sequence[float]] | None = None, random_sets: int = 100,
                   seed: int = 0) -> HeldOutStudy:
    """Run the rule study on the development part, choose, and evaluate the choice and the paper's rule on the
    evaluation part (the groups' labels are the split's ids)."""
    development = set(split.development)
    in_development = np.array([label in development for label in groups.labels])
    dev_groups, eval_groups = groups.subset(in_development), groups.subset(~in_development)
    rows = validity_sweep(dev_groups, rules, epsilons, seed=seed, random_sets=random_sets)
    for row in rows:
        sizes = [row[f"selected_{c}"] for c in dev_groups.category_order]
        row["mean_fraction"] = float(np.mean(sizes)) / dev_groups.layout.size
    best = choose(rows)
    variants = {rule.variant: rule for rule in rules}
    chosen = variants[best["variant"]].with_epsilon(best["epsilon"])
    evaluation = {"chosen": evaluate_rule(eval_groups, chosen, random_sets, seed)}
    if PAPER_RULE.variant in variants:
        evaluation["paper"] = evaluate_rule(eval_groups, variants[PAPER_RULE.variant].with_epsilon(PAPER_RULE.epsilon),
                                            random_sets, seed)
    return HeldOutStudy(split, rows, chosen, evaluation)
