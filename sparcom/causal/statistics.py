"""Paired statistics of the causal check: ΔNLL cells, damage and specificity against random sets, bootstrap
intervals over rows, and the one decision per claim (:mod:`sparcom.causal.decisions`; the rules in docs/causal.md).

Every condition — the unablated model, each category's selected set S_c, each random set of S_c's shape — scores
the same rows, so conditions are compared row by row. The inputs are per-row summed NLL over the row's scored
tokens and the token counts, which are the same under every condition. A cell pools tokens within the evaluated
category: ΔNLL(c, c') = Σ_{i ∈ c'} (sums_S_c[i] − sums_none[i]) / Σ_{i ∈ c'} tokens[i].

Two kinds of uncertainty are reported:

- the decision's row-aware empirical p ranks the selected set among the R random sets of its shape with the row
  noise of the paired excess folded in ("is this set unusual among sets of its shape, for instructions like
  these?"); its smallest value is 1 / (1 + R); the plain rank p on these rows is kept beside it, descriptive;
- the bootstrap interval resamples the rows within each evaluated category, with the same resample for every
  condition (the pairing), and recomputes every number ("how precisely do these rows measure it?").

Everything here is pure numpy; nothing loads a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.artifacts.causal import ClaimDecision, TestRow
from sparcom.causal.decisions import RULE, decide_target, settled
from sparcom.errors import SparcomError
from sparcom.stats import ALPHA, LEVEL, empirical_p, min_holm_p, percentile_interval, random_sets_needed

REPLICATES = 1000
#: Bootstrap replicates handled at once (bounds memory: chunk × conditions × categories float64 values).
CHUNK = 250
#: What the per-cell numbers are (and are not): the decisions are the tests' (Holm over categories).
DESCRIPTIVE_NOTE = ("per cell, against the random sets of that cell, unadjusted for the many cells: descriptive "
                    "only; the decisions are each category's damage and specificity tests (tests[].decision)")


# ------------------------------------------------------------------------------------------- per-cell description


def cell_statistics(observed: np.ndarray, random: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell of ``observed`` [A, C] against ``random`` [A, N, C]: mean, std, min, max, excess, z and the
    empirical p of the cell alone (descriptive: see :data:`DESCRIPTIVE_NOTE`).

    ``p = (1 + #{random ≥ observed}) / (1 + N)``; ``z = (observed − mean) / std`` with the sample standard deviation
    (ddof 1), NaN when N < 2 or std = 0.
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
    p = empirical_p(observed, np.moveaxis(random, 1, -1))
    return {"mean": mean, "std": std, "min": random.min(axis=1), "max": random.max(axis=1),
            "excess": observed - mean, "z": z, "p": p}


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


# ------------------------------------------------------------------------------------------- result


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
    #: Per cell against that cell's random sets (:func:`cell_statistics`): descriptive, not a decision.
    cells: dict[str, np.ndarray]
    ratio_to_random: np.ndarray  # [A, C] ΔNLL / random mean (NaN where the random mean ≤ 0)
    #: One typed row per tested (or untestable) category, each with its stored decision.
    tests: list[TestRow] = field(default_factory=list)
    #: Critical role and specificity over the categories (counted once from the stored category decisions).
    claims: dict[str, ClaimDecision] = field(default_factory=dict)
    #: The bootstrap replicates of every statistic with an interval ([B, A, C] or [B, A]), for further intervals.
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    #: The random sets the check planned, when it stopped after ``random_sets`` because no further draw could
    #: change a decision (None: it ran them all).
    planned_random_sets: int | None = None

    @property
    def delta(self) -> np.ndarray:
        return self.estimate["delta"]

    @property
    def tested(self) -> int:
        """How many categories were tested (the size of the Holm family)."""
        return sum(1 for t in self.tests if t.tested)

    def random_sets_needed(self) -> int | None:
        return random_sets_needed(self.tested, self.alpha) if self.tested else None

    @property
    def decided_on(self) -> int:
        """The random sets the decisions are judged at: the planned ones (a check stopped once settled)."""
        return self.random_sets if self.planned_random_sets is None else self.planned_random_sets

    def summary(self) -> dict[str, Any]:
        """JSON-ready: matrices as nested lists, one entry per tested category, the rules in words."""
        sig = self.cells
        tested = self.tested

        def interval(name: str) -> dict[str, Any]:
            return {"estimate": _jsonable(self.estimate[name]), "low": _jsonable(self.low[name]),
                    "high": _jsonable(self.high[name])}

        return {
            "target": self.target, "ablated": self.ablated, "evaluated": self.evaluated,
            "set_sizes": self.set_sizes, "rows": self.rows, "tokens": self.tokens,
            "random_sets": self.random_sets,
            **({"planned_random_sets": self.planned_random_sets} if self.planned_random_sets is not None else {}),
            "bootstrap": {"replicates": self.replicates, "seed": self.seed, "level": self.level,
                          "scheme": "rows resampled with replacement within each evaluated category, the same "
                                    "resample for every condition; percentile intervals"},
            "delta_nll": interval("delta"), "excess_over_random": interval("excess"),
            "normalised": {"random_mean": _jsonable(sig["mean"]), "random_std": _jsonable(sig["std"]),
                           "ratio_to_random_mean": _jsonable(self.ratio_to_random)},
            "tests": [t.to_json() for t in self.tests],
            "power": {"alpha": self.alpha, "tests": tested,
                      "min_p_holm": _jsonable(min_holm_p(self.decided_on, tested)),
                      "random_sets_needed": self.random_sets_needed()},
            "claims": {name: claim.to_json() for name, claim in self.claims.items()},
            "rule": RULE,
        }

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """CSV rows by file stem: one row per cell, one row per tested category."""
        sig = self.cells
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
        tests = [{"target": self.target, **t.table_row()} for t in self.tests]
        return {name: rows for name, rows in {"delta_nll_paired": cells, "specificity_tests": tests}.items() if rows}

    def matrices(self) -> dict[str, list[dict[str, Any]]]:
        """Wide matrices normalised per cell by the random sets of that cell (rows: ablated, columns: evaluated)."""
        sig = self.cells
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


@dataclass(frozen=True)
class PairedDesign:
    """The checked inputs of :func:`causal_statistics`: every condition scores the same rows."""

    diff: np.ndarray  # [A, 1 + R, n] per-row summed ΔNLL of S_c and of each random set
    tokens: np.ndarray  # [n] float64
    labels: list[str]
    ablated: list[str]
    evaluated: list[str]
    members: list[np.ndarray]
    sizes: list[int | None]
    own: np.ndarray  # [A] the evaluated column of each ablated category, −1 when absent

    @property
    def random_sets(self) -> int:
        return self.diff.shape[1] - 1

    def paired_rows(self) -> np.ndarray:
        """[A, n] per-row ΔNLL of S_c minus the random sets' mean on that row (NaN without random sets)."""
        if self.random_sets == 0:
            return np.full((self.diff.shape[0], self.diff.shape[2]), np.nan)
        return self.diff[:, 0] - self.diff[:, 1:].mean(axis=1)


