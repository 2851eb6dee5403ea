"""The causal check: reversible interventions on neurons, expert neurons and experts, teacher-forced NLL of the
reference responses, random control sets and their statistics (see docs/causal.md). Files are written by
:mod:`sparcom.report.causal`; ``sparcom.ablate`` does both."""

from sparcom.causal.check import causal_check
from sparcom.causal.interventions import EXPERT_REMOVAL, AblationStats, ablate
from sparcom.causal.result import CausalResult, TargetResult
from sparcom.causal.settings import CausalSettings
from sparcom.causal.statistics import significance
from sparcom.components import ComponentSet
from sparcom.random_sets import random_like, random_sets

#: The set :func:`ablate` deactivates, under its earlier name: a :class:`~sparcom.components.ComponentSet`.
Ablation = ComponentSet

__all__ = [
    "EXPERT_REMOVAL",
    "Ablation",
    "AblationStats",
    "CausalResult",
    "CausalSettings",
    "ComponentSet",
    "TargetResult",
    "ablate",
    "causal_check",
    "random_like",
    "random_sets",
    "significance",
]
