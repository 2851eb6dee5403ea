"""Is a selection instruction-specific? Evidence computed the same way for any rule (DESIGN §6, issue 10).

From groups below the category (:class:`~sparcom.analysis.groups.GroupCounts`, one row per instruction):

- **cross-source agreement**: select on the AI-written and on the human-written half of every category
  separately; J[c, c'] = Jaccard(S_c(ai), S_c'(human)). Sets that reflect the category and not the source have a
  high diagonal (within) and a low off-diagonal (across). ``within_exceeds_across[c]`` is J[c, c] > every
  J[c, c'] and J[c', c] with c' ≠ c — a description, not a test.
- **held-out decoding**: stratified k-fold over instructions (:func:`~sparcom.analysis.groups.stratified_folds`);
  select on the pooled training folds, decode each held-out instruction's category with the two decoders of
  :mod:`sparcom.analysis.decoding` (set-score on the K sets; nearest centroid on their union). Accuracy pools all
  held-out instructions (each is held out once), with a Wilson interval (instructions treated as independent
  trials; the variability of the selection itself is what stability measures). Controls: R random sets drawn
  per fold with the selection's per-layer (per-expert) shape — for set-score one random set per category shaped
  like S_c, for the centroid one shaped like the union —, giving the random mean, sd and the empirical
  p = (1 + #{random ≥ observed}) / (1 + R); and R **frequency-matched** random sets (the same count in every
  layer and quantile bin of the training folds' pooled activation frequency, the set's members included;
  :func:`~sparcom.random_sets.frequency_matched`), because every rule selects by frequency and frequent
  components may decode better than random ones of any frequency; the centroid decoder on all components;
  chance 1/K.
- **stability**: mean pairwise Jaccard of each category's set across the k training-fold selections (and,
  optionally, across bootstrap resamples of the instructions within category and source).
- **specificity** of each selected component: contrast, entropy specificity, and, from the groups, the Welch
  effect and q-value (:mod:`sparcom.analysis.specificity`), so a user can sort the sets by them.

Pure numpy; one pass over the [G, N] counts computes everything the folds need (fold sums add up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.analysis import decoding as dec
from sparcom.analysis import sets
from sparcom.analysis.frequencies import KindFrequencies
from sparcom.analysis.groups import (
    SOURCES,
    GroupCounts,
    GroupMoments,
    PartitionSums,
    partition_sums,
    resample_weights,
    stratified_folds,
)
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.specificity import contrast_scores, entropy_specificity, moments_welch
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.random_sets import draw_like, frequency_matched
from sparcom.stats import LEVEL, check_level, empirical_p, wilson_interval

DEFAULT_FOLDS = 5
DEFAULT_RANDOM_SETS = 100
DECODERS: tuple[str, ...] = ("set_score", "centroid")


def _nan_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def jaccard_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[Ka, Kb] Jaccard |A∩B| / |A∪B| of the rows of two masks; NaN where both sets are empty."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    intersection = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), np.nan)


def mean_pairwise_jaccard(masks: np.ndarray) -> float:
    """Mean Jaccard over the pairs of rows of ``masks[R, N]`` (pairs of two empty sets left out; NaN if none)."""
    matrix = jaccard_matrix(masks, masks)
    upper = np.triu_indices(matrix.shape[0], k=1)
    return _nan_mean(matrix[upper])


# -- results ---------------------------------------------------------------------------------------------------

@dataclass
class CrossSource:
    """Selections on the AI and the human half of every category and their Jaccard matrix (rows AI, columns human)."""

    categories: tuple[str, ...]
    masks: dict[str, np.ndarray]  # source -> [K, N]
    jaccard: np.ndarray  # [K, K]

    @property
    def within(self) -> np.ndarray:
        return np.diag(self.jaccard).copy()

    @property
    def within_mean(self) -> float:
        return _nan_mean(self.within)

    @property
    def across_mean(self) -> float:
        return _nan_mean(self.jaccard[~np.eye(len(self.categories), dtype=bool)])

    @property
    def within_exceeds_across(self) -> list[bool]:
        result = []
        for c in range(len(self.categories)):
            others = np.concatenate([np.delete(self.jaccard[c], c), np.delete(self.jaccard[:, c], c)])
            others = others[np.isfinite(others)]
            within = self.jaccard[c, c]
            result.append(bool(np.isfinite(within) and (others.size == 0 or within > others.max())))
        return result

    def summary(self) -> dict[str, Any]:
        return {"sources": list(self.masks), "within_mean": self.within_mean, "across_mean": self.across_mean,
                "within": dict(zip(self.categories, self.within.tolist(), strict=True)),
                "within_exceeds_across": dict(zip(self.categories, self.within_exceeds_across, strict=True)),
                "sizes": {s: dict(zip(self.categories, m.sum(axis=1).tolist(), strict=True))
                          for s, m in self.masks.items()},
                "jaccard_ai_rows_human_columns": self.jaccard.tolist()}

    def rows(self) -> list[dict]:
        ai, human = (self.masks[s] for s in SOURCES)
        return [{"category_ai": ca, "category_human": ch, "size_ai": int(ai[a].sum()), "size_human": int(human[h].sum()),
                 "intersection": int((ai[a] & human[h]).sum()), "jaccard": float(self.jaccard[a, h]),
                 "same_category": a == h}
                for a, ca in enumerate(self.categories) for h, ch in enumerate(self.categories)]


@dataclass
class DecoderResult:
    """Held-out accuracy of one decoder on the selected sets, with its random-set controls."""

    decoder: str
    categories: tuple[str, ...]
    evaluated: int
    correct: int
    undecided: int
    confusion: np.ndarray  # [K, K] rows true, columns predicted
    level: float
    random_correct: np.ndarray | None = None  # [R]
    #: [R] correct with frequency-matched random sets (None: not drawn).
    matched_correct: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return sets.ratio(self.correct, self.evaluated)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.evaluated, self.level)

    def _accuracy_of(self, correct: np.ndarray | None) -> np.ndarray:
        return np.zeros(0) if correct is None or self.evaluated == 0 else correct / self.evaluated

    def _p_against(self, correct: np.ndarray | None) -> float:
        return float("nan") if correct is None or correct.size == 0 else float(empirical_p(self.correct, correct))

    @property
    def random_accuracy(self) -> np.ndarray:
        return self._accuracy_of(self.random_correct)

    @property
    def p_value(self) -> float:
        return self._p_against(self.random_correct)

    @property
    def matched_accuracy(self) -> np.ndarray:
        return self._accuracy_of(self.matched_correct)

    @property
    def matched_p_value(self) -> float:
        return self._p_against(self.matched_correct)

    def summary(self) -> dict[str, Any]:
        low, high = self.interval
        result: dict[str, Any] = {"accuracy": self.accuracy, "ci_low": low, "ci_high": high, "level": self.level,
                                  "correct": self.correct, "evaluated": self.evaluated, "undecided": self.undecided}
        if self.random_correct is not None:
            random = self.random_accuracy
            result.update(random_sets=int(random.size), random_mean=_nan_mean(random),
                          random_sd=float(random.std(ddof=1)) if random.size > 1 else float("nan"),
                          p_value=self.p_value)
        if self.matched_correct is not None:
            matched = self.matched_accuracy
            result.update(matched_random_sets=int(matched.size), matched_random_mean=_nan_mean(matched),
                          matched_p_value=self.matched_p_value)
        result["confusion"] = {"categories": list(self.categories), "true_rows_predicted_columns": self.confusion.tolist()}
        return result


@dataclass
class Stability:
    """Mean pairwise Jaccard of each category's set across fold selections or bootstrap resamples."""

    categories: tuple[str, ...]
    method: str  # "folds" or "bootstrap"
    masks: np.ndarray  # [R, K, N]
    jaccard: np.ndarray = field(init=False)  # [K]

    def __post_init__(self) -> None:
        self.jaccard = np.array([mean_pairwise_jaccard(self.masks[:, c]) for c in range(len(self.categories))])

    @property
    def replicates(self) -> int:
        return int(self.masks.shape[0])

    @property
    def mean(self) -> float:
        return _nan_mean(self.jaccard)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "replicates": self.replicates, "mean_jaccard": self.mean,
                "jaccard": dict(zip(self.categories, self.jaccard.tolist(), strict=True)),
                "mean_size": dict(zip(self.categories, self.masks.sum(axis=2).mean(axis=0).tolist(), strict=True))}

    def rows(self) -> list[dict]:
        sizes = self.masks.sum(axis=2)
        return [{"method": self.method, "category": c, "replicates": self.replicates, "mean_jaccard": float(self.jaccard[i]),
                 "mean_size": float(sizes[:, i].mean()), "min_size": int(sizes[:, i].min()),
                 "max_size": int(sizes[:, i].max())} for i, c in enumerate(self.categories)]


