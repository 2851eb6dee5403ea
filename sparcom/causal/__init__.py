"""The causal check: reversible interventions on neurons, expert neurons and experts, teacher-forced NLL of the
reference responses, random control sets and the ``sparcom ablate`` pipeline (see docs/causal.md)."""

from sparcom.causal.baseline import random_like, random_sets
from sparcom.causal.interventions import EXPERT_REMOVAL, Ablation, AblationStats, ablate
from sparcom.causal.run import CausalResult, CausalSettings, causal_check, run_ablate, significance, write_causal

__all__ = [
    "EXPERT_REMOVAL",
    "Ablation",
    "AblationStats",
    "CausalResult",
    "CausalSettings",
    "ablate",
    "causal_check",
    "random_like",
    "random_sets",
    "run_ablate",
    "significance",
    "write_causal",
]
