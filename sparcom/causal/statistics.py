"""Paired statistics of the causal check: ΔNLL cells, damage and specificity against random sets, bootstrap
intervals over rows, Holm-corrected p-values and a verdict per category (the rules are in docs/causal.md).

Every condition — the unablated model, each category's selected set S_c, each random set of S_c's shape — scores
the same rows, so conditions are compared row by row. The inputs are per-row summed NLL over the row's scored
tokens and the token counts, which are the same under every condition. A cell pools tokens within the evaluated
category: ΔNLL(c, c') = Σ_{i ∈ c'} (sums_S_c[i] − sums_none[i]) / Σ_{i ∈ c'} tokens[i].

Two kinds of uncertainty are reported and they answer different questions:

- the empirical p-value ranks the selected set among the R random sets of its shape *on these rows*
  ("is this set unusual among sets of its shape?"); its smallest value is 1 / (1 + R);
- the bootstrap interval resamples the rows within each evaluated category, with the same resample for every
  condition (the pairing), and recomputes every number ("how precisely do these rows measure it?").

Everything here is pure numpy; nothing loads a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from sparcom.errors import SparcomError

LEVEL = 0.95
ALPHA = 0.05
REPLICATES = 1000
#: Bootstrap replicates handled at once (bounds memory: chunk × conditions × categories float64 values).
CHUNK = 250
#: How the p-value of a damage or specificity test is computed (``test=``): ``empirical`` ranks S_c among the random
#: sets; ``parametric`` reads it from the tail of a normal distribution fitted to them (Student's t, see
#: :func:`t_tail_p`); ``auto`` is empirical when there are enough random sets for Holm to reach α, else parametric.
TESTS: tuple[str, ...] = ("empirical", "parametric", "auto")
#: Fewest random sets for the parametric test: with fewer, neither the fit nor the normality check says much.
PARAMETRIC_MIN_SETS = 10
#: The parametric test is replaced by the empirical one when Shapiro–Wilk rejects normality at this level.
NORMALITY_LEVEL = 0.05
#: Relative slack when comparing a p-value with α: p-values are rationals k / (1 + R) times integers, and the
#: boundary case (e.g. 6 × 1/120 against 0.05) must not fail by one unit in the last place.
_P_SLACK = 1e-9


# ------------------------------------------------------------------------------------------- per-cell significance


def significance(observed: np.ndarray, random: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell of ``observed`` [A, C] against ``random`` [A, N, C]: mean, std, excess, z and empirical p.

    ``p = (1 + #{random ≥ observed}) / (1 + N)`` (one-sided: is the selected set more damaging than random sets?);
    ``z = (observed − mean) / std`` with the sample standard deviation (ddof 1), NaN when N < 2 or std = 0.
    """
    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    n = random.shape[1]
    nan = np.full(observed.shape, np.nan)
    if n == 0:
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "excess": nan, "z": nan.copy(), "p": nan.copy()}
    mean = random.mean(axis=1)
    std = random.std(axis=1, ddof=1) if n > 1 else nan
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (observed - mean) / np.where(std > 0, std, 1.0), np.nan)
    p = (1 + (random >= observed[:, None, :]).sum(axis=1)) / (1 + n)
    return {"mean": mean, "std": std, "min": random.min(axis=1), "max": random.max(axis=1),
            "excess": observed - mean, "z": z, "p": p}


# ------------------------------------------------------------------------------------------- tests and corrections


def empirical_p(observed: np.ndarray, random: np.ndarray) -> np.ndarray:
    """One-sided empirical p of ``observed`` [...] against ``random`` [..., R]: (1 + #{random ≥ observed}) / (1 + R).

    NaN where the observed value is NaN or there are no random values.
    """
    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    r = random.shape[-1]
    if r == 0:
        return np.full(observed.shape, np.nan)
    p = (1 + (random >= observed[..., None]).sum(axis=-1)) / (1 + r)
    return np.where(np.isnan(observed), np.nan, p)