@dataclass
class HeldOutDecoding:
    """k-fold held-out decoding of the instructions' categories from the selected sets."""

    categories: tuple[str, ...]
    folds: int
    seed: int
    assignment: np.ndarray  # [G] fold of each group
    fold_masks: np.ndarray  # [k, K, N] selection on each training split
    decoders: dict[str, DecoderResult]
    all_components: DecoderResult  # centroid decoder on every component
    skipped: int  # held-out groups without counted tokens

    @property
    def chance(self) -> float:
        return 1.0 / len(self.categories)

    def summary(self) -> dict[str, Any]:
        all_low, all_high = self.all_components.interval
        return {"folds": self.folds, "seed": self.seed, "chance": self.chance, "skipped_without_tokens": self.skipped,
                "decoders": {name: d.summary() for name, d in self.decoders.items()},
                "all_components": {"decoder": "centroid", "accuracy": self.all_components.accuracy,
                                   "ci_low": all_low, "ci_high": all_high}}

    def headline(self) -> dict[str, Any]:
        """The numbers a reader wants first: per decoder accuracy, CI, random-set mean and p; all; chance."""
        result: dict[str, Any] = {"instructions": self.all_components.evaluated}
        for name, d in self.decoders.items():
            low, high = d.interval
            random = d.random_accuracy
            result[name] = {"accuracy": d.accuracy, "ci_low": low, "ci_high": high,
                            "random_mean": _nan_mean(random), "p_value": d.p_value,
                            "matched_random_mean": _nan_mean(d.matched_accuracy), "matched_p_value": d.matched_p_value}
        result.update(all_components=self.all_components.accuracy, chance=self.chance)
        return result

    def rows(self) -> list[dict]:
        result = []
        for name, d in [*self.decoders.items(), ("centroid_all_components", self.all_components)]:
            summary = d.summary()
            summary.pop("confusion")
            result.append({"decoder": name, **summary, "chance": self.chance})
        return result

    def confusion_rows(self) -> list[dict]:
        result = []
        for name, d in [*self.decoders.items(), ("centroid_all_components", self.all_components)]:
            result += [{"decoder": name, "true": t, "predicted": p, "count": int(d.confusion[i, j])}
                       for i, t in enumerate(self.categories) for j, p in enumerate(self.categories)]
        return result


