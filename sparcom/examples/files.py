"""The examples folder (``examples.json``), typed: what ``sparcom examples`` wrote, read without torch by the report
and anyone else. Written by :func:`sparcom.examples.recording.write_examples`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparcom.errors import SparcomError
from sparcom.examples.settings import EXAMPLES_FILE, FORMAT, VERSION


@dataclass(frozen=True)
class Event:
    """One of a component's top instructions: where it fired most, and the token window around it."""

    row: str
    position: int
    value: float
    start: int
    tokens: list[str]
    values: list[float | None]

    @classmethod
    def read(cls, f) -> Event:
        values = f.raw("values") or []
        return cls(f.text("row"), f.integer("position"), f.number("value"), f.integer("start"), f.texts("tokens"),
                   [None if v is None else float(v) for v in values])


@dataclass(frozen=True)
class ComponentExamples:
    key: str
    events: list[Event]
    #: The top instructions within each category (recorded per category), when recorded.
    events_by_category: dict[str, list[Event]]
    #: Mean value of the component on each category's counted tokens (None: no token), when recorded.
    means: dict[str, float | None]

    @classmethod
    def read(cls, f) -> ComponentExamples:
        by_category = f.opt_obj("events_by_category")
        per_category = f.opt_obj("per_category")
        return cls(f.text("key"), [Event.read(e) for e in f.items("events")],
                   {c: [Event.read(e) for e in by_category.items(c)] for c in by_category.names()} if by_category else {},
                   {c: per_category.obj(c).opt_number("mean") for c in per_category.names()} if per_category else {})


@dataclass(frozen=True)
class Examples:
    """What an examples pass wrote (examples.json), typed."""

    path: Path
    model: str | None
    selection: str | None
    data: str | None
    rows_recorded: int | None
    top_k: int | None
    window: int | None
    scope: str | None
    values: dict[str, str]
    rows: dict[str, dict[str, Any]]
    components: dict[str, ComponentExamples]
    wall_time_seconds: float | None


def load_examples(directory: str | Path) -> Examples:
    """Read ``examples.json`` from a directory written by :func:`~sparcom.examples.recording.write_examples` (or
    the file itself)."""
    from sparcom.artifacts.fields import read_document

    path = Path(directory)
    if path.is_dir():
        path = path / EXAMPLES_FILE
    if not path.is_file():
        raise SparcomError(f"{path}: not found; record examples with sparcom.record_examples (sparcom examples)")
    f = read_document(path, FORMAT, VERSION, "record the examples again")
    settings, data = f.obj("settings"), f.obj("data")
    return Examples(path.parent, f.obj("model").opt_text("name_or_path"), f.obj("selection").opt_text("path"),
                    data.opt_text("path"), data.opt_integer("rows"), settings.opt_integer("top_k"),
                    settings.opt_integer("window"), settings.opt_text("scope"), dict(settings.raw("values") or {}),
                    dict(f.obj("rows").data), {c.key: c for c in map(ComponentExamples.read, f.items("components"))},
                    f.opt_number("wall_time_seconds"))


__all__ = ["ComponentExamples", "Event", "Examples", "load_examples"]
