"""Sparse-probing curves: held-out decoding accuracy with k components per category, k = 1, 2, 4 … 256 (issue 23).

Held-out decoding with a rule's whole ε-set saturates (random sets of hundreds of components decode nearly as well
as all of them), so it cannot tell rules apart. Here every *ranking* of the components (a selection rule's own
score, or a supervised baseline) keeps its k best components per category, chosen on the training folds, and the
same decoder reads them on the held-out instructions:

- **one-vs-rest** for category c, on the k components S_c^k: nearest of two training centroids (c, the rest) in
  standardised per-instruction frequency z — the mean-difference classifier; balanced accuracy (chance 0.5),
  because c is one category against five;
- **six-way** on the union U^k of the K sets: nearest of the K training centroids (the validity's centroid
  decoder, :func:`sparcom.analysis.decoding.centroid_predict`); accuracy (chance 1/K).

The folds are the validity's (:func:`~sparcom.analysis.groups.stratified_folds`: same k, same seed, same groups);
z is standardised with the training instructions' mean and sd, as there. Rankings (higher = kept first; −inf =
the rule never keeps it):

- rules: each rule's own order (:mod:`sparcom.analysis.rule_rankings`, the table the dose–response reads too);
  with an attribution run (``effects_by_fold``), the ``attribution`` rule's order of the effects estimated on the
  training folds' instructions;
- supervised baselines: ``mean-difference`` |μ_c − μ_rest| of training z; ``l1-probe`` the order in which
  components enter an L1-regularised logistic regression of c against the rest along a path of penalties
  (:func:`l1_path_order`; ties by |weight| where they enter).

Controls, per method, target and k: R random sets of the chosen set's per-layer shape, and R frequency-matched
ones of its per-(layer, frequency bin) shape (bins: quantiles of the training frequency pooled over categories,
:func:`frequency_bins`), both drawn by :func:`sparcom.random_sets.draw`. Extra feature tables (a bag of tokens,
:mod:`sparcom.data.lexical`) are read by the same decoders with their own mean-difference ranking, and on all their
features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.analysis import decoding as dec
from sparcom.analysis.groups import GroupCounts, GroupMoments, partition_sums, stratified_folds
from sparcom.analysis.rule_rankings import rule_ranking
from sparcom.analysis.selection import SelectionRule
from sparcom.errors import SparcomError
from sparcom.random_sets import batched, draw

#: k = 1, 2, 4 … 256.
DEFAULT_KS: tuple[int, ...] = tuple(2 ** i for i in range(9))
#: Rules ranked by default (``threshold`` ranks exactly like ``percentile``, so it is left out).
DEFAULT_RULES: tuple[str, ...] = ("percentile", "layer-percentile", "lape", "contrast", "test")
SUPERVISED: tuple[str, ...] = ("mean-difference", "l1-probe")
DEFAULT_RANDOM_SETS = 20
#: Frequency bins of the matched control (quantiles of the pooled training frequency).
DEFAULT_BINS = 10
SIX_WAY = "six-way"
#: Components screened by |mean difference| before the L1 path (the path is run on these only).
L1_SCREEN = 512
L1_STEPS = 20
L1_RATIO = 0.01
L1_ITERATIONS = 50


# -- rankings ---------------------------------------------------------------------------------------------------

def ranked(score: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the finite scores, best first (ties: higher tie-break, then lower position)."""
    score = np.asarray(score, dtype=np.float64)
    eligible = np.flatnonzero(np.isfinite(score))
    second = np.zeros(score.size) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    return eligible[np.lexsort((eligible, -second[eligible], -score[eligible]))]


