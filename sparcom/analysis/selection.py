"""Selection rules: which components are instruction-specific for each category (DESIGN §1).

Every rule maps frequencies ``p[K, N]`` (K categories, N components of one kind flattened over layers) to a
boolean mask of the same shape. A component that never fires on a category (p = 0) is never selected for it,
whatever the rule: it cannot be specific to instructions it does not respond to.

- ``percentile`` (default): for each category, the global top-ε fraction over all components of the kind
  across all layers, ties kept: ``p ≥ quantile(p, 1 − ε)`` with NumPy's default (linear, "type 7") quantile.
- ``threshold``: absolute frequency ``p ≥ ε``.
- ``layer-percentile``: the percentile rule applied within each layer separately.
- ``lape``: Language Activation Probability Entropy (Tang et al., 2024), the procedure of the published code
  (RUCAIBox/Language-Specific-Neurons, ``identify.py``) with categories in place of languages:
  1. normalise each component's frequencies over categories, q_c = p_c / Σ_c' p_c' (0 where all are 0);
  2. entropy H = −Σ_c q_c log q_c (natural log, 0·log 0 = 0);
  3. filter: a component none of whose categories has p above the ``filter_rate`` quantile of all p values
     (all categories and components pooled; the k-th smallest value, k = round(filter_rate · K·N)) gets H = ∞;
  4. keep the round(ε · N) components of lowest H (ε is the published ``top_rate``; ties by position);
  5. assign a kept component to every category whose p exceeds the ``activation_bar_ratio`` quantile (same
     k-th-smallest definition) — a component may belong to several categories, or to none.

Two rules aim at specificity rather than frequency (formulas in :mod:`sparcom.analysis.specificity`):

- ``contrast``: the top-ε fraction of the contrast score s_c = p_c − max_{c'≠c} p_c' (or, with
  ``against="mean"``, p_c minus the mean of the other categories), ties kept, never s_c ≤ 0 or p_c = 0.
- ``test``: a one-sided Welch test per component of the instructions of c against the other instructions, on
  per-instruction frequencies, Benjamini–Hochberg at ``fdr`` per category, and a minimum effect (difference of
  mean per-instruction frequencies) ε. It needs groups below the category (``--group-by instruction``).

One rule selects by effect instead of firing (docs/attribution.md):

- ``attribution``: the ``contrast`` rule applied to e_c, each component's estimated change of category c's response
  NLL per scored token when it is deactivated (``sparcom attribute``: gradient × (replacement − activation)):
  s_c = e_c − max_{c'≠c} e_c' (or the mean), top ε, never s_c ≤ 0 or e_c ≤ 0 (a component whose deactivation is not
  estimated to hurt c is not selected for c). It needs the attribution run (``--attribution DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sparcom.analysis.groups import GroupCounts, GroupMoments
from sparcom.analysis.specificity import CONTRASTS, contrast_mask, welch_test_mask
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.settings import check, setting

RULES: tuple[str, ...] = ("percentile", "threshold", "layer-percentile", "lape", "contrast", "test", "attribution")
#: Default ε of the fraction rules: the top 1% of components per category (see docs/analysis.md).
DEFAULT_EPSILON = 0.01
#: The published LAPE code's quantiles for the activation filter and the assignment bar.
LAPE_FILTER_RATE = 0.95
LAPE_ACTIVATION_BAR_RATIO = 0.95
#: ε grids of the sweep: fractions for the fraction rules, absolute frequencies for ``threshold``.
SWEEP_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
SWEEP_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Default false discovery rate of the ``test`` rule (Benjamini–Hochberg, per category).
DEFAULT_FDR = 0.05
#: Default minimum effect of the ``test`` rule (its ε): a difference of mean per-instruction frequencies of 0.05.
#: A typical HexaInst instruction outside ``sum`` has 20–40 counted tokens, so one token is 0.025–0.05 of its
#: frequency; with ~1,000 instructions smaller differences can be significant yet mean less than one token per
#: instruction. Provisional until the ε sweep on real models (docs/analysis.md) confirms or replaces it.
DEFAULT_MIN_EFFECT = 0.05
#: ε grid of the ``test`` rule: minimum effects (at fixed FDR, which moves set sizes much less at N ≫ 1,000).
SWEEP_EFFECTS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
EFFECTS_NEEDED = ("rule 'attribution' needs the estimated effects of an attribution run of this model: run "
                  "'sparcom attribute MODEL --data ROWS --out DIR', then pass --attribution DIR")
GROUPS_NEEDED = ("rule 'test' needs per-instruction counts, which were not given: profile with "
                 "'sparcom profile ... --group-by instruction'")


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 < value <= 1.0) or np.isnan(value):
        raise SparcomError(f"{name} must be in (0, 1], got {value}")
    return value


def percentile_mask(p: np.ndarray, epsilon: float) -> np.ndarray:
    """Per row of ``p``: p ≥ quantile(row, 1 − ε) and p > 0 (ties at the cut are all kept)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    epsilon = _check_fraction("epsilon", epsilon)
    if p.shape[1] == 0:
        return np.zeros(p.shape, dtype=bool)
    cut = np.quantile(p, 1.0 - epsilon, axis=1)
    return (p >= cut[:, None]) & (p > 0)