def paired_design(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes) -> PairedDesign:
    """Check the shapes and values of :func:`causal_statistics`' inputs and pair every condition with the rows."""
    base = np.asarray(base, dtype=np.float64)
    selected = np.asarray(selected, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    tokens = np.asarray(tokens)
    labels, ablated = list(row_categories), list(ablated)
    n, a = base.shape[0], len(ablated)
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
    sizes = list(set_sizes) if set_sizes is not None else [None] * a
    if len(sizes) != a:
        raise SparcomError(f"causal statistics: {len(sizes)} set sizes for {a} ablated categories")
    own = np.array([evaluated.index(c) if c in evaluated else -1 for c in ablated], dtype=np.int64)
    diff = np.concatenate([selected[:, None, :], random], axis=1) - base[None, None, :]
    return PairedDesign(diff, tokens.astype(np.float64), labels, ablated, evaluated,
                        category_members(labels, evaluated), sizes, own)


#: The statistics given with bootstrap intervals.
INTERVAL_STATISTICS = ("delta", "excess", "damage", "damage_excess", "specificity", "specificity_excess",
                       "scaled_specificity")


@dataclass(frozen=True)
class Intervals:
    """Point estimates, percentile intervals and replicates of every statistic in :data:`INTERVAL_STATISTICS`."""

    estimate: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    defined: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]
    replicates: int


