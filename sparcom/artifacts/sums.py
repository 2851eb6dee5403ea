"""Per-component activation means of a profile run, read from its exact float64 sums: the reference values of mean
ablation (:mod:`sparcom.causal.interventions`) and the mean |activation| of magnitude-matched controls.

A run records, for every kind at an activation site (dense and shared-expert neurons) and every category, Σ A and
Σ |A| over the category's counted tokens; for expert neurons, over the counted tokens routed to the expert (the
only tokens on which the expert computes A). A mean pools categories: Σ over categories of the sums divided by Σ of
the tokens (dense, shared) or of the routed tokens of each expert (expert neurons, ``expert/{cat}/{layer}``). An
expert no counted token was routed to has no mean; it is reported as 0 with ``tokens`` 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparcom.errors import SparcomError
from sparcom.kinds import count_key, kind_of, layers_of, sum_key, tokens_key

#: What to do about a run without activation sums (the end of every such refusal).
RE_PROFILE = ("re-run 'sparcom profile' with this sparcom (it records the activation sums beside the counts), "
              "or use --intervention zero")


@dataclass(frozen=True)
class ActivationMeans:
    """One kind's pooled activation statistics in one layer (arrays of the layer's component shape)."""

    kind: str
    layer: int
    mean: np.ndarray  # E[A] over the reference tokens (float64)
    mean_abs: np.ndarray  # E[|A|] over the same tokens (float64)
    tokens: np.ndarray  # the tokens each mean is over ([] dense; [E, 1] expert neurons), int64


def has_sums(run) -> bool:
    """Whether ``run`` (a :class:`~sparcom.artifacts.run.ProfileRun`) recorded activation sums."""
    return run.sums is not None


def require_sums(run, needed_by: str) -> None:
    """Refuse a run made before sparcom recorded activation sums, saying what needed them and what to do."""
    if not has_sums(run):
        raise SparcomError(f"{run.path}: the run has no activation sums (profiled by an older sparcom); "
                           f"{needed_by} needs them: {RE_PROFILE}")


def _denominator(run, kind: str, layer: int, categories: Sequence[str]) -> np.ndarray:
    if kind_of(kind).routed:  # expert neurons: the counted tokens routed to each expert
        routed = sum(run.counts[count_key("expert", c, layer)].astype(np.int64) for c in categories)
        return np.asarray(routed, dtype=np.int64)[:, None]
    return np.asarray(sum(int(run.counts[tokens_key(c)]) for c in categories), dtype=np.int64)


def activation_means(run, kind: str, layer: int, categories: Sequence[str] | None = None) -> ActivationMeans:
    """E[A] and E[|A|] of ``kind``'s components in ``layer``, pooled over ``categories`` (default: every category
    of the run) — the reference of mean ablation."""
    require_sums(run, f"the mean activation of {kind} components")
    categories = list(categories or run.categories)
    missing = [c for c in categories if sum_key(kind, c, layer) not in run.sums]
    if missing:
        raise SparcomError(f"{run.path}: no activation sums of {kind} components in layer {layer} for "
                           f"{', '.join(missing)}; {RE_PROFILE}")
    total = sum(run.sums[sum_key(kind, c, layer)] for c in categories)
    magnitude = sum(run.sums[sum_key(kind, c, layer, absolute=True)] for c in categories)
    tokens = _denominator(run, kind, layer, categories)
    safe = np.maximum(tokens, 1)
    return ActivationMeans(kind, layer, np.where(tokens > 0, total / safe, 0.0),
                           np.where(tokens > 0, magnitude / safe, 0.0), tokens)


def kind_means(run, kind: str, categories: Sequence[str] | None = None) -> dict[int, ActivationMeans]:
    """:func:`activation_means` of every layer that has ``kind`` counts."""
    return {layer: activation_means(run, kind, layer, categories) for layer in layers_of(run.counts, kind)}


def pooled_means(run, kinds: Sequence[str], needed_by: str) -> dict[tuple[str, int], np.ndarray]:
    """{(kind, layer): each component's mean activation pooled over every category of ``run``} for the ``kinds`` it
    counted — the values of mean ablation and of the attribution's mean replacement; refuses a run without sums
    in one line naming ``needed_by``."""
    require_sums(run, needed_by)
    return {(kind, layer): means.mean for kind in kinds for layer, means in kind_means(run, kind).items()}


def run_means(path, needed_by: str, kinds: Sequence[str] = ("neuron", "shared_neuron", "expert_neuron")
              ) -> dict[tuple[str, int], np.ndarray]:
    """:func:`pooled_means` of the profile run at ``path``."""
    from sparcom.artifacts.run import load_run

    return pooled_means(load_run(path), kinds, needed_by)


__all__ = ["RE_PROFILE", "ActivationMeans", "activation_means", "has_sums", "kind_means", "pooled_means",
           "require_sums", "run_means"]