def threshold_mask(p: np.ndarray, epsilon: float) -> np.ndarray:
    """p ≥ ε (and p > 0)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    epsilon = _check_fraction("epsilon", epsilon)
    return (p >= epsilon) & (p > 0)


def layer_percentile_mask(p: np.ndarray, layout: Layout, epsilon: float) -> np.ndarray:
    """The percentile rule within each layer of ``layout``."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    mask = np.zeros(p.shape, dtype=bool)
    for _, part in layout.groups("layer"):
        mask[:, part] = percentile_mask(p[:, part], epsilon)
    return mask


def kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest value (1-based, like ``torch.kthvalue``), k clamped to [1, size]."""
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return float("inf")
    k = min(max(int(k), 1), values.size)
    return float(np.partition(values, k - 1)[k - 1])


def lape_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy over categories of the normalised frequencies of each component (column of ``p[K, N]``)."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum(axis=0, keepdims=True)
    q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    log_q = np.log(q, out=np.zeros_like(q), where=q > 0)
    return -(q * log_q).sum(axis=0)


@dataclass
class LapeResult:
    """The selection and the intermediate values of the LAPE procedure."""

    mask: np.ndarray  # [K, N] bool
    entropy: np.ndarray  # [N], before the filter
    candidates: np.ndarray  # [N] bool: the round(top_rate·N) lowest-entropy components after the filter
    filter_value: float
    activation_bar: float


def lape(p: np.ndarray, top_rate: float = DEFAULT_EPSILON, filter_rate: float = LAPE_FILTER_RATE,
         activation_bar_ratio: float = LAPE_ACTIVATION_BAR_RATIO) -> LapeResult:
    """Run the LAPE procedure (see the module docstring) on ``p[K, N]``."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    top_rate = _check_fraction("epsilon (LAPE top rate)", top_rate)
    filter_rate = _check_fraction("LAPE filter rate", filter_rate)
    activation_bar_ratio = _check_fraction("LAPE activation bar ratio", activation_bar_ratio)
    n = p.shape[1]
    entropy = lape_entropy(p)
    pooled = p.reshape(-1)
    filter_value = kth_smallest(pooled, round(pooled.size * filter_rate))
    ranked = np.where((p > filter_value).any(axis=0), entropy, np.inf)
    chosen = np.argsort(ranked, kind="stable")[: round(n * top_rate)]
    candidates = np.zeros(n, dtype=bool)
    candidates[chosen] = True
    activation_bar = kth_smallest(pooled, round(pooled.size * activation_bar_ratio))
    mask = (p > activation_bar) & candidates[None, :]
    return LapeResult(mask, entropy, candidates, filter_value, activation_bar)


