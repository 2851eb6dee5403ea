"""sparcom: find, compare and causally test the instruction-specific neurons and experts of language models.

The public API (every ``sparcom`` command wraps one of these):

- ``profile(model, data, out, settings)`` → :class:`ProfileRun` (counts + manifest); ``load_run``, ``merge_runs``;
- ``frequencies(run, kind)`` → p[K, N] with its layout;
- ``identify(run, rule, epsilon, out=...)`` → :class:`IdentifyResult` (with validity evidence on grouped runs);
  ``evaluate(selection, other_run)`` → :class:`EvaluateResult`; ``sweep(run)`` → :class:`RuleStudy`;
  ``compare(base, tuned, ...)``;
- ``ablate(model, selection, data, seeds=..., out=...)`` → :class:`CausalResult`;
- ``report(study_dirs, out_html)``, ``record_examples(model, selection, data)``;
- ``tune(base, data, out, settings)``; ``build_moe(model, out, settings)`` (a MoE from a dense Llama);
  ``load_model``, ``wrap_model``, ``load_selection``.

Names are imported on first use, so ``import sparcom`` (and the CLI) starts fast and light modules such as
:mod:`sparcom.kinds` or :mod:`sparcom.analysis` never pull in torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import sparcom.profile as _profile_package  # noqa: F401  (the subpackage first, so the function below keeps the name)

__version__ = "0.1.0"


def profile(model, data, out, settings=None, **options):
    """Profile ``model`` on ``data`` into the run directory ``out`` (see :func:`sparcom.profile.runner.profile`:
    options ``dtype``, ``device``, ``device_map``, ``resume``, ``overwrite``, ``progress``, ``on_batch_end``)."""
    from sparcom.profile.runner import profile as run_profile

    return run_profile(model, data, out, settings, **options)


_EXPORTS: dict[str, str] = {
    "ProfileSettings": "sparcom.profile.runner",
    "wrap_model": "sparcom.profile.runner",
    "ProfileRun": "sparcom.artifacts.run",
    "load_run": "sparcom.artifacts.run",
    "merge_runs": "sparcom.artifacts.run",
    "frequencies": "sparcom.api",
    "identify": "sparcom.api",
    "evaluate": "sparcom.api",
    "sweep": "sparcom.api",
    "compare": "sparcom.api",
    "ablate": "sparcom.api",
    "report": "sparcom.api",
    "build_moe": "sparcom.api",
    "record_examples": "sparcom.examples.recording",
    "IdentifyResult": "sparcom.analysis.pipeline",
    "CompareResult": "sparcom.analysis.pipeline",
    "EvaluateResult": "sparcom.analysis.evaluation",
    "RuleStudy": "sparcom.analysis.rule_study",
    "ValidityResult": "sparcom.analysis.validity",
    "SelectionRule": "sparcom.analysis.selection",
    "Selection": "sparcom.artifacts.selection",
    "load_selection": "sparcom.artifacts.selection",
    "CausalSettings": "sparcom.causal.settings",
    "CausalResult": "sparcom.causal.result",
    "tune": "sparcom.tune.trainer",
    "TuneSettings": "sparcom.tune.trainer",
    "load_model": "sparcom.zoo.catalog",
    "model_sites": "sparcom.models.sites",
    "SparcomError": "sparcom.errors",
}

__all__ = sorted([*_EXPORTS, "__version__", "profile"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparcom' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