@dataclass
class Specificity:
    """Per-component specificity scores ([K, N] per category, [N] per component)."""

    categories: tuple[str, ...]
    contrast_max: np.ndarray  # p_c − max_{c'≠c} p_c'
    contrast_mean: np.ndarray  # p_c − mean_{c'≠c} p_c'
    entropy: np.ndarray  # [N] 1 − H(q)/ln K
    effect: np.ndarray | None = None  # mean_c − mean_rest of per-instruction frequencies
    qvalue: np.ndarray | None = None  # BH-adjusted one-sided Welch p


def specificity(p: np.ndarray, categories: Sequence[str], moments: GroupMoments | None = None) -> Specificity:
    """Every specificity score of ``p[K, N]`` (and the Welch effect and q-value when group moments are given)."""
    welch = moments_welch(moments) if moments is not None else None
    return Specificity(tuple(categories), contrast_scores(p, "max"), contrast_scores(p, "mean"),
                       entropy_specificity(p), None if welch is None else welch.effect,
                       None if welch is None else welch.qvalue)


def specificity_rows(mask: np.ndarray, p: np.ndarray, layout: Layout, scores: Specificity) -> list[dict]:
    """Every selected (category, component) with its frequency and specificity scores, to sort by."""
    membership = sets.membership(mask)
    top = np.argmax(p, axis=0)
    rows = []
    for c, category in enumerate(scores.categories):
        flat = np.flatnonzero(mask[c])
        where = layout.locate(flat)
        for i, n in enumerate(flat):
            row: dict[str, Any] = {"category": category, "layer": int(where["layer"][i])}
            if "expert" in where:
                row["expert"] = int(where["expert"][i])
            row.update(index=int(where["index"][i]), p=float(p[c, n]), contrast=float(scores.contrast_max[c, n]),
                       contrast_mean=float(scores.contrast_mean[c, n]), entropy_specificity=float(scores.entropy[n]),
                       top_category=scores.categories[top[n]], categories_selecting=int(membership[n]))
            if scores.effect is not None and scores.qvalue is not None:
                row.update(effect=float(scores.effect[c, n]), q_value=float(scores.qvalue[c, n]))
            rows.append(row)
    return rows