def bootstrap_intervals(design: PairedDesign, point: dict[str, np.ndarray], resample: np.ndarray,
                        level: float) -> Intervals:
    """Recompute every statistic on each row resample (the same resample for every condition) in chunks."""
    n = design.diff.shape[-1]
    samples: dict[str, list[np.ndarray]] = {k: [] for k in INTERVAL_STATISTICS}
    for start in range(0, resample.shape[0], CHUNK):
        weights = resample_weights(resample[start:start + CHUNK], n)
        rep = _with_excess(contrasts(pooled_cells(design.diff, design.tokens, design.members, weights), design.own))
        for k in INTERVAL_STATISTICS:
            samples[k].append(rep[k])
    stacked = {k: np.concatenate(v, axis=0) for k, v in samples.items()}
    estimate = {k: np.asarray(v) for k, v in _with_excess(point).items() if k in INTERVAL_STATISTICS}
    low, high, defined = {}, {}, {}
    for k in INTERVAL_STATISTICS:
        low[k], high[k] = percentile_interval(stacked[k], level)
        defined[k] = np.isfinite(stacked[k]).sum(axis=0)
    return Intervals(estimate, low, high, defined, stacked, int(resample.shape[0]))


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
    planned: int | None = None,
) -> CausalStatistics:
    """All statistics of one target from per-row summed NLL.

    ``base`` [n]: unablated; ``selected`` [A, n]: with S_c deactivated, one row per ``ablated`` category;
    ``random`` [A, R, n]: with each random set of S_c's shape; ``tokens`` [n]: scored tokens per row (the same under
    every condition); ``row_categories`` [n]; ``evaluated``: the columns (default: the ablated categories present,
    then the others in order of appearance; rows of other categories are ignored). ``set_sizes`` [A]: a category
    with size 0 is not tested. ``resample`` [B, n] replaces the seeded bootstrap (for checks). ``planned``: the
    random sets a check planned when it stopped after R of them, settled (:func:`settled_after`). The decisions are
    :func:`sparcom.causal.decisions.decide_target`'s.
    """
    design = paired_design(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes)
    cells = pooled_cells(design.diff, design.tokens, design.members)  # [A, 1 + R, C]
    point = contrasts(cells, design.own)
    described = cell_statistics(point["delta"], cells[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_to_random = np.where(described["mean"] > 0, point["delta"] / described["mean"], np.nan)
    labels = design.labels
    resample = resample_indices(labels, replicates, seed) if resample is None else check_resample(resample, labels)
    intervals = bootstrap_intervals(design, point, resample, level)
    planned = None if planned == design.random_sets else planned
    tests, claims = decide_target(design.ablated, design.sizes, design.own, point, design.paired_rows(),
                                  design.tokens, design.members, intervals, alpha, planned)
    pairs = list(zip(design.evaluated, design.members, strict=True))
    return CausalStatistics(
        target=target, ablated=design.ablated, evaluated=design.evaluated,
        set_sizes=dict(zip(design.ablated, design.sizes, strict=True)),
        rows={c: int(idx.size) for c, idx in pairs}, tokens={c: int(design.tokens[idx].sum()) for c, idx in pairs},
        random_sets=design.random_sets, replicates=intervals.replicates, seed=seed, level=level, alpha=alpha,
        estimate=intervals.estimate, low=intervals.low, high=intervals.high, defined_replicates=intervals.defined,
        cells=described, ratio_to_random=ratio_to_random, tests=tests, claims=claims, samples=intervals.samples,
        planned_random_sets=planned)


def _decision_inputs(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes
                     ) -> tuple[PairedDesign, dict[str, np.ndarray]]:
    """The checked design and the point contrasts the decisions read (no bootstrap)."""
    design = paired_design(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes)
    return design, contrasts(pooled_cells(design.diff, design.tokens, design.members), design.own)


def decide(base: np.ndarray, selected: np.ndarray, random: np.ndarray, tokens: np.ndarray,
           row_categories: Sequence[str], ablated: Sequence[str], evaluated: Sequence[str] | None = None, *,
           set_sizes: Sequence[int | None] | None = None,
           alpha: float = ALPHA, planned: int | None = None) -> tuple[list[TestRow], dict[str, ClaimDecision]]:
    """The decisions of :func:`causal_statistics` alone (no bootstrap intervals: their bounds are NaN), from the same
    inputs; the calibration benchmark and the power tests run this, the code the causal check runs."""
    design, point = _decision_inputs(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes)
    return decide_target(design.ablated, design.sizes, design.own, point, design.paired_rows(), design.tokens,
                         design.members, None, alpha, planned)


def settled_after(base: np.ndarray, selected: np.ndarray, random: np.ndarray, tokens: np.ndarray,
                  row_categories: Sequence[str], ablated: Sequence[str], evaluated: Sequence[str] | None = None, *,
                  planned: int, set_sizes: Sequence[int | None] | None = None, alpha: float = ALPHA) -> bool:
    """Whether the first R random sets (``random`` [A, R, n]) already fix every decision ``planned`` random sets
    would make (:func:`sparcom.causal.decisions.settled`): the causal check's stopping rule, from the same inputs
    as :func:`decide`."""
    design, point = _decision_inputs(base, selected, random, tokens, row_categories, ablated, evaluated, set_sizes)
    return settled(point, design.paired_rows(), design.tokens, design.members, design.own, design.sizes, planned,
                   alpha)


def _with_excess(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the excess of damage and specificity over the random sets' mean (NaN without random sets)."""
    out = dict(stats)
    r = stats["damage_random"].shape[-1]
    with np.errstate(invalid="ignore"):
        out["damage_excess"] = stats["damage"] - (stats["damage_random"].mean(axis=-1) if r else np.nan)
        out["specificity_excess"] = stats["specificity"] - (stats["specificity_random"].mean(axis=-1) if r else np.nan)
    return out


__all__ = ["CHUNK", "DESCRIPTIVE_NOTE", "INTERVAL_STATISTICS", "REPLICATES", "CausalStatistics", "Intervals",
           "PairedDesign", "bootstrap_intervals", "category_members", "causal_statistics", "cell_statistics",
           "check_resample", "contrasts", "decide", "paired_design", "pooled_cells", "resample_indices", "resample_weights",
           "settled_after"]
