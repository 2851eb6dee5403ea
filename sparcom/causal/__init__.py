"""The causal check: reversible interventions on neurons, expert neurons and experts, teacher-forced NLL of the
reference responses, random control sets and their statistics (see docs/causal.md). Files are written by
:mod:`sparcom.report.causal`; ``sparcom.ablate`` does both."""

from sparcom.causal.baseline import random_like, random_sets
from sparcom.causal.check import causal_check
from sparcom.causal.interventions import EXPERT_REMOVAL, Ablation, AblationStats, ablate
from sparcom.causal.result import CausalResult, TargetResult
from sparcom.causal.settings import CausalSettings
from sparcom.causal.statistics import cell_statistics

__all__ = [
    "EXPERT_REMOVAL",
    "Ablation",
    "AblationStats",
    "CausalResult",
    "CausalSettings",
    "TargetResult",
    "ablate",
    "causal_check",
    "cell_statistics",
    "random_like",
    "random_sets",
]
