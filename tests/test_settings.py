"""The settings of every step: one declaration per field (flag, help, bounds or choices) drives the generic check
and the keyword form of the API. Each bound is checked at the bound and just past it; each choice is accepted
and a foreign value refused, with one line naming the flag."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sparcom.analysis.evidence import ValiditySettings
from sparcom.analysis.selection import DEFAULT_MIN_EFFECT, SelectionRule
from sparcom.analysis.settings import CompareSettings, EvaluateSettings, IdentifySettings, SweepSettings
from sparcom.causal.settings import CausalSettings
from sparcom.errors import SparcomError
from sparcom.examples.settings import ExamplesSettings
from sparcom.profile.settings import ProfileSettings
from sparcom.report.settings import ReportSettings
from sparcom.settings import Option, UnknownSetting, check, describe, options, resolve
from sparcom.tune.settings import TuneSettings

STEPS = [ProfileSettings, IdentifySettings, CompareSettings, EvaluateSettings, SweepSettings, CausalSettings,
         ExamplesSettings, ReportSettings, TuneSettings]


def bounded():
    """(settings class, option) for every option with bounds or choices, groups flattened."""
    return [(cls, flat) for cls in STEPS for flat in options(cls)
            if flat.option.low is not None or flat.option.high is not None or flat.option.choices]


def step_name(value):
    return value.__name__ if isinstance(value, type) else value.name


@pytest.mark.parametrize("cls", STEPS, ids=step_name)
def test_defaults_pass_and_every_public_name_is_unique(cls):
    settings = check(cls())
    assert resolve(cls, None, {}, "step") == settings
    names = [flat.name for flat in options(cls)]
    assert len(names) == len(set(names))
    flags = [flat.option.flag for flat in options(cls) if flat.option.cli]
    assert len(flags) == len(set(flags))
    assert set(describe(settings)) == set(names)


def _past(option: Option, bound: float, below: bool, integer: bool) -> float:
    """The nearest value on the wrong side of ``bound`` (the bound itself where it is excluded)."""
    excluded = option.open in (("low", "both") if below else ("high", "both"))
    if excluded:
        return bound
    if integer:
        return bound - 1 if below else bound + 1
    return math.nextafter(bound, -math.inf if below else math.inf)


def _inside(option: Option, bound: float, below: bool, integer: bool) -> float:
    excluded = option.open in (("low", "both") if below else ("high", "both"))
    if not excluded:
        return bound
    return (bound + 1 if below else bound - 1) if integer else math.nextafter(bound, math.inf if below else -math.inf)


@pytest.mark.parametrize(("cls", "flat"), bounded(), ids=lambda v: step_name(v))
def test_each_bound_and_choice_is_checked_by_the_one_validator(cls, flat):
    option = flat.option
    integer = (isinstance(flat.default, int) and not isinstance(flat.default, bool)) or (flat.default is None and \
        "int" in str(flat.field.type))
    for bound, below in ((option.low, True), (option.high, False)):
        if bound is None:
            continue
        assert getattr(_settings(cls, flat, _inside(option, bound, below, integer)), flat.path[0]) is not None
        with pytest.raises(SparcomError, match=f"^{option.label} must be"):
            _settings(cls, flat, _past(option, bound, below, integer))
    if option.choices:
        for choice in option.choices:
            value = (choice,) if "tuple" in str(flat.field.type) else choice
            _settings(cls, flat, value)
        # a selection rule checks its own name and contrast when it is made, in its own words
        pattern = "no-such-choice" if flat.path[0] == "rule" else f"^{option.label} must be one of .*'no-such-choice'"
        with pytest.raises(SparcomError, match=pattern):
            _settings(cls, flat, ("no-such-choice",) if "tuple" in str(flat.field.type) else "no-such-choice")


def _settings(cls, flat, value):
    base = {}
    if flat.name == "rule":
        base = {"epsilon": 0.5}  # rule threshold has no default ε
    return resolve(cls, None, {**base, flat.name: value}, cls.__name__)


def test_messages_say_the_interval():
    with pytest.raises(SparcomError, match=r"^--ci-level must be in \(0, 1\), got 1$"):
        resolve(IdentifySettings, None, {"ci_level": 1}, "identify")
    with pytest.raises(SparcomError, match=r"^--lora-dropout must be in \[0, 1\), got 1.0$"):
        TuneSettings(lora_dropout=1.0).check()
    with pytest.raises(SparcomError, match=r"^--lr must be above 0, got 0"):
        TuneSettings(lr=0.0).check()
    with pytest.raises(SparcomError, match="finite"):
        TuneSettings(lr=math.inf).check()
    with pytest.raises(SparcomError, match=r"^weight_decay must be at least 0, got -1"):
        TuneSettings(weight_decay=-1).check()  # a Python-only setting is named by its keyword


def test_rules_binding_fields_together():
    with pytest.raises(SparcomError, match="--exclude-profiled does not apply"):
        CausalSettings(folds=3, exclude_profiled=True).check()
    with pytest.raises(SparcomError, match="full fine-tuning has none"):
        TuneSettings(method="full", merge=False).check()
    with pytest.raises(SparcomError, match="--shard 4/4: K must be 0"):
        ProfileSettings(shard="4/4").check()
    with pytest.raises(SparcomError, match="at least 2 folds"):
        EvaluateSettings(validity=ValiditySettings(folds=1)).check()


def test_settings_by_name_public_field_and_older_names():
    assert resolve(CausalSettings, None, {"crossfit_folds": 4}, "ablate").folds == 4
    assert resolve(CausalSettings, None, {"folds": 4}, "ablate").folds == 4  # the field's own name
    assert resolve(CausalSettings, None, {"random_set_seed": 7}, "ablate").seed == 7
    assert resolve(ExamplesSettings, None, {"per_category": 3}, "examples").components_per_category == 3
    assert resolve(ReportSettings, None, {"cards_per_category": 2}, "report").cards_per_category == 2
    assert resolve(EvaluateSettings, None, {"validity_seed": 5}, "evaluate").validity.seed == 5
    assert resolve(TuneSettings, None, {"training_seed": 9}, "tune").seed == 9


def test_an_unknown_setting_is_one_clear_error():
    with pytest.raises(UnknownSetting, match=r"^ablate: unknown setting 'sed'; the settings of ablate are: .*seeds"):
        resolve(CausalSettings, None, {"sed": 1}, "ablate")
    with pytest.raises(TypeError):  # as for any unexpected keyword
        resolve(ProfileSettings, None, {"batchsize": 4}, "profile")
    with pytest.raises(UnknownSetting, match="settings must be a IdentifySettings or SelectionRule or "
                                             "ValiditySettings, got str 'test'; give single settings by name"):
        resolve(IdentifySettings, "test", {}, "identify")


def test_groups_take_the_step_defaults_and_rebuild_from_their_fields():
    identify = resolve(IdentifySettings, None, {}, "identify")
    assert identify.rule.name == "contrast" and SelectionRule().name == "percentile"  # the step's default rule
    test = resolve(IdentifySettings, None, {"rule": "test"}, "identify")
    assert test.rule.epsilon == DEFAULT_MIN_EFFECT  # the test rule's own ε, not the contrast's resolved one
    given = resolve(IdentifySettings, SelectionRule("lape", 0.02), {"epsilon": 0.03}, "identify")
    assert (given.rule.name, given.rule.epsilon) == ("lape", 0.03)
    merged = resolve(CausalSettings, CausalSettings(seeds=3), {"against": "mean", "crossfit_folds": 2}, "ablate")
    assert (merged.seeds, merged.rule.against, merged.rule.name, merged.folds) == (3, "mean", "contrast", 2)
    assert resolve(EvaluateSettings, None, {}, "evaluate").validity == ValiditySettings()
    assert "validity" not in {flat.name for flat in options(EvaluateSettings)}  # hidden: it always decodes


def test_every_settings_field_is_declared():
    """A field without a declaration would be neither checked nor an option: every field has one."""
    for cls in [*STEPS, ValiditySettings, SelectionRule]:
        for field in dataclasses.fields(cls):
            assert field.metadata, (cls.__name__, field.name)