def set_specificity(mask: np.ndarray, p: np.ndarray, scores: Specificity) -> dict[str, dict[str, float]]:
    """Per category: mean contrast and entropy specificity of its set, and the share of the set whose most
    frequent category is c itself (NaN for an empty set); ``all_components`` gives the same means over every
    component that fires at all, as the reference."""
    top = np.argmax(p, axis=0)
    result = {}
    for c, category in enumerate(scores.categories):
        chosen = np.flatnonzero(mask[c])
        result[category] = {"size": int(chosen.size), "mean_contrast": _nan_mean(scores.contrast_max[c, chosen]),
                            "mean_entropy_specificity": _nan_mean(scores.entropy[chosen]),
                            "top_category_share": sets.ratio(int((top[chosen] == c).sum()), chosen.size)}
    active = p.sum(axis=0) > 0
    result["all_components"] = {"size": int(active.sum()), "mean_contrast": _nan_mean(scores.contrast_max[:, active]),
                                "mean_entropy_specificity": _nan_mean(scores.entropy[active]),
                                "top_category_share": sets.ratio(1, len(scores.categories))}
    return result


@dataclass
class ValidityResult:
    """All validity evidence for one rule on one component kind."""

    kind: str
    rule: SelectionRule
    freqs: KindFrequencies  # category level, pooled from all groups
    mask: np.ndarray  # [K, N] selection on all groups
    scores: Specificity
    decoding: HeldOutDecoding | None  # None: groups by source half only (no instructions to hold out)
    stability: Stability | None
    cross_source: CrossSource | None = None
    bootstrap: Stability | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def categories(self) -> tuple[str, ...]:
        return self.freqs.categories

    def headline(self) -> dict[str, Any]:
        """Held-out decoding (:meth:`HeldOutDecoding.headline`), fold stability and cross-source within/across."""
        cross = self.cross_source
        return {**(self.decoding.headline() if self.decoding else {}),
                "stability": self.stability.mean if self.stability else float("nan"),
                "bootstrap_stability": None if self.bootstrap is None else self.bootstrap.mean,
                "cross_source_within": cross.within_mean if cross else float("nan"),
                "cross_source_across": cross.across_mean if cross else float("nan")}

    def summary(self) -> dict[str, Any]:
        counts = sets.set_counts(self.mask, self.categories)
        return {"kind": self.kind, "rule": self.rule.parameters, "rule_description": self.rule.describe(),
                "headline": self.headline(),
                "categories": list(self.categories), "components": counts["components"],
                "selected": {c: counts[f"selected_{c}"] for c in self.categories},
                "shares": sets.shares(counts, self.categories),
                "set_specificity": set_specificity(self.mask, self.freqs.p, self.scores),
                "held_out_decoding": self.decoding.summary() if self.decoding else None,
                "stability": self.stability.summary() if self.stability else None,
                "bootstrap_stability": None if self.bootstrap is None else self.bootstrap.summary(),
                "cross_source": None if self.cross_source is None else self.cross_source.summary(),
                "notes": self.notes}

    def tables(self) -> dict[str, list[dict]]:
        tag = {"kind": self.kind, "rule": self.rule.name, "epsilon": self.rule.epsilon}
        tables = {
            "validity_decoding": [{**tag, **r} for r in self.decoding.rows()] if self.decoding else [],
            "validity_confusion": [{**tag, **r} for r in self.decoding.confusion_rows()] if self.decoding else [],
            "validity_stability": [{**tag, **r} for r in (self.stability.rows() if self.stability else [])
                                   + (self.bootstrap.rows() if self.bootstrap else [])],
            "validity_cross_source": [{**tag, **r} for r in self.cross_source.rows()] if self.cross_source else [],
            "specificity": [{"kind": self.kind, **r} for r in
                            specificity_rows(self.mask, self.freqs.p, self.freqs.layout, self.scores)],
        }
        return {name: rows for name, rows in tables.items() if rows}


