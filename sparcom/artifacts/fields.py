"""Typed access to the JSON files sparcom writes, for the typed readers of every output folder.

A reader walks a document once with :class:`Fields` and builds dataclasses; a field that is missing or of the
wrong type is one :class:`~sparcom.errors.SparcomError` line naming the file and the field's path (and saying to
re-run the step that wrote it), never a ``KeyError`` deep inside a renderer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from sparcom.errors import SparcomError
from sparcom.outputs import read_json

T = TypeVar("T")
E = TypeVar("E", bound=Enum)
REMEDY = "re-run the step that wrote it"


class Fields:
    """One JSON object of a file, at a path inside it (``targets.neurons``), with typed getters."""

    def __init__(self, data: Any, file: Path, path: str = "", remedy: str = REMEDY) -> None:
        self.file, self.path, self.remedy = Path(file), path, remedy
        if not isinstance(data, dict):
            raise self.error(f"expected a JSON object, found {type(data).__name__}")
        self.data: dict[str, Any] = data

    def error(self, problem: str, key: str | None = None) -> SparcomError:
        where = ".".join(p for p in (self.path, key) if p)
        field = f" field {where}:" if where else ""
        return SparcomError(f"{self.file}:{field} {problem}; {self.remedy}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def names(self) -> list[str]:
        """The object's field names, in file order."""
        return list(self.data)

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as it is (for values shown as they are, e.g. settings); ``default`` when absent."""
        return self.data.get(key, default)

    def _value(self, key: str, types: tuple[type, ...], name: str, optional: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if optional:
                return None
            raise self.error("missing", key)
        value = self.data[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise self.error(f"expected {name}, found {type(value).__name__}", key)
        return value

    def obj(self, key: str) -> Fields:
        return Fields(self._value(key, (dict,), "an object", False), self.file, self._at(key), self.remedy)

    def opt_obj(self, key: str) -> Fields | None:
        value = self._value(key, (dict,), "an object", True)
        return None if value is None else Fields(value, self.file, self._at(key), self.remedy)

    def text(self, key: str) -> str:
        return self._value(key, (str,), "text", False)

    def opt_text(self, key: str) -> str | None:
        return self._value(key, (str,), "text", True)

    def choice(self, key: str, kind: type[E]) -> E:
        """Text that must be one of an enumeration's values (e.g. a stored verdict)."""
        text = self.text(key)
        try:
            return kind(text)
        except ValueError:
            raise self.error(f"unknown {kind.__name__} {text!r}", key) from None

    def integer(self, key: str) -> int:
        return self._value(key, (int,), "an integer", False)

    def opt_integer(self, key: str) -> int | None:
        return self._value(key, (int,), "an integer", True)

    def flag(self, key: str) -> bool:
        return self._value(key, (bool,), "true or false", False)

    def number(self, key: str) -> float:
        """A number; JSON null (how sparcom writes NaN) reads as NaN, an absent field is an error."""
        if key not in self.data:
            raise self.error("missing", key)
        value = self._value(key, (int, float), "a number", True)
        return math.nan if value is None else float(value)

    def opt_number(self, key: str) -> float | None:
        value = self._value(key, (int, float), "a number", True)
        return None if value is None else float(value)

    def items(self, key: str) -> list[Fields]:
        """A list of objects."""
        values = self._value(key, (list,), "a list", False)
        return [Fields(v, self.file, f"{self._at(key)}[{i}]", self.remedy) for i, v in enumerate(values)]

    def texts(self, key: str) -> list[str]:
        values = self._value(key, (list,), "a list", False)
        if not all(isinstance(v, str) for v in values):
            raise self.error("expected a list of text", key)
        return list(values)

    def numbers(self, key: str) -> list[float]:
        """A list of numbers (null as NaN)."""
        values = self._value(key, (list,), "a list", False)
        return [_number(v, lambda: self.error("expected a list of numbers", key)) for v in values]

    def matrix(self, key: str) -> list[list[float]]:
        """A list of lists of numbers (null as NaN)."""
        rows = self._value(key, (list,), "a list", False)
        if not all(isinstance(r, list) for r in rows):
            raise self.error("expected a matrix (a list of lists)", key)
        return [[_number(v, lambda: self.error("expected a matrix of numbers", key)) for v in r] for r in rows]

    def mapping(self, key: str, read: Callable[[Fields, str], T]) -> dict[str, T]:
        """An object whose values are read by ``read(self_at_key, name)``, in file order."""
        inner = self.obj(key)
        return {name: read(inner, name) for name in inner.names()}

    def counts(self, key: str) -> dict[str, int]:
        """An object of integers (e.g. rows per category)."""
        return self.mapping(key, Fields.integer)

    def sizes(self, key: str) -> dict[str, int | float]:
        """An object of set sizes: integers, or the mean of per-fold sizes of a cross-fitted check."""
        return self.mapping(key, Fields.size)

    def size(self, key: str) -> int | float:
        return _size(self.number(key))

    def opt_size(self, key: str) -> int | float | None:
        value = self.opt_number(key)
        return None if value is None else _size(value)

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


def _size(value: float) -> int | float:
    """A set size: an integer, or the mean of per-fold sizes (a cross-fitted check), as it was written."""
    return int(value) if value.is_integer() else value


def _number(value: Any, error: Callable[[], SparcomError]) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error()
    return float(value)


def read_document(file: Path, format_: str, version: int, remedy: str = REMEDY) -> Fields:
    """The JSON object in ``file``, refused in one line unless it is a ``format_`` file of schema ``version``."""
    return check_document(read_json(file, remedy), file, format_, version, remedy)


def check_document(data: Any, file: Path, format_: str, version: int, remedy: str = REMEDY) -> Fields:
    """``data`` (read from ``file``) as :class:`Fields`, refused unless it is a ``format_`` of schema ``version``."""
    document = Fields(data, file, remedy=remedy)
    found = document.raw("format")
    if found != format_:
        raise SparcomError(f"{file}: format {found!r}, expected {format_!r}; {remedy}")
    if document.raw("version") != version:
        raise SparcomError(f"{file}: {format_} schema version {document.raw('version')!r}, this sparcom reads "
                           f"version {version}; {remedy}")
    return document


__all__ = ["REMEDY", "Fields", "check_document", "read_document"]
