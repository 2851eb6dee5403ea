"""The causal check: reversible interventions (zero, mean, resample) on neurons, expert neurons and experts, teacher-forced NLL of the
reference responses, random control sets and their statistics (see docs/causal.md). Files are written by
:mod:`sparcom.report.causal`; ``sparcom.ablate`` does both.

Names are imported on first use, so the settings (:mod:`sparcom.causal.settings`) load without torch.
"""

from importlib import import_module
from typing import Any

#: Public name → (module, attribute). ``Ablation`` is the set :func:`ablate` deactivates under its earlier name:
#: a :class:`~sparcom.components.ComponentSet`.
_EXPORTS: dict[str, tuple[str, str]] = {
    "EXPERT_REMOVAL": ("sparcom.causal.settings", "EXPERT_REMOVAL"),
    "Ablation": ("sparcom.components", "ComponentSet"),
    "AblationStats": ("sparcom.causal.interventions", "AblationStats"),
    "CausalResult": ("sparcom.causal.result", "CausalResult"),
    "CausalSettings": ("sparcom.causal.settings", "CausalSettings"),
    "ComponentSet": ("sparcom.components", "ComponentSet"),
    "TargetResult": ("sparcom.causal.result", "TargetResult"),
    "ablate": ("sparcom.causal.interventions", "ablate"),
    "mean_ablate": ("sparcom.causal.interventions", "mean_ablate"),
    "resample_ablate": ("sparcom.causal.interventions", "resample_ablate"),
    "InterventionReference": ("sparcom.causal.interventions", "InterventionReference"),
    "causal_check": ("sparcom.causal.check", "causal_check"),
    "random_like": ("sparcom.random_sets", "random_like"),
    "random_sets": ("sparcom.random_sets", "random_sets"),
    "cell_statistics": ("sparcom.causal.statistics", "cell_statistics"),
    "amplify": ("sparcom.causal.interventions", "amplify"),
    "sufficiency_pilot": ("sparcom.causal.sufficiency", "sufficiency_pilot"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sparcom.causal' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value