# -- computation -----------------------------------------------------------------------------------------------

@dataclass
class _Context:
    """What every rule's evaluation shares: the fold assignment and the per-fold and per-source sums."""

    groups: GroupCounts
    folds: int
    seed: int
    assignment: np.ndarray
    fold_sums: PartitionSums
    source_sums: PartitionSums | None
    notes: list[str]
    pools: dict[tuple[int, ...], tuple[KindFrequencies, GroupMoments]] = field(default_factory=dict)

    @property
    def categories(self) -> tuple[str, ...]:
        return self.groups.category_order

    def pooled(self, parts: Sequence[int]) -> tuple[KindFrequencies, GroupMoments]:
        """Frequencies and moments of the union of folds ``parts`` (kept: every rule and ε of a sweep reuses them,
        and with them the cached Welch tests)."""
        key = tuple(parts)
        if key not in self.pools:
            g = self.groups
            self.pools[key] = (self.fold_sums.frequencies(g.kind, g.layout, key), self.fold_sums.moments_of(key))
        return self.pools[key]

    def everything(self) -> tuple[KindFrequencies, GroupMoments]:
        return self.pooled(range(self.folds))


def _context(groups: GroupCounts, folds: int, seed: int) -> _Context:
    """Folds (``folds`` = 1: none, every group in one part) and the per-fold and per-source sums."""
    assignment = stratified_folds(groups, folds, seed) if folds > 1 else np.zeros(groups.size, dtype=np.int64)
    k = len(groups.category_order)
    for f in range(folds if folds > 1 else 0):
        present = np.bincount(groups.category_index[assignment != f], minlength=k)
        if (present == 0).any():
            missing = groups.category_order[int(np.argmin(present))]
            raise SparcomError(f"category {missing} has too few groups for {folds}-fold held-out decoding (a training "
                               "split has none); profile with --group-by instruction or use fewer folds")
    notes = []
    source = np.asarray(groups.sources)
    source_sums = None
    has_all = all(((source == s) & (groups.category_index == c)).any() for s in SOURCES for c in range(k))
    if has_all:
        part = np.select([source == s for s in SOURCES], list(range(len(SOURCES))), default=-1)
        source_sums = partition_sums(groups, part, len(SOURCES))
    else:
        notes.append("cross-source agreement left out: not every category has both AI- and human-written groups")
    return _Context(groups, folds, seed, assignment, partition_sums(groups, assignment, folds), source_sums, notes)


def _select(rule: SelectionRule, freqs: KindFrequencies, moments: GroupMoments) -> np.ndarray:
    return rule.apply(freqs.p, freqs.layout, moments)


