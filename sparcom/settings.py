"""Settings of the steps, declared once: each field of a step's settings dataclass carries its public name (the
CLI flag, and the same name as a Python keyword), its help, and its bounds or choices.

From that one declaration come the checks (:func:`check`, one generic validator, so no step writes its own
"must be at least" lines), the keyword form of the API (:func:`resolve`: ``sparcom.ablate(..., seeds=20)``) and
the CLI's options (:mod:`sparcom.cli.options`). A field that holds another settings dataclass (:func:`group`, for
example a selection rule inside the identify settings) is flattened: its fields are options of the outer step.

This module imports nothing heavy, so a command checks its arguments before torch is imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sparcom.errors import SparcomError

OPTION = "sparcom.option"
#: "No CLI default of its own": the CLI starts from the field's default.
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
GROUP = "sparcom.group"


class UnknownSetting(SparcomError, TypeError):
    """A keyword that is not a setting of the step (a TypeError too, as for any unexpected keyword)."""


@dataclass(frozen=True)
class Option:
    """How one field is named, explained and bounded; the CLI shows the same facts."""

    flag: str | None  # "--batch-size", or "--plots/--no-plots" for a switch with both spellings; None: Python only
    help: str
    low: float | None = None  # the smallest allowed value
    high: float | None = None  # the largest allowed value
    open: str = ""  # which bounds are excluded: "low", "high" or "both" (ε in (0, 1]: low=0, high=1, open="low")
    choices: tuple[str, ...] | None = None  # a str field, or every item of a tuple field
    cli_type: Any = None  # what the CLI parses, when the field holds something else (a comma list → a tuple)
    cli_default: Any = UNSET  # the CLI's default, when the field's default is not a CLI value
    parse: Callable[[Any], Any] | None = None  # the CLI value → the field's value
    aliases: tuple[str, ...] = ()  # older keyword names still accepted by the API
    keyword: str | None = None  # the name of a Python-only setting

    @property
    def cli(self) -> bool:
        return self.flag is not None

    @property
    def name(self) -> str:
        """The public name: the flag without dashes (``--batch-size`` → ``batch_size``), also the API keyword."""
        if self.flag is None:
            return str(self.keyword)
        return self.flag.split("/")[0].removeprefix("--").replace("-", "_")

    @property
    def label(self) -> str:
        """How messages name the setting: its flag, or its keyword when it has no flag."""
        return self.flag.split("/")[0] if self.flag is not None else str(self.keyword)

    def check(self, value: Any) -> None:
        if value is None:
            return  # None is every optional field's "not given" (the field's type says whether it may be None)
        for item in value if isinstance(value, tuple | list) and self.choices else (value,):
            if self.choices is not None and item not in self.choices:
                raise SparcomError(f"{self.label} must be one of {', '.join(self.choices)}, got {item!r}")
        if (self.low is None and self.high is None) or isinstance(value, (str, tuple, list, bool)):
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise SparcomError(f"{self.label} must be a finite number, got {value}")
        low_open, high_open = self.open in ("low", "both"), self.open in ("high", "both")
        low_ok = self.low is None or (value > self.low if low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if high_open else value <= self.high)
        if low_ok and high_ok:
            return
        if self.low is not None and self.high is not None:
            interval = f"{'(' if low_open else '['}{self.low:g}, {self.high:g}{')' if high_open else ']'}"
            raise SparcomError(f"{self.label} must be in {interval}, got {value}")
        if self.low is not None:
            raise SparcomError(f"{self.label} must be {'above' if low_open else 'at least'} {self.low:g}, got {value}")
        raise SparcomError(f"{self.label} must be {'below' if high_open else 'at most'} {self.high:g}, got {value}")


@dataclass(frozen=True)
class Group:
    """A field that holds another settings dataclass, built with ``defaults`` where the step differs from the
    class (the identify rule defaults to the recommended rule, not the paper's); ``hide`` leaves out fields that
    mean nothing for the step."""

    cls: type
    defaults: Mapping[str, Any]
    hide: tuple[str, ...] = ()


def setting(default: Any = dataclasses.MISSING, *, flag: str | None = None, keyword: str | None = None, help: str,
            low: float | None = None, high: float | None = None, open: str = "",
            choices: tuple[str, ...] | None = None, cli_type: Any = None, cli_default: Any = UNSET, parse: Callable[[Any], Any] | None = None,
            aliases: tuple[str, ...] = ()) -> Any:
    """A settings field with its public name, help and bounds (see :class:`Option`): a CLI ``flag`` (whose name
    is also the API keyword), or only a Python ``keyword``."""
    if (flag is None) == (keyword is None):
        raise TypeError("a setting has a flag or (Python only) a keyword")
    option = Option(flag, help, low, high, open, choices, cli_type, cli_default, parse, aliases, keyword)
    return dataclasses.field(default=default, metadata={OPTION: option})


def group(cls: type, *, hide: tuple[str, ...] = (), **defaults: Any) -> Any:
    """A field holding the settings dataclass ``cls`` (its options become the step's, see :class:`Group`)."""
    return dataclasses.field(default_factory=lambda: cls(**defaults),
                             metadata={GROUP: Group(cls, dict(defaults), tuple(hide))})


@dataclass(frozen=True)
class Flat:
    """One option of a step, flattened out of its groups: where it lives and what the CLI starts from."""

    path: tuple[str, ...]  # field names from the step's settings down to the field
    option: Option
    field: dataclasses.Field
    default: Any  # the step's default value of this field

    @property
    def name(self) -> str:
        return self.option.name

    @property
    def cli_default(self) -> Any:
        return self.default if self.option.cli_default is UNSET else self.option.cli_default


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def options(cls: type, hide: tuple[str, ...] = (), defaults: Mapping[str, Any] | None = None,
            path: tuple[str, ...] = ()) -> list[Flat]:
    """Every option of the settings class ``cls``, its groups flattened, in declaration order."""
    found: list[Flat] = []
    for field in dataclasses.fields(cls):
        if field.name in hide:
            continue
        if GROUP in field.metadata:
            inner: Group = field.metadata[GROUP]
            found += options(inner.cls, inner.hide, inner.defaults, (*path, field.name))
        elif OPTION in field.metadata:
            default = (defaults or {}).get(field.name, _field_default(field))
            found.append(Flat((*path, field.name), field.metadata[OPTION], field, default))
    names = [flat.name for flat in found]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TypeError(f"{cls.__name__}: options {clash} are declared twice (their flags must differ)")
    return found


def _groups(cls: type) -> Iterator[tuple[dataclasses.Field, Group]]:
    for field in dataclasses.fields(cls):
        if GROUP in field.metadata:
            yield field, field.metadata[GROUP]


def check(settings: Any) -> Any:
    """Check every field of ``settings`` (and of its groups) against its bounds and choices, then the rules that
    bind fields together (the class's ``check_together``, if any). Returns ``settings``; one line on a problem."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if GROUP in field.metadata:
            check(value)
        elif OPTION in field.metadata:
            field.metadata[OPTION].check(value)
    together = getattr(settings, "check_together", None)
    if together is not None:
        together()
    return settings


def _build(cls: type, values: Mapping[str, Any], base: Any, defaults: Mapping[str, Any]) -> Any:
    """``cls`` from the flat ``values`` (field path → value): a replacement of ``base`` when given (what is not
    given keeps its value), else a new instance from the class's defaults and the step's ``defaults``."""
    own = {path[0]: value for path, value in values.items() if len(path) == 1}
    for field, inner in _groups(cls):
        below = {path[1:]: value for path, value in values.items() if len(path) > 1 and path[0] == field.name}
        given = own.get(field.name)
        if below or given is not None:
            start = given if given is not None else (getattr(base, field.name) if base is not None else None)
            own[field.name] = _build(inner.cls, below, start, inner.defaults)
    if base is not None:
        return dataclasses.replace(base, **own) if own else base
    return cls(**{**defaults, **own})


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` from values by public name (what the CLI parsed); CLI values go through their field's ``parse``."""
    by_path = {}
    for flat in options(cls):
        if flat.name in values:
            value = values[flat.name]
            by_path[flat.path] = flat.option.parse(value) if flat.option.parse else value
    return _build(cls, by_path, None, {})


def resolve(cls: type, settings: Any, keywords: Mapping[str, Any], step: str) -> Any:
    """The checked settings of ``step``: ``settings`` (an instance of ``cls``, of one of its groups, or None) with
    ``keywords`` (public names, field names or older aliases) applied on top."""
    groups = {field.name: inner.cls for field, inner in _groups(cls)}
    given: dict[tuple[str, ...], Any] = {}
    if settings is not None and not isinstance(settings, cls):
        field = next((name for name, kind in groups.items() if isinstance(settings, kind)), None)
        if field is None:
            kinds = " or ".join([cls.__name__, *(kind.__name__ for kind in groups.values())])
            raise UnknownSetting(f"{step}: settings must be a {kinds}, got {type(settings).__name__} "
                                 f"{settings!r}; give single settings by name, e.g. {options(cls)[0].name}=...")
        given[(field,)], settings = settings, None
    flats = options(cls)
    names = {flat.name: flat.path for flat in flats}  # public names first: an older name never hides one
    for flat in flats:
        for name in (flat.path[-1], *flat.option.aliases):
            names.setdefault(name, flat.path)
    for key, value in keywords.items():
        if key in groups and isinstance(value, groups[key]):
            given[(key,)] = value
        elif key in names:
            given[names[key]] = value
        else:
            known = ", ".join(sorted(flat.name for flat in flats))
            raise UnknownSetting(f"{step}: unknown setting {key!r}; the settings of {step} are: {known}")
    return check(_build(cls, given, settings, {}) if given or settings is None else settings)


def describe(settings: Any) -> dict[str, Any]:
    """The settings by public name (groups flattened), for records and messages."""
    described = {}
    for flat in options(type(settings)):
        value: Any = settings
        for name in flat.path:
            value = getattr(value, name)
        described[flat.name] = list(value) if isinstance(value, tuple) else value
    return described


def comma_list(value: Any) -> tuple[str, ...] | None:
    """A CLI list (repeated and/or comma-separated: ``--kinds neuron,expert --kinds shared_neuron``) as a tuple."""
    if value is None:
        return None
    parts = [value] if isinstance(value, str) else list(value)
    items = tuple(item.strip() for part in parts for item in str(part).split(",") if item.strip())
    return items or None


__all__ = ["Flat", "Group", "Option", "UnknownSetting", "build", "check", "comma_list", "describe", "group",
           "options", "resolve", "setting"]
