"""Every public name of ``sparcom`` keeps its documented kind whatever was imported or used before it.

Importing a submodule makes Python set the parent's attribute (``import sparcom.report.html`` sets
``sparcom.report``), which once turned the function ``sparcom.report`` into the subpackage after any use of
``sparcom.identify``. Each order runs in a fresh interpreter, since what was imported before is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import sparcom

#: The documented kind of every public name (the table in sparcom/__init__.py's docstring and README).
KINDS = {
    **dict.fromkeys(["profile", "load_run", "merge_runs", "frequencies", "identify", "evaluate", "sweep", "compare",
                     "ablate", "record_examples", "report", "tune", "merge_adapter", "build_moe", "load_model",
                     "wrap_model", "model_sites", "load_selection", "attribute", "load_attribution"], "function"),
    **dict.fromkeys(["ProfileSettings", "IdentifySettings", "CompareSettings", "EvaluateSettings", "SweepSettings",
                     "ValiditySettings", "SelectionRule", "CausalSettings", "ExamplesSettings", "ReportSettings",
                     "TuneSettings", "AttributionSettings", "AttributionRun", "ProfileRun", "IdentifyResult", "CompareResult", "EvaluateResult", "RuleStudy",
                     "ValidityResult", "Selection", "CausalResult", "ExamplesResult", "TuneResult", "SparcomError"],
                    "class"),
    "__version__": "str",
}

#: In the child: report the kind of every public name after each step of an order (a step uses a name, or
#: imports a submodule), so a name that changes kind at any point is seen.
PROBE = textwrap.dedent("""
    import importlib, inspect, json, pkgutil, sys, types
    import sparcom

    def kind(value):
        if isinstance(value, types.ModuleType):
            return "module"
        if inspect.isclass(value):
            return "class"
        if inspect.isfunction(value):
            return "function"
        return type(value).__name__

    def kinds():
        return {name: kind(getattr(sparcom, name)) for name in sparcom.__all__}

    steps, seen = json.loads(sys.argv[1]), []
    for step in steps:
        if step == "*submodules":
            for info in pkgutil.walk_packages(sparcom.__path__, "sparcom."):
                if not info.name.startswith(("sparcom.cli", "sparcom.__main__")):
                    importlib.import_module(info.name)
        elif step.startswith("sparcom."):
            importlib.import_module(step)
        else:
            getattr(sparcom, step)
        seen.append(kinds())
    print(json.dumps(seen))
""")

NAMES = sorted(sparcom.__all__)
SHADOWED = ["sparcom.profile.runner", "sparcom.report.html", "sparcom.tune.trainer", "sparcom.api"]
ORDERS = {
    "each name in turn": NAMES,
    "each name in reverse": NAMES[::-1],
    "every submodule first": ["*submodules", *NAMES],
    "the subpackages that share names, then their names": [*SHADOWED, "report", "tune", "profile", "identify",
                                                           "report"],
}


def test_the_table_covers_every_public_name():
    assert set(KINDS) == set(sparcom.__all__)


@pytest.mark.parametrize("order", ORDERS, ids=list(ORDERS))
def test_every_public_name_keeps_its_kind_in_a_fresh_interpreter(order):
    steps = ORDERS[order]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(steps)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for step, kinds in zip(steps, json.loads(done.stdout), strict=True):
        wrong = {name: kind for name, kind in kinds.items() if kind != KINDS[name]}
        assert not wrong, f"after {step!r}: {wrong}"


def test_report_is_callable_after_identify_was_used():
    """The reported bug, as a user meets it: the function runs (and fails on its input, not on its kind)."""
    code = ("import sparcom; sparcom.identify\n"
            "try:\n    sparcom.report(['/no/such/study'], '/tmp/never.html')\n"
            "except sparcom.SparcomError as exc:\n    print('SparcomError', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SparcomError"), done.stdout


def test_every_public_function_lives_in_the_api():
    for name, kind in KINDS.items():
        if kind == "function":
            assert getattr(sparcom, name).__module__ == "sparcom.api", name
            assert getattr(sparcom, name) is getattr(sparcom.api, name)


def test_submodules_stay_importable_with_from():
    from sparcom.profile import runner
    from sparcom.report import html
    from sparcom.tune import trainer

    assert html.__name__ == "sparcom.report.html" and trainer.__name__ == "sparcom.tune.trainer"
    assert runner.Profiler.__module__ == "sparcom.profile.runner"
    assert callable(sparcom.report) and callable(sparcom.tune) and callable(sparcom.profile)