def _cross_source(ctx: _Context, rule: SelectionRule) -> CrossSource | None:
    if ctx.source_sums is None:
        return None
    g = ctx.groups
    masks = {s: _select(rule, ctx.source_sums.frequencies(g.kind, g.layout, [i]), ctx.source_sums.moments_of([i]))
             for i, s in enumerate(SOURCES)}
    return CrossSource(ctx.categories, masks, jaccard_matrix(masks["ai"], masks["human"]))


def _held_out(ctx: _Context, select: Callable[[KindFrequencies, GroupMoments], np.ndarray], random_sets: int,
              level: float) -> HeldOutDecoding:
    """k-fold decoding; ``select`` gives the [K, N] sets from a training split (a rule, or fixed sets)."""
    g = ctx.groups
    k, n = len(ctx.categories), g.layout.size
    correct = {name: np.zeros(1 + 2 * random_sets, dtype=np.int64) for name in DECODERS}
    confusions = {name: np.zeros((k, k), dtype=np.int64) for name in (*DECODERS, "all")}
    undecided = dict.fromkeys((*DECODERS, "all"), 0)
    correct_all, evaluated, skipped = 0, 0, 0
    fold_masks = np.zeros((ctx.folds, k, n), dtype=bool)
    for f in range(ctx.folds):
        freqs, moments = ctx.pooled([p for p in range(ctx.folds) if p != f])
        mask = select(freqs, moments)
        fold_masks[f] = mask
        _, mean, std = moments.pooled()
        centroids = dec.standardise(moments.mean(), mean, std)
        held = np.flatnonzero(ctx.assignment == f)
        skipped += int((g.tokens[held] == 0).sum())
        held = held[g.tokens[held] > 0]
        if held.size == 0:
            continue
        truth = g.category_index[held]
        z = dec.standardise(g.frequencies(held), mean, std, order="F")
        label = (ctx.seed, "validity", g.kind, f)
        pooled = freqs.counts.sum(axis=0) / max(float(freqs.tokens.sum()), 1.0)
        category_sets = [_with_controls(mask[c], category, g.layout, random_sets, label, pooled)
                         for c, category in enumerate(ctx.categories)]
        union_sets = _with_controls(mask.any(axis=0), "union", g.layout, random_sets, label, pooled)
        predictions = {"set_score": dec.set_score_predict(z, category_sets),
                       "centroid": dec.centroid_predict(z, centroids, union_sets)}
        predictions["all"] = dec.centroid_predict_all(z, centroids)[:, None]
        for name, predicted in predictions.items():
            hits = (predicted == truth[:, None]).sum(axis=0)
            if name == "all":
                correct_all += int(hits[0])
            else:
                correct[name] += hits
            undecided[name] += int((predicted[:, 0] < 0).sum())
            confusions[name] += dec.confusion(truth, predicted[:, 0], k)
        evaluated += held.size
    decoders = {name: DecoderResult(name, ctx.categories, evaluated, int(correct[name][0]), undecided[name],
                                    confusions[name], level, correct[name][1:1 + random_sets].copy(),
                                    correct[name][1 + random_sets:].copy()) for name in DECODERS}
    all_components = DecoderResult("centroid", ctx.categories, evaluated, correct_all, undecided["all"],
                                   confusions["all"], level)
    return HeldOutDecoding(ctx.categories, ctx.folds, ctx.seed, ctx.assignment, fold_masks, decoders, all_components,
                           skipped)


def _with_controls(mask: np.ndarray, name: str, layout: Layout, random_sets: int, label: tuple,
                   pooled: np.ndarray) -> np.ndarray:
    """[1 + 2R, m]: the set, R random sets of its per-layer shape and R matched on the pooled frequency too."""
    return np.vstack([np.flatnonzero(mask)[None, :], draw_like(mask, layout, random_sets, *label, name),
                      frequency_matched(mask, layout, random_sets, pooled, *label, name)])