@dataclass(frozen=True)
class SelectionRule:
    """A rule with its parameters; ``epsilon=None`` takes the rule's default.

    ε means: the fraction kept (percentile, layer-percentile, lape, contrast), the absolute frequency
    (threshold), or the minimum effect (test). ``against`` is the contrast's reference, ``fdr`` the test's level.
    """

    name: str = setting("percentile", flag="--rule", choices=RULES, help=(
        "Selection rule: percentile (the paper's: top ε of each category's frequencies over all layers), threshold "
        "(p ≥ ε), layer-percentile (top ε within each layer), lape (lowest-entropy ε, Tang et al. 2024), contrast "
        "(top ε of p_c minus the largest (--against max) or mean (--against mean) p of the other categories), test "
        "(one-sided Welch test of c's instructions against the rest, Benjamini–Hochberg at --fdr, effect ≥ ε; needs "
        "--group-by instruction), attribution (the contrast rule on each component's estimated effect of deactivation "
        "on the category's response NLL; needs --attribution). Default: contrast, recommended from the evidence in docs/analysis.md (\"Which "
        "rule\"); --rule percentile reproduces the paper."))
    epsilon: float | None = setting(None, flag="--epsilon", help=(
        "Fraction selected per category (percentile, layer-percentile, contrast; LAPE's top rate), the absolute "
        "frequency (threshold) or the minimum effect (test). Default 0.01 (test: 0.05); threshold needs it."))
    filter_rate: float = setting(LAPE_FILTER_RATE, flag="--lape-filter-rate", help=(
        "LAPE: quantile of p a component must exceed in some category to be considered."))
    activation_bar_ratio: float = setting(LAPE_ACTIVATION_BAR_RATIO, flag="--lape-activation-bar", help=(
        "LAPE: quantile of p a kept component must exceed to be assigned to a category."))
    against: str = setting("max", flag="--against", choices=CONTRASTS, help=(
        "contrast rule: subtract the largest (max) or the mean (mean) frequency of the other categories."))
    fdr: float = setting(DEFAULT_FDR, flag="--fdr", help=(
        "test rule: Benjamini–Hochberg false discovery rate per category."))
    attribution: str | None = setting(None, flag="--attribution", help=(
        "attribution rule: the attribution run ('sparcom attribute') of this model whose effects it ranks."))

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise SparcomError(f"unknown selection rule {self.name!r}; choose from {', '.join(RULES)}")
        if self.epsilon is None:
            if self.name == "threshold":
                raise SparcomError("rule 'threshold' needs --epsilon: an absolute activation frequency in (0, 1], "
                                   "e.g. 0.9 keeps components active on at least 90% of a category's tokens")
            object.__setattr__(self, "epsilon", DEFAULT_MIN_EFFECT if self.name == "test" else DEFAULT_EPSILON)
        object.__setattr__(self, "epsilon", _check_fraction("epsilon", self.epsilon))
        if self.name == "lape":
            _check_fraction("LAPE filter rate", self.filter_rate)
            _check_fraction("LAPE activation bar ratio", self.activation_bar_ratio)
        if self.name in ("contrast", "attribution") and self.against not in CONTRASTS:
            raise SparcomError(f"unknown contrast {self.against!r}; choose from {', '.join(CONTRASTS)}")
        if self.name == "test":
            object.__setattr__(self, "fdr", _check_fraction("FDR", self.fdr))

    def check(self) -> SelectionRule:
        """The rule's values are checked when it is made; this checks the declared choices too."""
        return check(self)

    def with_epsilon(self, epsilon: float) -> SelectionRule:
        return replace(self, epsilon=epsilon)

    @property
    def needs_effects(self) -> bool:
        """True when the rule ranks estimated effects of deactivation (an attribution run), not frequencies."""
        return self.name == "attribution"

    @property
    def needs_groups(self) -> bool:
        """True when the rule needs per-instruction counts, not only category totals."""
        return self.name == "test"

    @property
    def parameters(self) -> dict:
        params: dict = {"rule": self.name, "epsilon": self.epsilon}
        if self.name == "lape":
            params.update(top_rate=self.epsilon, filter_rate=self.filter_rate,
                          activation_bar_ratio=self.activation_bar_ratio)
        if self.name in ("contrast", "attribution"):
            params.update(against=self.against)
        if self.name == "attribution":
            params.update(attribution=self.attribution)
        if self.name == "test":
            params.update(test="welch, one-sided", min_effect=self.epsilon, fdr=self.fdr)
        return params

    @property
    def variant(self) -> str:
        """The rule and its parameters other than ε: what tells apart the rows of a sweep over rules."""
        if self.name == "contrast":
            return f"contrast (against {self.against})"
        if self.name == "attribution":
            return f"attribution (against {self.against})"
        if self.name == "test":
            return f"test (FDR {self.fdr:g})"
        if self.name == "lape" and (self.filter_rate, self.activation_bar_ratio) != (LAPE_FILTER_RATE,
                                                                                     LAPE_ACTIVATION_BAR_RATIO):
            return f"lape (filter {self.filter_rate:g}, bar {self.activation_bar_ratio:g})"
        return self.name

    @property
    def sweep_grid(self) -> tuple[float, ...]:
        if self.name == "threshold":
            return SWEEP_THRESHOLDS
        return SWEEP_EFFECTS if self.name == "test" else SWEEP_FRACTIONS

    def describe(self) -> str:
        eps = self.epsilon
        if self.name == "percentile":
            return f"top {eps:.3g} of each category's frequencies over all layers (p ≥ quantile(p, {1 - eps:.6g}))"
        if self.name == "threshold":
            return f"activation frequency p ≥ {eps:.3g}"
        if self.name == "layer-percentile":
            return f"top {eps:.3g} of each category's frequencies within each layer"
        if self.name == "contrast":
            other = "largest" if self.against == "max" else "mean"
            return (f"top {eps:.3g} of each category's contrast p_c − {other} p of the other categories "
                    "(only positive contrasts)")
        if self.name == "attribution":
            other = "largest" if self.against == "max" else "mean"
            return (f"top {eps:.3g} of each category's estimated effect of deactivation on its response NLL minus the "
                    f"{other} effect on the other categories (only positive contrasts and effects)")
        if self.name == "test":
            return (f"one-sided Welch test per component of the category's instructions against the others', "
                    f"Benjamini–Hochberg FDR {self.fdr:.3g}, mean frequency at least {eps:.3g} higher")
        return (f"LAPE: lowest-entropy {eps:.3g} of components, filter at the {self.filter_rate:.3g} quantile, "
                f"assigned where p exceeds the {self.activation_bar_ratio:.3g} quantile")

    def short(self) -> str:
        """A compact label for plot titles."""
        if self.name == "threshold":
            return f"p ≥ {self.epsilon:.3g}"
        if self.name == "test":
            return f"test δ ≥ {self.epsilon:.3g}, FDR {self.fdr:.3g}"
        label = {"percentile": "top", "layer-percentile": "top per layer", "lape": "LAPE",
                 "contrast": "contrast" if self.against == "max" else "contrast (mean)",
                 "attribution": "attribution" if self.against == "max" else "attribution (mean)"}[self.name]
        return f"{label} {self.epsilon * 100:.3g}%"

    def apply(self, p: np.ndarray, layout: Layout, groups: GroupCounts | GroupMoments | None = None,
              effects: np.ndarray | None = None) -> np.ndarray:
        """The selection mask [K, N] for frequencies ``p[K, N]`` laid out by ``layout``.

        ``effects`` [K, N] (rows as ``p``'s) are the estimated effects per scored token the ``attribution`` rule
        ranks (:func:`sparcom.analysis.attribution.kind_effects`); the other rules ignore them.

        ``groups`` are the groups pooled into ``p`` (or their :class:`GroupMoments`); only the ``test`` rule uses
        them, and it cannot work without them. The rows of ``p`` must follow ``groups.category_order`` (true for
        ``pool(groups).p``; for a run's own p use ``groups.ordered(run_categories)``).
        """
        if self.name == "percentile":
            return percentile_mask(p, self.epsilon)
        if self.name == "threshold":
            return threshold_mask(p, self.epsilon)
        if self.name == "layer-percentile":
            return layer_percentile_mask(p, layout, self.epsilon)
        if self.name == "contrast":
            return contrast_mask(p, self.epsilon, self.against)
        if self.name == "attribution":
            if effects is None:
                raise SparcomError(EFFECTS_NEEDED)
            effects = np.atleast_2d(np.asarray(effects, dtype=np.float64))
            if effects.shape != np.atleast_2d(p).shape:
                raise SparcomError(f"rule 'attribution': the effects are {effects.shape} but the frequencies "
                                   f"{np.atleast_2d(p).shape}; the attribution run belongs to another model")
            return contrast_mask(effects, self.epsilon, self.against)
        if self.name == "test":
            if groups is None:
                raise SparcomError(GROUPS_NEEDED)
            moments = groups.moments if isinstance(groups, GroupCounts) else groups
            p = np.atleast_2d(np.asarray(p))
            if moments.total.shape != p.shape:
                raise SparcomError(f"rule 'test': the groups give {moments.total.shape[0]} categories × "
                                   f"{moments.total.shape[1]} components but p is {p.shape}; pass the groups "
                                   "pooled into p")
            return welch_test_mask(moments, self.fdr, self.epsilon) & (p > 0)
        return lape(p, self.epsilon, self.filter_rate, self.activation_bar_ratio).mask


#: The paper's rule (arXiv 2505.21191): the top ε = 1% of each category's activation frequencies over all layers.
PAPER_RULE = SelectionRule("percentile", DEFAULT_EPSILON)
#: The rule sparcom recommends from the evidence of ``sparcom sweep`` on both built-in models (docs/analysis.md,
#: "Which rule"): the same number of components per category as the paper's rule, ranked by p_c minus the largest
#: other category's p instead of by p_c.
RECOMMENDED_RULE = SelectionRule("contrast", DEFAULT_EPSILON)
#: The rule ``identify``, ``compare`` and ``ablate --run`` use when none is given: the recommended one.
DEFAULT_RULE = RECOMMENDED_RULE.name
