"""The header every summary.json starts with, written and read one way, so one fact lives at one path.

Every output folder's summary (identify, compare, evaluate, sweep, the causal check) begins with ``format``,
``version`` (its schema), ``model``, ``measurement``, ``data``, ``settings`` and ``software``. The model's name is
always ``model.name_or_path``, its layers ``model.layers``, the categories ``data.categories``. :func:`header`
writes it; :class:`Header` reads it back. Flat records of numbers are read by :func:`read_record` from a
dataclass's annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from sparcom.artifacts.fields import Fields

R = TypeVar("R")

#: How each annotation of a flat record is read (see :func:`read_record`).
_READERS = {"int": Fields.integer, "int | None": Fields.opt_integer, "float": Fields.number,
            "float | None": Fields.opt_number, "str": Fields.text, "str | None": Fields.opt_text, "bool": Fields.flag}


def read_record(cls: type[R], f: Fields) -> R:
    """A dataclass of plain fields (int, float, str, bool, optional or not) from a JSON object, field by field."""
    return cls(**{x.name: _READERS[str(x.type)](f, x.name) for x in fields(cls)})  # type: ignore[call-arg]


@dataclass(frozen=True)
class ModelInfo:
    """The model a summary's numbers were measured on."""

    name_or_path: str
    architecture: str | None
    fingerprint: str | None
    dtype: str | None
    layers: int | None

    @classmethod
    def read(cls, f: Fields) -> ModelInfo:
        return read_record(cls, f)


@dataclass(frozen=True)
class DataInfo:
    """The rows (or the profile run) a summary's numbers come from."""

    #: The dataset file (for a run-based step: the run's dataset).
    path: str | None
    sha256: str | None
    #: The profile run the step read (None for the causal check, which reads the dataset itself).
    run: str | None
    categories: list[str]
    instructions: dict[str, int]
    #: Counted tokens per category (scored response tokens for the causal check).
    tokens: dict[str, int]

    @classmethod
    def read(cls, f: Fields) -> DataInfo:
        return cls(f.opt_text("path"), f.opt_text("sha256"), f.opt_text("run"), f.texts("categories"),
                   f.counts("instructions"), f.counts("tokens"))


@dataclass(frozen=True)
class Header:
    """The common start of every summary.json."""

    format: str
    version: int
    model: ModelInfo
    #: The identifying fields of the measurement (dotted keys of :data:`sparcom.provenance.MEASUREMENT`).
    measurement: dict[str, Any]
    data: DataInfo
    settings: dict[str, Any]
    software: dict[str, str]

    @classmethod
    def read(cls, f: Fields) -> Header:
        return cls(f.text("format"), f.integer("version"), ModelInfo.read(f.obj("model")),
                   dict(f.obj("measurement").data), DataInfo.read(f.obj("data")), dict(f.obj("settings").data),
                   dict(f.obj("software").data))


def model_info(record: Mapping[str, Any], dtype: str | None = None) -> dict[str, Any]:
    """The header's ``model`` from a run manifest's (or the causal check's) model record, keeping its other fields."""
    layers = record.get("layers") or (record.get("sizes") or {}).get("layers")
    return {**record, "name_or_path": str(record.get("name_or_path") or "model"),
            "architecture": record.get("architecture"), "fingerprint": record.get("fingerprint"),
            "dtype": dtype or record.get("dtype"), "layers": layers}


def run_data(manifest: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The header's ``data`` of a profile run (at ``path``) from its manifest."""
    dataset = manifest.get("dataset") or {}
    return {"path": dataset.get("path"), "sha256": dataset.get("sha256"), "run": str(path),
            "categories": list(manifest.get("categories") or []), "instructions": dict(manifest.get("instructions") or {}),
            "tokens": dict(manifest.get("counted_tokens") or {})}


def manifest_header(format_: str, version: int, manifest: Mapping[str, Any], path: str | Path,
                    settings: Mapping[str, Any]) -> dict[str, Any]:
    """The whole header of a summary computed from one profile run (its manifest and folder)."""
    from sparcom.provenance import measurement, software_versions

    return header(format_, version, model=model_info(manifest.get("model") or {}, manifest.get("dtype")),
                  measurement=measurement(manifest), data=run_data(manifest, path), settings=settings,
                  software=software_versions())


def run_header(format_: str, version: int, run: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`manifest_header` of a loaded :class:`~sparcom.artifacts.run.ProfileRun`."""
    return manifest_header(format_, version, run.manifest, run.path, settings)


def header(format_: str, version: int, *, model: Mapping[str, Any], measurement: Mapping[str, Any],
           data: Mapping[str, Any], settings: Mapping[str, Any], software: Mapping[str, Any]) -> dict[str, Any]:
    """The header as written (``software``: the versions of the step that writes it)."""
    return {"format": format_, "version": version, "model": dict(model), "measurement": dict(measurement),
            "data": dict(data), "settings": dict(settings), "software": dict(software)}


__all__ = ["DataInfo", "Header", "ModelInfo", "header", "manifest_header", "model_info", "read_record", "run_data",
           "run_header"]