def t_tail_p(observed: np.ndarray, random: np.ndarray) -> np.ndarray:
    """One-sided parametric p of ``observed`` [...] against ``random`` [..., R], under the model that the random
    values and, under the null, the observed value are independent draws of one normal distribution.

    T = (observed − mean) / (s · √(1 + 1/R)) with the random values' mean and sample standard deviation s (ddof 1)
    follows Student's t with R − 1 degrees of freedom exactly under that model (the prediction interval of a new
    draw), so p = P(t_{R−1} ≥ T). NaN where R < 2, s = 0 or the observed value is NaN.
    """
    from scipy.special import stdtr

    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    r = random.shape[-1]
    if r < 2:
        return np.full(observed.shape, np.nan)
    mean = random.mean(axis=-1)
    sd = random.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (observed - mean) / (sd * np.sqrt(1 + 1 / r))
    p = stdtr(r - 1, -t)
    return np.where((sd > 0) & np.isfinite(t), p, np.nan)


def normality_p(random: np.ndarray) -> np.ndarray:
    """Shapiro–Wilk p-value of the random values [..., R] along the last axis (NaN for R < 3 or constant values):
    small values say the normal model of :func:`t_tail_p` does not fit."""
    from scipy.stats import shapiro

    random = np.asarray(random, dtype=np.float64)
    flat = random.reshape(-1, random.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for i, values in enumerate(flat):
        if values.size >= 3 and np.isfinite(values).all() and np.ptp(values) > 0:
            out[i] = float(shapiro(values).pvalue)
    return out.reshape(random.shape[:-1])


def choose_test(test: str, random_sets: int, tests: int, alpha: float = ALPHA) -> str:
    """The test ``auto`` stands for: empirical when its best Holm-adjusted p, tests / (1 + R), reaches α (or when
    there are too few random sets to fit a distribution), parametric otherwise."""
    if test not in TESTS:
        raise SparcomError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    if test != "auto":
        return test
    if random_sets < PARAMETRIC_MIN_SETS or tests < 1 or random_sets >= random_sets_needed(tests, alpha):
        return "empirical"
    return "parametric"


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries are not tests and stay NaN.

    Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) · p_(j)) with m the number of tests.
    """
    p = np.asarray(p, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def random_sets_needed(tests: int, alpha: float = ALPHA) -> int:
    """The fewest random sets R for which the best empirical p, 1 / (1 + R), survives Holm (or Bonferroni) over
    ``tests`` tests at level ``alpha``: tests / (1 + R) ≤ alpha, i.e. R ≥ tests / alpha − 1 (exact arithmetic)."""
    if tests < 1 or not 0 < alpha < 1:
        raise SparcomError(f"random_sets_needed: need tests ≥ 1 and 0 < alpha < 1, got {tests} and {alpha}")
    bound = Fraction(tests) / Fraction(str(alpha)) - 1
    return max(0, -(-bound.numerator // bound.denominator))


def min_holm_p(random_sets: int, tests: int) -> float:
    """The smallest Holm-adjusted p any test can reach with ``random_sets`` random sets and ``tests`` tests."""
    if random_sets < 1 or tests < 1:
        return float("nan")
    return min(1.0, tests / (1 + random_sets))


def significant(p: float, alpha: float = ALPHA) -> bool:
    """p ≤ alpha (with a hair of slack for the rational boundary case); False for NaN."""
    return bool(np.isfinite(p) and p <= alpha * (1 + _P_SLACK))


# ------------------------------------------------------------------------------------------- rows and resamples


def category_members(row_categories: Sequence[str], evaluated: Sequence[str]) -> list[np.ndarray]:
    """Row positions of each evaluated category (in the order of ``evaluated``)."""
    labels = np.asarray(list(row_categories), dtype=object)
    members = [np.flatnonzero(labels == c) for c in evaluated]
    for category, idx in zip(evaluated, members, strict=True):
        if idx.size == 0:
            raise SparcomError(f"evaluated category {category!r} has no rows; drop it or add rows of it")
    return members


def _category_seed(seed: int, category: str) -> int:
    digest = hashlib.sha256(f"{seed}:rows:{category}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resample_indices(row_categories: Sequence[str], replicates: int, seed: int = 0) -> np.ndarray:
    """[replicates, n] row indices: replicate b puts in each row's slot a row drawn, with replacement, from the rows
    of the same category. Each category has its own generator (seeded from ``seed`` and its name), so a category's
    resamples do not depend on which other categories are present or on their order."""
    if replicates < 1:
        raise SparcomError(f"bootstrap replicates must be at least 1, got {replicates}")
    labels = np.asarray(list(row_categories), dtype=object)
    indices = np.empty((replicates, labels.size), dtype=np.int64)
    for category in dict.fromkeys(labels.tolist()):
        rows = np.flatnonzero(labels == category)
        rng = np.random.default_rng(_category_seed(seed, category))
        indices[:, rows] = rows[rng.integers(0, rows.size, size=(replicates, rows.size))]
    return indices


def check_resample(indices: np.ndarray, row_categories: Sequence[str]) -> np.ndarray:
    """Refuse a resample matrix that moves a row out of its category (that would break the design)."""
    indices = np.asarray(indices)
    labels = np.asarray(list(row_categories), dtype=object)
    if indices.ndim != 2 or indices.shape[1] != labels.size or not np.issubdtype(indices.dtype, np.integer):
        raise SparcomError(f"resample must be an integer matrix [replicates, {labels.size}], got {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= labels.size):
        raise SparcomError("resample indices must be row positions 0 … n − 1")
    if not np.all(labels[indices] == labels[None, :]):
        raise SparcomError("resample draws a row from another category; resample within each category")
    return indices.astype(np.int64)


def resample_weights(indices: np.ndarray, rows: int) -> np.ndarray:
    """[B, n] float64: how often each row occurs in each resample (a bincount per replicate)."""
    b = indices.shape[0]
    flat = (indices + rows * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * rows).reshape(b, rows).astype(np.float64)


# ------------------------------------------------------------------------------------------- cells and contrasts


def pooled_cells(diff: np.ndarray, tokens: np.ndarray, members: Sequence[np.ndarray],
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Per-token pooled ΔNLL per evaluated category: Σ_{i ∈ c} w_i d_i / Σ_{i ∈ c} w_i t_i.

    ``diff`` [..., n] holds per-row summed ΔNLL of any number of conditions; the result is [..., C], or with
    resample ``weights`` [B, n], [B, ..., C] (one matrix product per category).
    """
    lead = diff.shape[:-1]
    out = []
    for idx in members:
        part = diff[..., idx].reshape(-1, idx.size)
        if weights is None:
            out.append((part.sum(axis=1) / tokens[idx].sum()).reshape(lead))
        else:
            w = weights[:, idx]
            num = (w @ part.T).reshape((w.shape[0], *lead))
            den = (w @ tokens[idx]).reshape((w.shape[0],) + (1,) * len(lead))
            out.append(num / den)
    return np.stack(out, axis=-1)