def bootstrap_stability(groups: GroupCounts, rule: SelectionRule, replicates: int, seed: int = 0) -> Stability:
    """Stability across resamples of the groups with replacement within each (category, source) stratum.

    Each resample draws, in every stratum of size s, s groups uniformly with replacement (a group drawn w times
    counts w times, in the pooled counts and in the tests); the rule selects on it; the result is the mean
    pairwise Jaccard of each category's sets over the ``replicates`` resamples.
    """
    if replicates < 2:
        raise SparcomError(f"bootstrap stability needs at least 2 replicates, got {replicates}")
    return Stability(groups.category_order, "bootstrap", resampled_selections(groups, rule, replicates, seed))


def resampled_selections(groups: GroupCounts, rule: SelectionRule, replicates: int, seed: int = 0) -> np.ndarray:
    """[B, K, N] selections of ``rule`` on B resamples of the groups within (category, source): resample r is
    :func:`~sparcom.analysis.groups.resample_weights` (groups, r, seed), so every caller with the same seed sees
    the same resamples (the bootstrap stability and the intervals of the set statistics share them)."""
    masks = np.zeros((replicates, len(groups.category_order), groups.layout.size), dtype=bool)
    zeros = np.zeros(groups.size, dtype=np.int64)
    for r in range(replicates):
        sums = partition_sums(groups, zeros, 1, resample_weights(groups, r, seed))
        masks[r] = _select(rule, sums.frequencies(groups.kind, groups.layout, [0]), sums.moments[0])
    return masks


def _evaluate(ctx: _Context, rule: SelectionRule, random_sets: int, level: float, bootstrap: int) -> ValidityResult:
    freqs, moments = ctx.everything()
    mask = _select(rule, freqs, moments)
    decoding = _held_out(ctx, lambda f, m: _select(rule, f, m), random_sets, level)
    return ValidityResult(
        kind=ctx.groups.kind, rule=rule, freqs=freqs, mask=mask,
        scores=specificity(freqs.p, ctx.categories, moments if len(moments.n) > 1 and (moments.n >= 2).all() else None),
        decoding=decoding, stability=Stability(ctx.categories, "folds", decoding.fold_masks),
        cross_source=_cross_source(ctx, rule),
        bootstrap=bootstrap_stability(ctx.groups, rule, bootstrap, ctx.seed) if bootstrap else None,
        notes=list(ctx.notes))


def check_settings(folds: int, random_sets: int, level: float) -> None:
    if random_sets < 1:
        raise SparcomError(f"random sets must be at least 1 (100 or more for a p-value), got {random_sets}")
    check_level(level)
    if folds < 2:
        raise SparcomError(f"held-out decoding needs at least 2 folds, got {folds}")


def validity(groups: GroupCounts, rule: SelectionRule, folds: int = DEFAULT_FOLDS, seed: int = 0,
             random_sets: int = DEFAULT_RANDOM_SETS, level: float = LEVEL, bootstrap: int = 0,
             ) -> ValidityResult:
    """Cross-source agreement, held-out decoding, stability and specificity scores of ``rule`` on ``groups``."""
    check_settings(folds, random_sets, level)
    return _evaluate(_context(groups, folds, seed), rule, random_sets, level, bootstrap)


def source_agreement(groups: GroupCounts, rule: SelectionRule) -> ValidityResult:
    """Cross-source agreement and specificity scores only: what a run grouped by source half supports.

    With one group per (category, source) there are no instructions to hold out, so there is no decoding and no
    fold stability (``decoding`` and ``stability`` are None) and no per-instruction test (no Welch columns).
    """
    ctx = _context(groups, 1, 0)
    freqs, moments = ctx.everything()
    note = ("held-out decoding and stability need one group per instruction; the run keeps one per source half "
            "(profile with --group-by instruction)")
    return ValidityResult(kind=groups.kind, rule=rule, freqs=freqs, mask=_select(rule, freqs, moments),
                          scores=specificity(freqs.p, ctx.categories), decoding=None, stability=None,
                          cross_source=_cross_source(ctx, rule), notes=[*ctx.notes, note])


