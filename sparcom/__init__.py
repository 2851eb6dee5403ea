"""sparcom: find, compare and causally test the instruction-specific neurons and experts of language models.

The public API: every function lives in :mod:`sparcom.api` (and every ``sparcom`` command wraps one of them).
Each step is ``step(inputs, settings=None, *, out=..., overwrite=False, <runtime options>, **settings_by_name)``
with one settings dataclass per step:

- ``profile(model, data, out, ProfileSettings)`` → :class:`ProfileRun` (counts + manifest); ``load_run``,
  ``merge_runs``;
- ``frequencies(run, kind)`` → p[K, N] with its layout;
- ``attribute(model, data, out, AttributionSettings)`` → :class:`AttributionRun` (each neuron's estimated effect of
  its deactivation on the reference responses' NLL, what ``identify`` with rule ``attribution`` selects on);
  ``load_attribution``;
- ``identify(run, IdentifySettings, out=...)`` → :class:`IdentifyResult` (with validity evidence on grouped runs);
  ``evaluate(selection, other_run, EvaluateSettings)``; ``sweep(run, SweepSettings)`` → :class:`RuleStudy`;
  ``compare(base, tuned, CompareSettings)``;
- ``ablate(model, selection, data, CausalSettings, out=...)`` → :class:`CausalResult`;
- ``record_examples(model, selection, data, ExamplesSettings)``; ``report(study_dirs, out_html, ReportSettings)``;
- ``tune(base, data, out, TuneSettings)``, ``merge_adapter(base, adapter, out)``; ``build_moe(model, out, MoefySettings)`` (a MoE from a dense Llama);
  ``load_model``, ``wrap_model``, ``model_sites``, ``load_selection``.

Names are imported on first use, so ``import sparcom`` (and the CLI) starts fast and light modules such as
:mod:`sparcom.kinds` or :mod:`sparcom.analysis` never pull in torch. A public name is always what this table says,
whatever was imported before it: ``sparcom.profile``, ``sparcom.tune`` and ``sparcom.report`` are functions even
though subpackages of the same names exist (importing a submodule would otherwise rebind the name, see
:class:`_PublicNames`). Import those subpackages' modules with ``from``: ``from sparcom.report import html``
(``import sparcom.report.html as html`` looks the module up through the attribute, which is the function).
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the steps and the files they read (sparcom/api.py is every public function's home)
    **dict.fromkeys(["profile", "load_run", "merge_runs", "frequencies", "identify", "evaluate", "sweep", "compare",
                     "ablate", "record_examples", "report", "tune", "merge_adapter", "build_moe", "load_model", "wrap_model",
                     "model_sites", "load_selection", "attribute", "load_attribution"], "sparcom.api"),
    # the settings of each step
    "ProfileSettings": "sparcom.profile.settings",
    "IdentifySettings": "sparcom.analysis.settings",
    "CompareSettings": "sparcom.analysis.settings",
    "EvaluateSettings": "sparcom.analysis.settings",
    "SweepSettings": "sparcom.analysis.settings",
    "ValiditySettings": "sparcom.analysis.evidence",
    "SelectionRule": "sparcom.analysis.selection",
    "CausalSettings": "sparcom.causal.settings",
    "ExamplesSettings": "sparcom.examples.settings",
    "ReportSettings": "sparcom.report.settings",
    "TuneSettings": "sparcom.tune.settings",
    "AttributionSettings": "sparcom.attribution.settings",
    # the results
    "ProfileRun": "sparcom.artifacts.run",
    "AttributionRun": "sparcom.artifacts.attribution",
    "IdentifyResult": "sparcom.analysis.pipeline",
    "CompareResult": "sparcom.analysis.pipeline",
    "EvaluateResult": "sparcom.analysis.evaluation",
    "RuleStudy": "sparcom.analysis.rule_study",
    "ValidityResult": "sparcom.analysis.validity",
    "Selection": "sparcom.artifacts.selection",
    "CausalResult": "sparcom.causal.result",
    "ExamplesResult": "sparcom.examples.recording",
    "TuneResult": "sparcom.tune.trainer",
    "SparcomError": "sparcom.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparcom' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _PublicNames(types.ModuleType):
    """The type of the ``sparcom`` module: importing a submodule such as ``sparcom.report.html`` makes Python set
    the attribute ``sparcom.report`` to the subpackage, which would replace the public function of that name. This
    type keeps every public name for what :data:`_EXPORTS` says; submodules stay reachable through imports
    (``from sparcom.report import html``, ``import sparcom.report.html as html``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PublicNames