def top_k(score: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """[m] flat indices of the k best of :func:`ranked` (sorted by position), m ≤ k."""
    return np.sort(ranked(score, tiebreak)[:k])


def mean_difference(moments: GroupMoments, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[K, N] |μ_c − μ_rest| of standardised frequencies (training means of c's and of the other instructions)."""
    n = moments.n.astype(np.float64)[:, None]
    rest = (moments.total.sum(axis=0, keepdims=True) - moments.total) / np.maximum(n.sum() - n, 1.0)
    own = moments.total / np.maximum(n, 1.0)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    return np.abs(own - rest) * scale


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _design(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(design with an intercept column, balanced sample weights, FISTA step 1/L with L = ¼‖W^½ X‖₂²)."""
    weights = np.where(y > 0, 0.5 / max(y.sum(), 1.0), 0.5 / max((1 - y).sum(), 1.0))
    design = np.hstack([np.ones((x.shape[0], 1)), x])
    return design, weights, 1.0 / max(0.25 * np.linalg.norm(design * np.sqrt(weights)[:, None], 2) ** 2, 1e-12)


def l1_logistic(x: np.ndarray, y: np.ndarray, penalty: float, start: np.ndarray | None = None,
                iterations: int = L1_ITERATIONS, tolerance: float = 1e-7,
                prepared: tuple[np.ndarray, np.ndarray, float] | None = None) -> np.ndarray:
    """[1 + D] (intercept, weights) minimising Σ w_i logloss_i + penalty·‖weights‖₁ by FISTA.

    Sample weights balance the classes (each class sums to ½); the intercept is not penalised. ``prepared`` is
    :func:`_design` of (x, y), computed once along a path.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    design, weights, step = prepared if prepared is not None else _design(x, y)
    beta = np.zeros(design.shape[1]) if start is None else start.copy()
    momentum, previous, t = beta.copy(), beta.copy(), 1.0
    for _ in range(iterations):
        gradient = design.T @ (weights * (_sigmoid(design @ momentum) - y))
        beta = momentum - step * gradient
        beta[1:] = np.sign(beta[1:]) * np.maximum(np.abs(beta[1:]) - step * penalty, 0.0)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        momentum = beta + ((t - 1.0) / t_next) * (beta - previous)
        if np.max(np.abs(beta - previous)) < tolerance:
            break
        previous, t = beta, t_next
    return beta


def l1_path_order(x: np.ndarray, y: np.ndarray, steps: int = L1_STEPS, ratio: float = L1_RATIO,
                  stop_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(entry step [D], |weight| at entry [D]) along penalties λ_max · ratio^(s/(steps−1)), s = 0 … steps−1.

    λ_max = max |Xᵀ(w·(½ − y))| is the smallest penalty at which every weight is 0 (the balanced intercept is 0).
    A feature that never enters gets step = ``steps``. Warm starts along the path; stops once ``stop_at`` have
    entered.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    prepared = _design(x, y)
    weights = prepared[1]
    top = float(np.max(np.abs(x.T @ (weights * (0.5 - y))))) if x.size else 0.0
    entry = np.full(x.shape[1], steps, dtype=np.int64)
    size = np.zeros(x.shape[1])
    beta = None
    for s in range(steps):
        beta = l1_logistic(x, y, top * ratio ** (s / max(steps - 1, 1)), beta, prepared=prepared)
        new = (beta[1:] != 0) & (entry == steps)
        entry[new], size[new] = s, np.abs(beta[1:][new])
        if stop_at is not None and (entry < steps).sum() >= stop_at:
            break
    return entry, size


def frequency_bins(counts: np.ndarray, tokens: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """[N] bin of each component's frequency pooled over categories, Σ_c counts / Σ_c tokens: quantile bins
    (edges at the i/bins quantiles, repeated edges merged, so heavy ties at 0 make one bin)."""
    pooled = np.asarray(counts, dtype=np.float64).sum(axis=0) / max(float(np.sum(tokens)), 1.0)
    edges = np.unique(np.quantile(pooled, np.arange(1, bins) / bins))
    return np.searchsorted(edges, pooled, side="right").astype(np.int64)


# -- decoders ---------------------------------------------------------------------------------------------------

def one_vs_rest_predict(columns: np.ndarray, own: np.ndarray, rest: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """[G, R] True where the instruction is nearer c's training centroid than the rest's on each set [R, m].

    ``columns`` is z transposed, [N, G]; ``own`` and ``rest`` the two centroids [N]. Nearer c ⟺
    Σ_S z (μ_c − μ_rest) > Σ_S (μ_c² − μ_rest²) / 2; a tie (and an empty set) goes to the rest.
    """
    sets = np.atleast_2d(np.asarray(sets, dtype=np.int64))
    weight, bias = own - rest, 0.5 * (own * own - rest * rest)
    if sets.shape[1] == 0:
        return np.zeros((columns.shape[1], sets.shape[0]), dtype=bool)
    score = np.einsum("rkg,rk->gr", columns[sets], weight[sets]) - bias[sets].sum(axis=1)[None, :]
    return score > 0


def balanced_accuracy(true_positive: np.ndarray, positives: int, true_negative: np.ndarray,
                      negatives: int) -> np.ndarray:
    """(TP / P + TN / N) / 2 (NaN where a class is absent)."""
    if positives == 0 or negatives == 0:
        return np.full(np.shape(true_positive), np.nan)
    return 0.5 * (np.asarray(true_positive) / positives + np.asarray(true_negative) / negatives)


# -- the curves -------------------------------------------------------------------------------------------------

@dataclass
class FeatureTable:
    """Other per-instruction features read by the same decoders: ``counts[G, V]`` over ``tokens[G]`` (the groups'
    counted tokens), e.g. a bag of the counted tokens (:mod:`sparcom.data.lexical`)."""

    name: str
    counts: np.ndarray  # [G, V] int, rows in the groups' order
    tokens: np.ndarray  # [G]


@dataclass
class ProbingCurves:
    """Held-out accuracy per method, target (six-way, then each category one-vs-rest) and k, with controls.

    ``accuracy[M, T, k]`` is the accuracy (six-way) or balanced accuracy (one-vs-rest); ``random`` and ``matched``
    [M, T, k, R] the same for the random and frequency-matched random sets (NaN for feature tables, which have no
    layout); ``size`` [M, T, k] the mean set size over folds (below k when a rule keeps fewer); ``all_features``
    per feature source ("components", or a table's name) the decoders on every feature [T].
    """

    kind: str
    categories: tuple[str, ...]
    ks: tuple[int, ...]
    methods: tuple[str, ...]
    families: dict[str, str]  # method → "rule", "supervised" or a feature table's name
    folds: int
    seed: int
    random_sets: int
    bins: int
    evaluated: int
    accuracy: np.ndarray
    size: np.ndarray
    random: np.ndarray
    matched: np.ndarray
    all_features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[str, ...]:
        return (SIX_WAY, *self.categories)

    def chance(self, target: str) -> float:
        return 1.0 / len(self.categories) if target == SIX_WAY else 0.5

    def rows(self) -> list[dict[str, Any]]:
        """One row per method, target and k (the ``probing_curves`` table)."""
        rows = []
        for m, method in enumerate(self.methods):
            for t, target in enumerate(self.targets):
                for i, k in enumerate(self.ks):
                    row = {"kind": self.kind, "method": method, "family": self.families[method], "target": target,
                           "k": k, "size": float(self.size[m, t, i]), "accuracy": float(self.accuracy[m, t, i])}
                    for name, values in (("random", self.random[m, t, i]), ("matched", self.matched[m, t, i])):
                        row[f"{name}_mean"] = float(np.mean(values)) if np.isfinite(values).all() else float("nan")
                        row[f"{name}_sd"] = float(np.std(values, ddof=1)) if np.isfinite(values).all() and \
                            values.size > 1 else float("nan")
                    row.update(chance=self.chance(target), evaluated=self.evaluated)
                    rows.append(row)
        for source, values in self.all_features.items():
            rows += [{"kind": self.kind, "method": f"all {source}", "family": "all", "target": target, "k": 0,
                      "size": float("nan"), "accuracy": float(values[t]), "chance": self.chance(target),
                      "evaluated": self.evaluated} for t, target in enumerate(self.targets)]
        return rows

    def at(self, method: str, k: int, target: str = SIX_WAY) -> dict[str, float]:
        """Accuracy, random and matched means of one method at one k and target."""
        m, t, i = self.methods.index(method), self.targets.index(target), self.ks.index(k)
        return {"accuracy": float(self.accuracy[m, t, i]), "random_mean": float(np.mean(self.random[m, t, i])),
                "matched_mean": float(np.mean(self.matched[m, t, i])), "size": float(self.size[m, t, i])}

    def summary(self) -> dict[str, Any]:
        """Settings, and per method the six-way accuracy and mean one-vs-rest balanced accuracy at every k."""
        methods = {}
        for m, method in enumerate(self.methods):
            methods[method] = {"family": self.families[method],
                               "six_way": self.accuracy[m, 0].tolist(),
                               "six_way_random_mean": np.mean(self.random[m, 0], axis=-1).tolist(),
                               "six_way_matched_mean": np.mean(self.matched[m, 0], axis=-1).tolist(),
                               "one_vs_rest_mean": np.mean(self.accuracy[m, 1:], axis=0).tolist(),
                               "one_vs_rest_random_mean": np.mean(self.random[m, 1:], axis=(0, 2)).tolist(),
                               "one_vs_rest_matched_mean": np.mean(self.matched[m, 1:], axis=(0, 2)).tolist()}
        return {"kind": self.kind, "ks": list(self.ks), "categories": list(self.categories), "folds": self.folds,
                "seed": self.seed, "random_sets": self.random_sets, "frequency_bins": self.bins,
                "evaluated": self.evaluated, "chance": {"six_way": self.chance(SIX_WAY), "one_vs_rest": 0.5},
                "methods": methods,
                "all_features": {s: dict(zip(self.targets, v.tolist(), strict=True))
                                 for s, v in self.all_features.items()}}


@dataclass
class _Fold:
    """One held-out fold read in standardised frequency: z [G, N] (Fortran order, so z.T is contiguous)."""

    z: np.ndarray
    truth: np.ndarray  # [G] category index
    centroids: np.ndarray  # [K, N] training mean z per category
    rests: np.ndarray  # [K, N] training mean z of the other categories' instructions


def _fold(moments: GroupMoments, x_held: np.ndarray, truth: np.ndarray) -> _Fold:
    _, mean, std = moments.pooled()
    n = moments.n.astype(np.float64)[:, None]
    rest = (moments.total.sum(axis=0, keepdims=True) - moments.total) / np.maximum(n.sum() - n, 1.0)
    return _Fold(dec.standardise(x_held, mean, std, order="F"), truth, dec.standardise(moments.mean(), mean, std),
                 dec.standardise(rest, mean, std))


def _moments(x: np.ndarray, index: np.ndarray, categories: tuple[str, ...]) -> GroupMoments:
    """Per-category moments of the rows of ``x`` (category ``index`` each); a feature table's training split."""
    k = len(categories)
    onehot = np.zeros((k, x.shape[0]))
    onehot[index, np.arange(x.shape[0])] = 1.0
    return GroupMoments(categories, np.bincount(index, minlength=k), onehot @ x, onehot @ (x * x))


Draw = Callable[[np.ndarray, str], np.ndarray | None]


def _score_sets(fold: _Fold, category_sets: Sequence[np.ndarray], controls: Draw, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Correct six-way predictions [1 + C], one-vs-rest TP and TN [K, 1 + C] and set sizes [T] of the sets and
    their C control sets (``controls(mask, target)`` gives [C, m] or None)."""
    categories = len(category_sets)
    columns = fold.z.T
    tp, tn, sizes = [], [], [0.0] * (categories + 1)
    for c, chosen in enumerate(category_sets):
        mask = np.zeros(size, dtype=bool)
        mask[chosen] = True
        drawn = controls(mask, str(c))
        sets = chosen[None, :] if drawn is None else np.vstack([chosen[None, :], drawn])
        positive = one_vs_rest_predict(columns, fold.centroids[c], fold.rests[c], sets)
        own = fold.truth == c
        tp.append((positive & own[:, None]).sum(axis=0))
        tn.append((~positive & ~own[:, None]).sum(axis=0))
        sizes[1 + c] = float(chosen.size)
    union = np.unique(np.concatenate(list(category_sets))).astype(np.int64)
    mask = np.zeros(size, dtype=bool)
    mask[union] = True
    drawn = controls(mask, SIX_WAY)
    sets = union[None, :] if drawn is None else np.vstack([union[None, :], drawn])
    predicted = dec.centroid_predict(fold.z, fold.centroids, sets)
    sizes[0] = float(union.size)
    return ((predicted == fold.truth[:, None]).sum(axis=0), np.array(tp), np.array(tn), np.array(sizes))


def _l1_ranking(groups: GroupCounts, train: np.ndarray, moments: GroupMoments, difference: np.ndarray,
                stop_at: int) -> tuple[np.ndarray, np.ndarray]:
    """Score and tie-break [K, N] of the L1 probe: steps before entry among the ``L1_SCREEN`` components of largest
    |mean difference| per category (0 for those that never enter, ranked among themselves by mean difference)."""
    _, mean, std = moments.pooled()
    score, tiebreak = np.full(difference.shape, -np.inf), np.zeros(difference.shape)
    truth = groups.category_index[train]
    for c in range(difference.shape[0]):
        screened = top_k(difference[c], L1_SCREEN)
        x = groups.counts[np.ix_(train, screened)] / np.maximum(groups.tokens[train], 1)[:, None]
        x = dec.standardise(x, mean[screened], std[screened])
        entry, size = l1_path_order(x, (truth == c).astype(np.float64), stop_at=stop_at)
        entered = entry < L1_STEPS
        score[c, screened] = np.where(entered, L1_STEPS - entry, 0.0)
        tiebreak[c, screened] = np.where(entered, size, difference[c, screened])
    return score, tiebreak


def _rankings(groups: GroupCounts, rules: Sequence[SelectionRule], train: np.ndarray, freqs_p: np.ndarray,
              moments: GroupMoments, stop_at: int, effects: np.ndarray | None = None
              ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    result = {rule.name if rule.name not in ("contrast", "attribution") or rule.against == "max"
              else f"{rule.name}-mean": rule_ranking(rule, freqs_p, groups.layout, moments, effects)
              for rule in rules}
    _, mean, std = moments.pooled()
    difference = mean_difference(moments, mean, std)
    result["mean-difference"] = (difference, None)
    result["l1-probe"] = _l1_ranking(groups, train, moments, difference, stop_at)
    return result


def check_probing(ks: Sequence[int], folds: int, random_sets: int, bins: int) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise SparcomError(f"probing k values must be positive integers, got {list(ks)}")
    if folds < 2 or random_sets < 2 or bins < 1:
        raise SparcomError(f"probing needs at least 2 folds, 2 random sets and 1 frequency bin; got {folds}, "
                           f"{random_sets} and {bins}")
    return ks


@dataclass
class _Tally:
    """Counts pooled over folds: six-way correct [M, k, 1 + C], one-vs-rest TP / TN [M, K, k, 1 + C], sizes."""

    six: dict[str, np.ndarray] = field(default_factory=dict)
    tp: dict[str, np.ndarray] = field(default_factory=dict)
    tn: dict[str, np.ndarray] = field(default_factory=dict)
    size: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, method: str, i: int, ks: int, scored: tuple[np.ndarray, ...]) -> None:
        six, tp, tn, sizes = scored
        if method not in self.six:
            self.six[method] = np.zeros((ks, six.size))
            self.tp[method] = np.zeros((tp.shape[0], ks, tp.shape[1]))
            self.tn[method] = np.zeros((tn.shape[0], ks, tn.shape[1]))
            self.size[method] = np.zeros((sizes.size, ks))
        self.six[method][i] += six
        self.tp[method][:, i] += tp
        self.tn[method][:, i] += tn
        self.size[method][:, i] += sizes


def _features_fold(table: FeatureTable, groups: GroupCounts, train: np.ndarray,
                   held: np.ndarray) -> tuple[_Fold, np.ndarray]:
    """A feature table's fold (features seen in no training instruction dropped) and its mean-difference ranking."""
    def frequencies(rows: np.ndarray) -> np.ndarray:
        return table.counts[rows] / np.maximum(np.asarray(table.tokens)[rows], 1)[:, None]

    seen = np.flatnonzero(table.counts[train].sum(axis=0) > 0)
    x_train = frequencies(train)[:, seen]
    moments = _moments(x_train, groups.category_index[train], groups.category_order)
    fold = _fold(moments, frequencies(held)[:, seen], groups.category_index[held])
    _, mean, std = moments.pooled()
    return fold, mean_difference(moments, mean, std)


def _all_features(fold: _Fold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six-way correct, one-vs-rest TP and TN on every feature."""
    everything = np.arange(fold.z.shape[1], dtype=np.int64)[None, :]
    predicted = dec.centroid_predict_all(np.ascontiguousarray(fold.z), fold.centroids)
    tp, tn = [], []
    for c in range(fold.centroids.shape[0]):
        positive = one_vs_rest_predict(fold.z.T, fold.centroids[c], fold.rests[c], everything)[:, 0]
        tp.append(int((positive & (fold.truth == c)).sum()))
        tn.append(int((~positive & (fold.truth != c)).sum()))
    return np.array([(predicted == fold.truth).sum()]), np.array(tp), np.array(tn)


def _neuron_fold(groups: GroupCounts, rules: Sequence[SelectionRule], ks: tuple[int, ...], f: int, train: np.ndarray,
                 held: np.ndarray, sums, settings: tuple[int, int, int, int], tally: _Tally,
                 effects: np.ndarray | None = None) -> _Fold:
    folds, seed, random_sets, bins = settings
    parts = [p for p in range(folds) if p != f]
    freqs, moments = sums.frequencies(groups.kind, groups.layout, parts), sums.moments_of(parts)
    fold = _fold(moments, groups.frequencies(held), groups.category_index[held])
    strata = frequency_bins(freqs.counts, freqs.tokens, bins)
    layout, size = groups.layout, groups.layout.size
    for method, (score, tie) in _rankings(groups, rules, train, freqs.p, moments, max(ks), effects).items():
        orders = [ranked(score[c], None if tie is None else tie[c]) for c in range(score.shape[0])]
        for i, k in enumerate(ks):
            chosen = [np.sort(order[:k]) for order in orders]

            def controls(mask: np.ndarray, target: str, method: str = method, k: int = k) -> np.ndarray:
                label = (seed, "probing", groups.kind, method, f, target, k)
                return np.vstack([draw(layout, mask, random_sets, (*label, "random"), batched),
                                  draw(layout, mask, random_sets, (*label, "matched"), batched, strata=strata)])

            tally.add(method, i, len(ks), _score_sets(fold, chosen, controls, size))
    return fold


def probing_curves(groups: GroupCounts, rules: Sequence[SelectionRule] | None = None,
                   ks: Sequence[int] = DEFAULT_KS, folds: int = 5, seed: int = 0,
                   random_sets: int = DEFAULT_RANDOM_SETS, bins: int = DEFAULT_BINS,
                   tables: Sequence[FeatureTable] = (), components: bool = True,
                   effects_by_fold: Callable[[np.ndarray, int], Sequence[np.ndarray]] | None = None) -> ProbingCurves:
    """Sparse-probing curves of every rule's ranking and the supervised baselines on ``groups`` (module docstring),
    with the validity's folds; each feature table adds its mean-difference curve and its all-feature point.
    ``components=False`` computes the feature tables only (their folds are still the groups').
    ``effects_by_fold(assignment, folds)`` gives, per fold, the estimated effects [K, N] of the instructions outside
    it (:func:`sparcom.analysis.attribution.fold_effects`): the ``attribution`` rule is then ranked too."""
    ks = check_probing(ks, folds, random_sets, bins)
    rules = [SelectionRule(name) for name in DEFAULT_RULES] if rules is None else list(rules)
    if effects_by_fold is not None and not any(rule.needs_effects for rule in rules):
        rules.append(SelectionRule("attribution"))
    if effects_by_fold is None and any(rule.needs_effects for rule in rules):
        raise SparcomError("probing the attribution rule needs its effects per fold (an attribution run)")
    assignment = stratified_folds(groups, folds, seed)
    effects = list(effects_by_fold(assignment, folds)) if effects_by_fold is not None else [None] * folds
    sums = partition_sums(groups, assignment, folds)
    categories, counted = groups.category_order, groups.tokens > 0
    tally, feature_tally = _Tally(), _Tally()
    everything = {**({"components": np.zeros(1 + 2 * len(categories))} if components else {}),
                  **{t.name: np.zeros(1 + 2 * len(categories)) for t in tables}}
    positives = np.zeros(len(categories), dtype=np.int64)
    for f in range(folds):
        train = np.flatnonzero((assignment != f) & counted)
        held = np.flatnonzero((assignment == f) & counted)
        truth = groups.category_index[held]
        positives += np.bincount(truth, minlength=len(categories))
        if components:
            fold = _neuron_fold(groups, rules, ks, f, train, held, sums, (folds, seed, random_sets, bins), tally,
                                effects[f])
            everything["components"] += np.concatenate(_all_features(fold))
        for table in tables:
            table_fold, difference = _features_fold(table, groups, train, held)
            orders = [ranked(difference[c]) for c in range(len(categories))]
            for i, k in enumerate(ks):
                chosen = [np.sort(order[:k]) for order in orders]
                feature_tally.add(table.name, i, len(ks),
                                  _score_sets(table_fold, chosen, lambda mask, target: None, difference.shape[1]))
            everything[table.name] += np.concatenate(_all_features(table_fold))
    return _assemble(groups, rules, ks, (folds, seed, random_sets, bins), tally, feature_tally, everything, positives)


def _assemble(groups: GroupCounts, rules: Sequence[SelectionRule], ks: tuple[int, ...], settings: tuple[int, ...],
              tally: _Tally, feature_tally: _Tally, everything: Mapping[str, np.ndarray],
              positives: np.ndarray) -> ProbingCurves:
    folds, seed, random_sets, bins = settings
    evaluated = int(positives.sum())
    if evaluated == 0:
        raise SparcomError("probing curves: no held-out instruction has counted tokens")
    negatives = evaluated - positives
    methods = (*tally.six, *feature_tally.six)
    shape = (len(methods), 1 + len(positives), len(ks))
    accuracy, size = np.zeros(shape), np.zeros(shape)
    random, matched = np.full((*shape, random_sets), np.nan), np.full((*shape, random_sets), np.nan)
    for m, method in enumerate(methods):
        source = tally if method in tally.six else feature_tally
        values = np.concatenate([source.six[method][None] / evaluated,
                                 np.stack([balanced_accuracy(source.tp[method][c], int(positives[c]),
                                                             source.tn[method][c], int(negatives[c]))
                                           for c in range(len(positives))])])  # [T, k, 1 + C]
        accuracy[m] = values[..., 0]
        size[m] = source.size[method] / folds
        if values.shape[-1] > 1:
            random[m], matched[m] = values[..., 1:1 + random_sets], values[..., 1 + random_sets:]
    k = len(positives)
    all_features = {name: np.array([v[0] / evaluated, *(float(balanced_accuracy(v[1 + c], int(positives[c]),
                                                                                 v[1 + k + c], int(negatives[c])))
                                                        for c in range(k))])
                    for name, v in everything.items()}
    families = {m: "rule" if m in tally.six and m not in SUPERVISED else
                ("supervised" if m in SUPERVISED else "lexical") for m in methods}
    return ProbingCurves(groups.kind, groups.category_order, ks, methods, families, folds, seed, random_sets, bins,
                         evaluated, accuracy, size, random, matched, all_features)


def lexical_table(bags, groups: GroupCounts, name: str = "lexical") -> FeatureTable:
    """The bag of tokens (:class:`sparcom.data.lexical.TokenBags`) of each of ``groups``' instructions, checked: each
    instruction's counted tokens must equal the run's, or the words are not the tokens the counts used."""
    missing = sorted(set(groups.labels) - set(bags.row_ids))
    if missing:
        raise SparcomError(f"the lexical baseline has no row {missing[0]!r} of the run's instructions ({len(missing)} "
                           "missing); the run's dataset changed since profiling")
    rows = bags.rows_for(groups.labels)
    counts = bags.counts[rows]
    differ = np.flatnonzero(counts.sum(axis=1) != groups.tokens)
    if differ.size:
        g = int(differ[0])
        raise SparcomError(f"instruction {groups.labels[g]!r}: the lexical baseline counts {int(counts[g].sum())} "
                           f"tokens but the run counted {int(groups.tokens[g])}; the tokenizer, template or scope "
                           "differ from the run's")
    return FeatureTable(name, counts, groups.tokens)