def held_out_fixed(groups: GroupCounts, mask: np.ndarray, folds: int = DEFAULT_FOLDS, seed: int = 0,
                   random_sets: int = DEFAULT_RANDOM_SETS, level: float = LEVEL) -> HeldOutDecoding:
    """Held-out decoding of ``groups`` with fixed sets ``mask[K, N]`` (rows in ``groups.category_order``).

    Nothing is re-selected: the k folds only fit the decoders (standardisation and centroids on the training
    instructions), and the random sets are drawn with the fixed sets' per-layer shape in every fold, with the same
    streams as :func:`validity`. This is how a selection made on one run is judged on instructions it never saw.
    """
    check_settings(folds, random_sets, level)
    mask = np.asarray(mask, dtype=bool)
    expected = (len(groups.category_order), groups.layout.size)
    if mask.shape != expected:
        raise SparcomError(f"the sets are {mask.shape} but the groups have {expected[0]} categories × {expected[1]} "
                           "components")
    return _held_out(_context(groups, folds, seed), lambda f, m: mask, random_sets, level)


def held_out_select(groups: GroupCounts, select: Callable[[KindFrequencies, GroupMoments], np.ndarray],
                    folds: int = DEFAULT_FOLDS, seed: int = 0, random_sets: int = DEFAULT_RANDOM_SETS,
                    level: float = LEVEL) -> HeldOutDecoding:
    """Held-out decoding with sets that ``select`` derives from each training split (e.g. only the unique members
    of a rule's sets), against random sets of their per-layer shape, with the same folds and streams as
    :func:`validity`."""
    check_settings(folds, random_sets, level)
    return _held_out(_context(groups, folds, seed), select, random_sets, level)


def validity_sweep(groups: GroupCounts, rules: Sequence[SelectionRule],
                   epsilons: Mapping[str, Sequence[float]] | None = None, folds: int = DEFAULT_FOLDS, seed: int = 0,
                   random_sets: int = DEFAULT_RANDOM_SETS, level: float = LEVEL) -> list[dict]:
    """One row per rule and ε (the rule's sweep grid, or ``epsilons[rule.name]``, plus the rule's own ε).

    Each row: set sizes and general/unique shares of the selection on all groups; held-out decoding of both
    decoders against their random sets, the all-component centroid and chance; fold stability; cross-source
    within/across Jaccard. Folds, random draws and the one pass over the counts are shared by every row.
    """
    check_settings(folds, random_sets, level)
    ctx = _context(groups, folds, seed)
    rows = []
    for rule in rules:
        grid = (epsilons or {}).get(rule.name) or rule.sweep_grid
        for epsilon in sorted(set(grid) | {rule.epsilon}):
            result = _evaluate(ctx, rule.with_epsilon(epsilon), random_sets, level, 0)
            stats = sets.summary_statistics(result.mask, result.categories)
            row: dict[str, Any] = {"kind": groups.kind, "rule": rule.name, "variant": rule.variant,
                                   "epsilon": float(epsilon),
                                   "is_default": epsilon == rule.epsilon, "selected_any": stats["selected_any"],
                                   "general_share": stats["general_share"], "unique_share": stats["unique_share"]}
            row.update({f"selected_{c}": stats[f"selected_{c}"] for c in result.categories})
            for name, d in result.decoding.decoders.items():
                summary = d.summary()
                row.update({f"{name}_accuracy": d.accuracy, f"{name}_ci_low": summary["ci_low"],
                            f"{name}_ci_high": summary["ci_high"], f"{name}_random_mean": summary["random_mean"],
                            f"{name}_random_sd": summary["random_sd"], f"{name}_p": summary["p_value"]})
            row.update(all_components_accuracy=result.decoding.all_components.accuracy,
                       chance=result.decoding.chance, stability=result.stability.mean)
            cross = result.cross_source
            row.update(cross_source_within=cross.within_mean if cross else float("nan"),
                       cross_source_across=cross.across_mean if cross else float("nan"))
            rows.append(row)
    return rows
