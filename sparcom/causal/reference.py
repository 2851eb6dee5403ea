"""What the interventions other than ``zero`` replace activations with, read once per check.

``mean`` needs each selected kind's mean activation per layer, pooled over every category of the profile run the
selection was made from (its exact activation sums, :mod:`sparcom.artifacts.sums`): read before any model loads,
so a run without sums is refused at once. ``resample`` needs every scored row's donor
(:class:`~sparcom.causal.resample.DonorPlan`), drawn once the rows are encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparcom.artifacts.run import ProfileRun
from sparcom.artifacts.sums import pooled_means
from sparcom.causal.crossfit import FoldSelections
from sparcom.causal.interventions import InterventionReference
from sparcom.causal.nll import ScoredExample
from sparcom.causal.resample import DonorPlan
from sparcom.causal.settings import TARGETS, CausalSettings
from sparcom.errors import SparcomError

#: Kinds whose activations the interventions replace (experts are removed from the routing instead).
NEURON_KINDS: tuple[str, ...] = ("neuron", "shared_neuron", "expert_neuron")


def _kinds(selection, settings: CausalSettings) -> list[str]:
    """The neuron kinds the check deactivates (those of its targets that the selection holds)."""
    names = settings.targets or tuple(TARGETS)
    wanted = {k for name in names for k in TARGETS.get(name, (name,))}
    return [k for k in NEURON_KINDS if k in wanted and k in selection.kinds]


def source_run(selection, crossfit: FoldSelections | None) -> ProfileRun:
    """The profile run the selection was made from (cross-fitting: the run given)."""
    if crossfit is not None:
        return crossfit.run
    return selection.source_run("--intervention mean sets activations to their means over the profile run",
                                "--intervention zero")


def read_means(selection, settings: CausalSettings, crossfit: FoldSelections | None
               ) -> dict[tuple[str, int], np.ndarray]:
    """Per (kind, layer) of the deactivated neuron kinds: the mean activation (empty unless ``mean`` is asked
    for); refuses a run without activation sums and a resample of expert neurons, before any model loads."""
    kinds = _kinds(selection, settings)
    if "resample" in settings.interventions and "expert_neuron" in kinds:
        raise SparcomError("--intervention resample cannot deactivate expert neurons (a donor token is not routed to "
                           "the same expert); use --targets neuron,shared_neuron or --intervention zero,mean")
    if "mean" not in settings.interventions or not kinds:
        return {}
    return pooled_means(source_run(selection, crossfit), kinds, "--intervention mean")


def intervention_reference(means: dict[tuple[str, int], np.ndarray], examples: Sequence[ScoredExample],
                           settings: CausalSettings, pad_id: int) -> InterventionReference:
    """The check's reference: the means, and (``resample``) every scored row's donor."""
    donors = DonorPlan.draw(examples, settings.seed, pad_id) if "resample" in settings.interventions else None
    return InterventionReference(means, donors)


__all__ = ["NEURON_KINDS", "intervention_reference", "read_means", "source_run"]
