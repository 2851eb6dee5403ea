"""The causal check: reversible interventions on neurons, expert neurons and experts, teacher-forced NLL of the
reference responses, random control sets and their statistics (see docs/causal.md). Files are written by
:mod:`sparcom.report.causal`; ``sparcom.ablate`` does both.

Names are imported on first use, so the settings (:mod:`sparcom.causal.settings`) load without torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "EXPERT_REMOVAL": "sparcom.causal.settings",
    "Ablation": "sparcom.causal.interventions",
    "AblationStats": "sparcom.causal.interventions",
    "CausalResult": "sparcom.causal.result",
    "CausalSettings": "sparcom.causal.settings",
    "TargetResult": "sparcom.causal.result",
    "ablate": "sparcom.causal.interventions",
    "causal_check": "sparcom.causal.check",
    "random_like": "sparcom.causal.baseline",
    "random_sets": "sparcom.causal.baseline",
    "significance": "sparcom.causal.statistics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparcom.causal' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