def contrasts(cells: np.ndarray, own: np.ndarray) -> dict[str, np.ndarray]:
    """From cells [..., A, S, C] (S = 1 selected + R random conditions per ablated category) the per-category
    statistics of every replicate. ``own`` [A] is the evaluated column of each ablated category, −1 when absent.

    - ``delta`` [..., A, C] and ``excess`` [..., A, C] = ΔNLL(S_c) − mean of the random sets;
    - ``damage`` [..., A] = own ΔNLL of S_c, ``damage_random`` [..., A, R];
    - ``specificity`` [..., A] = own ΔNLL − the unweighted mean ΔNLL of the other evaluated categories,
      ``specificity_random`` [..., A, R] the same for each random set;
    - ``scaled_specificity`` [..., A] = own − ρ · others, with ρ = (Σ_r own_r) / (Σ_r others_r) the random sets'
      pooled own-to-others ratio (NaN when Σ_r others_r ≤ 0): own damage beyond what S_c's damage to the other
      categories predicts if damage scaled in proportion to the random sets' profile.
    """
    c = cells.shape[-1]
    has_own = own >= 0
    column = np.where(has_own, own, 0)
    index = np.broadcast_to(column[:, None, None], (*cells.shape[:-1], 1))
    own_cells = np.take_along_axis(cells, index, axis=-1)[..., 0]  # [..., A, S]
    own_cells = np.where(has_own[:, None], own_cells, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        others = (cells.sum(axis=-1) - own_cells) / (c - 1) if c > 1 else np.full(own_cells.shape, np.nan)
        spec = own_cells - others
        selected, random = cells[..., 0, :], cells[..., 1:, :]
        random_mean = random.mean(axis=-2) if random.shape[-2] else np.full(selected.shape, np.nan)
        if random.shape[-2]:
            random_others = others[..., 1:].sum(axis=-1)
            ratio = np.where(random_others > 0, own_cells[..., 1:].sum(axis=-1) / random_others, np.nan)
        else:
            ratio = np.full(own_cells.shape[:-1], np.nan)
        return {"delta": selected, "excess": selected - random_mean,
                "damage": own_cells[..., 0], "damage_random": own_cells[..., 1:],
                "others": others[..., 0], "specificity": spec[..., 0], "specificity_random": spec[..., 1:],
                "ratio_random": ratio, "scaled_specificity": own_cells[..., 0] - ratio * others[..., 0]}


def percentile_intervals(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Central percentile interval over axis 0, ignoring NaN replicates (NaN where none is finite)."""
    if not 0 < level < 1:
        raise SparcomError(f"confidence level must be in (0, 1), got {level}")
    tail = round((1 - level) / 2, 12)
    samples = np.where(np.isfinite(samples), samples, np.nan)
    defined = np.isfinite(samples).any(axis=0)
    safe = np.where(defined[None], samples, 0.0)
    low, high = np.nanquantile(safe, [tail, 1 - tail], axis=0)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


# ------------------------------------------------------------------------------------------- result


VERDICT_RULE = (
    "damage test: own ΔNLL of S_c against the random sets of its shape; specificity test: own ΔNLL minus the mean "
    "ΔNLL of the other categories, S_c against the same contrast of each random set; both one-sided empirical "
    "p-values, Holm-adjusted across the categories of a target, significant when p_holm ≤ alpha. specific = both "
    "significant; critical but not specific = damage only; selective but not critical = specificity only; no "
    "effect beyond random = neither; not enough random sets = no p_holm can reach alpha (R < K / alpha − 1 for K "
    "tested categories). A 'specific' verdict gets a caution when the bootstrap interval of the scaled "
    "specificity (own − ρ · others, ρ the random sets' own/others ratio) does not lie above 0.")

TEST_RULE = (
    "empirical p = (1 + #{random sets with a value ≥ S_c's}) / (1 + R). parametric p = P(t_{R−1} ≥ T), "
    "T = (S_c's value − random mean) / (random sd · √(1 + 1/R)): exact if the random sets' values are normal "
    "(a new draw's prediction interval); used only where Shapiro–Wilk does not reject normality at "
    f"{NORMALITY_LEVEL} (else the empirical p, with a note), and only with at least {PARAMETRIC_MIN_SETS} random "
    "sets. auto = empirical when R ≥ K / alpha − 1 (Holm can reach alpha), else parametric. Each test row names "
    "the test behind its p (damage_test, specificity_test).")


@dataclass
class CausalStatistics:
    """Damage and specificity of each category's set against random sets of its shape, for one target."""

    target: str
    ablated: list[str]
    evaluated: list[str]
    set_sizes: dict[str, int | None]
    rows: dict[str, int]
    tokens: dict[str, int]
    random_sets: int
    replicates: int
    seed: int
    level: float
    alpha: float
    estimate: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    defined_replicates: dict[str, np.ndarray]
    cell_significance: dict[str, np.ndarray]
    ratio_to_random: np.ndarray  # [A, C] ΔNLL / random mean (NaN where the random mean ≤ 0)
    tests: list[dict[str, Any]] = field(default_factory=list)
    #: The test asked for (:data:`TESTS`) and the one it stood for (``auto`` → empirical or parametric).
    test: str = "empirical"
    test_used: str = "empirical"
    #: The bootstrap replicates of every statistic with an interval ([B, A, C] or [B, A]), for further intervals.
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    #: The stored decisions of both claims when a decision rule was passed (sparcom.causal.row_aware.decide).
    decisions: Any = None

    @property
    def delta(self) -> np.ndarray:
        return self.estimate["delta"]

    def random_sets_needed(self) -> int | None:
        tested = sum(1 for t in self.tests if np.isfinite(t["damage_p"]))
        return random_sets_needed(tested, self.alpha) if tested else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: matrices as nested lists, one entry per tested category, the rules in words."""
        sig = self.cell_significance
        tested = sum(1 for t in self.tests if np.isfinite(t["damage_p"]))

        def interval(name: str) -> dict[str, Any]:
            return {"estimate": _jsonable(self.estimate[name]), "low": _jsonable(self.low[name]),
                    "high": _jsonable(self.high[name])}

        return {
            "target": self.target, "ablated": self.ablated, "evaluated": self.evaluated,
            "set_sizes": self.set_sizes, "rows": self.rows, "tokens": self.tokens,
            "random_sets": self.random_sets,
            "bootstrap": {"replicates": self.replicates, "seed": self.seed, "level": self.level,
                          "scheme": "rows resampled with replacement within each evaluated category, the same "
                                    "resample for every condition; percentile intervals"},
            "delta_nll": interval("delta"), "excess_over_random": interval("excess"),
            "normalised": {"random_mean": _jsonable(sig["mean"]), "random_std": _jsonable(sig["std"]),
                           "ratio_to_random_mean": _jsonable(self.ratio_to_random), "z": _jsonable(sig["z"]),
                           "p_value": _jsonable(sig["p"])},
            "tests": [{k: _jsonable(v) for k, v in t.items()} for t in self.tests],
            "power": {"alpha": self.alpha, "tests": tested,
                      "min_p_holm": _jsonable(min_holm_p(self.random_sets, tested)),
                      "random_sets_needed": self.random_sets_needed()},
            "test": {"requested": self.test, "used": self.test_used, "rule": TEST_RULE},
            "verdict_rule": VERDICT_RULE,
        } | ({"decisions": self.decisions.summary()} if self.decisions is not None else {})

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """CSV rows by file stem: one row per cell, one row per tested category."""
        sig = self.cell_significance
        cells = []
        for a, ablated in enumerate(self.ablated):
            for j, evaluated in enumerate(self.evaluated):
                cells.append({
                    "target": self.target, "ablated": ablated, "set_size": self.set_sizes.get(ablated),
                    "evaluated": evaluated, "rows": self.rows[evaluated], "tokens": self.tokens[evaluated],
                    "delta_nll": self.estimate["delta"][a, j], "delta_nll_low": self.low["delta"][a, j],
                    "delta_nll_high": self.high["delta"][a, j], "random_sets": self.random_sets,
                    "random_mean": sig["mean"][a, j], "random_std": sig["std"][a, j],
                    "excess_over_random": self.estimate["excess"][a, j],
                    "excess_low": self.low["excess"][a, j], "excess_high": self.high["excess"][a, j],
                    "ratio_to_random_mean": self.ratio_to_random[a, j], "z": sig["z"][a, j], "p_value": sig["p"][a, j],
                    "level": self.level})
        tests = [{"target": self.target, **t} for t in self.tests]
        return {name: rows for name, rows in {"delta_nll_paired": cells, "specificity_tests": tests}.items() if rows}

    def matrices(self) -> dict[str, list[dict[str, Any]]]:
        """Wide matrices normalised per cell by the random sets of that cell (rows: ablated, columns: evaluated)."""
        sig = self.cell_significance
        result = {}
        for name, values in (("z", sig["z"]), ("excess", sig["excess"]), ("ratio", self.ratio_to_random)):
            result[f"delta_nll_{name}_matrix_{self.target}"] = [
                {"ablated": c, **{e: values[a, j] for j, e in enumerate(self.evaluated)}}
                for a, c in enumerate(self.ablated)]
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.ndim else _jsonable(value.item())
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------------------- verdicts


def verdict(test: dict[str, Any], alpha: float, min_p: float, needed: int | None = None) -> str:
    """One line in plain words for one category's tests (the rule is :data:`VERDICT_RULE`); each p-value is
    followed by the test that produced it."""
    if test.get("reason"):
        return f"not testable: {test['reason']}"
    if not min_p <= alpha * (1 + _P_SLACK):
        need = f" (need at least {needed})" if needed is not None else ""
        notes = "; ".join(n for n in (test.get("damage_test_note"), test.get("specificity_test_note")) if n)
        return (f"not enough random sets: with {test['random_sets']}{need} p_holm cannot go below {min_p:.3g}; "
                f"unadjusted damage p = {_fmt_p(test['damage_p'])}, specificity p = {_fmt_p(test['specificity_p'])}"
                + (f" ({notes})" if notes else ""))
    damage = significant(test["damage_p_holm"], alpha)
    spec = significant(test["specificity_p_holm"], alpha)
    pd = f"{_fmt_p(test['damage_p_holm'])}, {test.get('damage_test', 'empirical')}"
    ps = f"{_fmt_p(test['specificity_p_holm'])}, {test.get('specificity_test', 'empirical')}"
    if damage and spec:
        text = (f"specific: own damage exceeds random sets (p_holm = {pd}) and exceeds the damage to the other "
                f"categories by more than random sets do (p_holm = {ps})")
        if not test["scaled_specificity_low"] > 0:
            text += ("; caution: not beyond what the set's damage to the others predicts in proportion "
                     "(scaled specificity interval reaches 0 or is undefined)")
        return text
    if damage:
        return (f"critical but not specific: own damage exceeds random sets (p_holm = {pd}), but not the damage to "
                f"the other categories by more than random sets do (p_holm = {ps})")
    if spec:
        return (f"selective but not critical: own-minus-others exceeds random sets (p_holm = {ps}), own damage "
                f"alone does not (p_holm = {pd})")
    return f"no effect beyond random (damage p_holm = {pd}; specificity p_holm = {ps})"


#: The verdicts' leading words (:func:`verdict_label` returns the one a verdict line starts with).
VERDICTS: tuple[str, ...] = ("specific", "critical but not specific", "selective but not critical",
                             "no effect beyond random", "not enough random sets", "not testable")


def verdict_label(text: str) -> str:
    """The short verdict of a verdict line ("specific (caution)" when it carries the proportion caution)."""
    label = next((v for v in sorted(VERDICTS, key=len, reverse=True) if text.startswith(v)), text)
    return f"{label} (caution)" if label == "specific" and "caution" in text else label


def _fmt_p(p: float) -> str:
    return f"{p:.3g}" if np.isfinite(p) else "n/a"


# ------------------------------------------------------------------------------------------- the computation


def causal_statistics(
    base: np.ndarray,
    selected: np.ndarray,
    random: np.ndarray,
    tokens: np.ndarray,
    row_categories: Sequence[str],
    ablated: Sequence[str],
    evaluated: Sequence[str] | None = None,
    *,
    set_sizes: Sequence[int] | None = None,
    target: str = "neurons",
    replicates: int = REPLICATES,
    seed: int = 0,
    level: float = LEVEL,
    alpha: float = ALPHA,
    resample: np.ndarray | None = None,
    test: str = "empirical",
    decision: Callable[..., Any] | None = None,
) -> CausalStatistics:
    """All statistics of one target from per-row summed NLL.

    ``base`` [n]: unablated; ``selected`` [A, n]: with S_c deactivated, one row per ``ablated`` category;
    ``random`` [A, R, n]: with each random set of S_c's shape; ``tokens`` [n]: scored tokens per row (the same under
    every condition); ``row_categories`` [n]; ``evaluated``: the columns (default: the ablated categories present,
    then the others in order of appearance; rows of other categories are ignored). ``set_sizes`` [A]: a category
    with size 0 is not tested. ``resample`` [B, n] replaces the seeded bootstrap (for checks). ``test`` is one of
    :data:`TESTS`: how the damage and specificity p-values are computed (each test row names the one used).
    ``decision`` (sparcom.causal.row_aware.decide, passed in so this module does not import it) decides both claims
    from the same inputs; its decisions are stored and each test row names its outcomes (``damage_decision``,
    ``specificity_decision``).
    """
    base = np.asarray(base, dtype=np.float64)
    selected = np.asarray(selected, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    tokens = np.asarray(tokens)
    labels = list(row_categories)
    ablated = list(ablated)
    n = base.shape[0]
    a = len(ablated)
    if random.ndim == 2 and random.shape[0] == a and random.shape[1] == 0:
        random = random.reshape(a, 0, n)
    if selected.shape != (a, n) or random.ndim != 3 or random.shape[0] != a or random.shape[2] != n:
        raise SparcomError(f"causal statistics: expected selected [{a}, {n}] and random [{a}, R, {n}], got "
                           f"{selected.shape} and {random.shape}")
    if tokens.shape != (n,) or len(labels) != n:
        raise SparcomError(f"causal statistics: tokens and row categories must have {n} entries")
    if not np.issubdtype(tokens.dtype, np.integer) or (tokens < 1).any():
        raise SparcomError("causal statistics: every row needs a positive integer count of scored tokens")
    for name, values in (("unablated", base), ("selected", selected), ("random", random)):
        if not np.isfinite(values).all():
            raise SparcomError(f"causal statistics: the {name} NLL sums contain NaN or infinite values")
    if evaluated is None:
        present = list(dict.fromkeys(labels))
        evaluated = [c for c in ablated if c in present] + [c for c in present if c not in ablated]
    evaluated = list(evaluated)
    members = category_members(labels, evaluated)
    sizes = list(set_sizes) if set_sizes is not None else [None] * a
    if len(sizes) != a:
        raise SparcomError(f"causal statistics: {len(sizes)} set sizes for {a} ablated categories")
    tokens = tokens.astype(np.float64)
    r = random.shape[1]
    own = np.array([evaluated.index(c) if c in evaluated else -1 for c in ablated], dtype=np.int64)

    # per-row summed ΔNLL of every condition: [A, 1 + R, n]
    diff = np.concatenate([selected[:, None, :], random], axis=1) - base[None, None, :]
    cells = pooled_cells(diff, tokens, members)  # [A, 1 + R, C]
    point = contrasts(cells, own)
    cell_sig = significance(point["delta"], cells[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_to_random = np.where(cell_sig["mean"] > 0, point["delta"] / cell_sig["mean"], np.nan)

    resample = resample_indices(labels, replicates, seed) if resample is None else check_resample(resample, labels)
    names = ("delta", "excess", "damage", "damage_excess", "specificity", "specificity_excess",
             "scaled_specificity")
    samples: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, resample.shape[0], CHUNK):
        weights = resample_weights(resample[start:start + CHUNK], n)
        rep = _with_excess(contrasts(pooled_cells(diff, tokens, members, weights), own))
        for k in names:
            samples[k].append(rep[k])
    stacked = {k: np.concatenate(v, axis=0) for k, v in samples.items()}
    estimate = {k: np.asarray(v) for k, v in _with_excess(point).items() if k in names}
    low, high, defined = {}, {}, {}
    for k in names:
        low[k], high[k] = percentile_intervals(stacked[k], level)
        defined[k] = np.isfinite(stacked[k]).sum(axis=0)

    reasons = []
    for i in range(a):
        reason = ""
        if sizes[i] == 0:
            reason = "its set is empty"
        elif own[i] < 0:
            reason = "its own category is not among the evaluated rows"
        elif r == 0:
            reason = "no random sets (seeds 0)"
        elif len(evaluated) < 2:
            reason = "no other evaluated category to compare with"
        reasons.append(reason)
    untested = np.array([bool(x) for x in reasons])
    family = int((~untested).sum())
    chosen = choose_test(test, r, family, alpha)
    if chosen == "parametric" and r < PARAMETRIC_MIN_SETS:
        raise SparcomError(f"the parametric test needs at least {PARAMETRIC_MIN_SETS} random sets, got {r}")
    pvalues = {name: _pvalues(point[name], point[f"{name}_random"], chosen, untested)
               for name in ("damage", "specificity")}
    damage_p, spec_p = pvalues["damage"]["p"], pvalues["specificity"]["p"]
    damage_holm, spec_holm = holm(damage_p), holm(spec_p)
    min_p = min_holm_p(r, family)
    needed = random_sets_needed(family, alpha) if family else None

    tests = []
    for i, category in enumerate(ablated):
        if own[i] < 0:
            continue
        dr, sr = point["damage_random"][i], point["specificity_random"][i]
        row: dict[str, Any] = {
            "ablated": category, "set_size": sizes[i], "random_sets": r,
            "damage": float(point["damage"][i]), "damage_low": float(low["damage"][i]),
            "damage_high": float(high["damage"][i]),
            "damage_random_mean": float(dr.mean()) if r else float("nan"),
            "damage_random_std": float(dr.std(ddof=1)) if r > 1 else float("nan"),
            "damage_excess": float(estimate["damage_excess"][i]),
            "damage_excess_low": float(low["damage_excess"][i]), "damage_excess_high": float(high["damage_excess"][i]),
            "damage_p": float(damage_p[i]), "damage_p_holm": float(damage_holm[i]),
            **_test_fields("damage", pvalues["damage"], i),
            "others": float(point["others"][i]),
            "specificity": float(point["specificity"][i]), "specificity_low": float(low["specificity"][i]),
            "specificity_high": float(high["specificity"][i]),
            "specificity_random_mean": float(sr.mean()) if r else float("nan"),
            "specificity_random_std": float(sr.std(ddof=1)) if r > 1 else float("nan"),
            "specificity_excess": float(estimate["specificity_excess"][i]),
            "specificity_excess_low": float(low["specificity_excess"][i]),
            "specificity_excess_high": float(high["specificity_excess"][i]),
            "specificity_z": _z(float(point["specificity"][i]), sr),
            "specificity_p": float(spec_p[i]), "specificity_p_holm": float(spec_holm[i]),
            **_test_fields("specificity", pvalues["specificity"], i),
            "ratio_random": float(point["ratio_random"][i]),
            "scaled_specificity": float(point["scaled_specificity"][i]),
            "scaled_specificity_low": float(low["scaled_specificity"][i]),
            "scaled_specificity_high": float(high["scaled_specificity"][i]),
            "reason": reasons[i],
        }
        empirical = "empirical" in (row["damage_test"], row["specificity_test"])
        row["verdict"] = verdict(row, alpha, min_p if empirical else 0.0, needed)
        tests.append(row)
    decisions = None
    if decision is not None:
        decisions = decision(base, selected, random, tokens, labels, ablated, evaluated, set_sizes=sizes, alpha=alpha)
        for row in tests:
            for claim in ("damage", "specificity"):
                stored = next(d for d in decisions.by_claim(claim) if d.category == row["ablated"])
                row[f"{claim}_decision"] = stored.outcome.value

    return CausalStatistics(
        target=target, ablated=ablated, evaluated=evaluated, set_sizes=dict(zip(ablated, sizes, strict=True)),
        rows={c: int(idx.size) for c, idx in zip(evaluated, members, strict=True)},
        tokens={c: int(tokens[idx].sum()) for c, idx in zip(evaluated, members, strict=True)},
        random_sets=r, replicates=int(resample.shape[0]), seed=seed, level=level, alpha=alpha,
        estimate=estimate, low=low, high=high, defined_replicates=defined, cell_significance=cell_sig,
        ratio_to_random=ratio_to_random, tests=tests, test=test, test_used=chosen, samples=stacked,
        decisions=decisions)


def _pvalues(observed: np.ndarray, random: np.ndarray, chosen: str, untested: np.ndarray) -> dict[str, Any]:
    """Both p-values of one statistic per category, and the one used: the parametric p where ``chosen`` is
    parametric and the normal model is not rejected, the empirical p otherwise (with the reason)."""
    empirical = np.where(untested, np.nan, empirical_p(observed, random))
    a = observed.shape[0]
    parametric, normality = np.full(a, np.nan), np.full(a, np.nan)
    if random.shape[-1] >= 3:
        try:
            parametric = np.where(untested, np.nan, t_tail_p(observed, random))
            normality = np.where(untested, np.nan, normality_p(random))
        except ImportError:
            if chosen == "parametric":
                raise SparcomError("the parametric test needs scipy: pip install 'sparcom[analysis]'") from None
    used, tests, notes = empirical.copy(), ["empirical"] * a, [""] * a
    if chosen == "parametric":
        for i in range(a):
            if untested[i]:
                continue
            if normality[i] < NORMALITY_LEVEL:
                notes[i] = (f"normality of the random sets rejected (Shapiro–Wilk p = {normality[i]:.2g}): "
                            "empirical p used")
            elif not np.isfinite(parametric[i]):
                notes[i] = "the random sets do not vary: empirical p used"
            else:
                used[i], tests[i] = parametric[i], "parametric"
    return {"p": used, "empirical": empirical, "parametric": parametric, "normality": normality, "test": tests,
            "note": notes}


def _test_fields(name: str, values: dict[str, Any], i: int) -> dict[str, Any]:
    return {f"{name}_test": values["test"][i], f"{name}_p_empirical": float(values["empirical"][i]),
            f"{name}_p_parametric": float(values["parametric"][i]),
            f"{name}_normality_p": float(values["normality"][i]), f"{name}_test_note": values["note"][i]}


def _with_excess(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the excess of damage and specificity over the random sets' mean (NaN without random sets)."""
    out = dict(stats)
    r = stats["damage_random"].shape[-1]
    with np.errstate(invalid="ignore"):
        out["damage_excess"] = stats["damage"] - (stats["damage_random"].mean(axis=-1) if r else np.nan)
        out["specificity_excess"] = stats["specificity"] - (stats["specificity_random"].mean(axis=-1) if r else np.nan)
    return out


def _z(observed: float, random: np.ndarray) -> float:
    if random.size < 2:
        return float("nan")
    std = float(random.std(ddof=1))
    return (observed - float(random.mean())) / std if std > 0 else float("nan")


__all__ = ["ALPHA", "LEVEL", "NORMALITY_LEVEL", "PARAMETRIC_MIN_SETS", "REPLICATES", "TESTS", "TEST_RULE",
           "VERDICTS", "VERDICT_RULE", "CausalStatistics", "causal_statistics", "choose_test", "contrasts", "empirical_p", "holm",
           "min_holm_p", "normality_p", "percentile_intervals", "pooled_cells", "random_sets_needed",
           "resample_indices", "resample_weights", "significance", "significant", "t_tail_p", "verdict",
           "verdict_label"]
