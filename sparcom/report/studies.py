"""Find and read the sparcom outputs a report is made of (nothing here renders anything).

A *study* is whatever a user points the report at: folders written by ``sparcom identify``, ``compare`` and
``ablate`` (``summary.json``), profile runs (``manifest.json`` + ``counts.safetensors``) and examples passes
(``examples.json``). A folder that is none of these is searched two levels down (so a demo's results folder
works as a whole); one with nothing inside is an error. Every JSON file is read once; tables, plots and the
counts of a run are read only when a section asks for them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sparcom.artifacts.causal import CAUSAL_FORMAT, CAUSAL_VERSION, CausalSummary
from sparcom.artifacts.fields import Fields, check_document
from sparcom.artifacts.summaries import (
    COMPARE_FORMAT,
    IDENTIFY_FORMAT,
    SUMMARY_VERSION,
    CompareSummary,
    IdentifySummary,
)
from sparcom.artifacts.summary import Header, manifest_header
from sparcom.errors import SparcomError
from sparcom.outputs import read_json

#: summary.json "format" → output kind and its typed reader.
SUMMARY_FORMATS = {IDENTIFY_FORMAT: ("identify", IdentifySummary, SUMMARY_VERSION),
                   COMPARE_FORMAT: ("compare", CompareSummary, SUMMARY_VERSION),
                   CAUSAL_FORMAT: ("ablate", CausalSummary, CAUSAL_VERSION)}
KIND_ORDER = ("run", "identify", "compare", "ablate", "examples")
SEARCH_DEPTH = 2
REMEDY = "re-run the step that wrote it"


def _number(text: str) -> Any:
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


@dataclass
class Output:
    """One sparcom output folder: its kind, its typed summary and lazy access to its tables and plots.

    ``summary`` is an :class:`~sparcom.artifacts.summaries.IdentifySummary`, a
    :class:`~sparcom.artifacts.summaries.CompareSummary`, a :class:`~sparcom.artifacts.causal.CausalSummary`, the
    :class:`~sparcom.examples.recording.Examples` of an examples pass, or a profile run's
    :class:`~sparcom.artifacts.summary.Header`.
    """

    kind: str
    path: Path
    summary: Any
    _tables: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict, repr=False)
    #: A name unique within the study (the folder name, with its parent's when two folders share a name).
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.path.name

    def table(self, name: str) -> list[dict[str, Any]] | None:
        """Rows of ``tables/{name}.csv`` with numbers parsed (None when the table is absent)."""
        if name not in self._tables:
            path = self.path / "tables" / f"{name}.csv"
            if not path.is_file():
                self._tables[name] = None
            else:
                try:
                    with path.open(encoding="utf-8", newline="") as handle:
                        self._tables[name] = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
                except (OSError, UnicodeDecodeError, csv.Error) as exc:
                    raise SparcomError(f"{path}: unreadable table ({exc}); re-run the step that wrote it") from None
        return self._tables[name]

    def plot(self, name: str) -> bytes | None:
        path = self.path / "plots" / name
        return path.read_bytes() if path.is_file() else None

    @property
    def header(self) -> Header | None:
        """The common header (model, measurement, data, settings, software); None for an examples pass."""
        return self.summary if isinstance(self.summary, Header) else getattr(self.summary, "header", None)

    @cached_property
    def run(self):
        """The loaded profile run (kind ``run``), or None for other kinds."""
        if self.kind != "run":
            return None
        from sparcom.artifacts.run import load_run

        return load_run(self.path)


def _identify_output(path: Path) -> Output | None:
    """The output in folder ``path`` read by its typed reader, or None when the folder is no sparcom output."""
    summary, manifest, examples = path / "summary.json", path / "manifest.json", path / "examples.json"
    if summary.is_file():
        document = read_json(summary, REMEDY)
        fmt = document.get("format") if isinstance(document, dict) else None
        if fmt not in SUMMARY_FORMATS:
            raise SparcomError(f"{summary}: format {fmt!r} is not one sparcom writes "
                               f"({', '.join(SUMMARY_FORMATS)}); pass identify, compare, ablate, profile or examples "
                               "output folders")
        kind, reader, version = SUMMARY_FORMATS[fmt]
        return Output(kind, path, reader.read(check_document(document, summary, fmt, version), path))
    if manifest.is_file():
        document = read_json(manifest, REMEDY)
        if not (path / "counts.safetensors").is_file() or not isinstance(document, dict) \
                or not document.get("complete"):
            raise SparcomError(f"{path}: a profile run that is not complete (no counts.safetensors or "
                               "complete=false); finish it with 'sparcom profile ... --resume'")
        settings = {"batching": document.get("batching_plan"), "template_policy": document.get("template_policy"),
                    "wall_time_seconds": document.get("wall_time_seconds")}
        header = Header.read(Fields(manifest_header("sparcom-run", 1, document, path, settings), manifest))
        return Output("run", path, header)
    if examples.is_file():
        from sparcom.examples.files import load_examples

        return Output("examples", path, load_examples(path))
    return None


def _search(path: Path, depth: int) -> list[Output]:
    found = _identify_output(path)
    if found is not None:
        return [found]
    if depth == 0:
        return []
    outputs = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        outputs += _search(child, depth - 1)
    return outputs


@dataclass
class Study:
    """Every output a report gathers, in a stable order (runs, identify, compare, ablate, examples)."""

    outputs: list[Output]

    def of(self, kind: str) -> list[Output]:
        return [o for o in self.outputs if o.kind == kind]

    def run_for(self, path: str | Path | None) -> Output | None:
        """The run output at ``path`` (given to the report, or readable on disk), else None."""
        if not path:
            return None
        target = Path(path).resolve()
        for output in self.of("run"):
            if output.path.resolve() == target:
                return output
        if (target / "manifest.json").is_file() and (target / "counts.safetensors").is_file():
            try:
                found = _identify_output(target)
            except SparcomError:
                return None
            if found is not None:
                self.outputs.append(found)
                return found
        return None

    def examples_for(self, selection_path: Path) -> Output | None:
        """The examples output recorded for the selection at ``selection_path`` (the only one, if it names none)."""
        target = selection_path.resolve()
        examples = self.of("examples")
        for output in examples:
            source = output.summary.selection
            if source and Path(source).resolve() == target:
                return output
        return examples[0] if len(examples) == 1 else None


def load_study(paths: list[str | Path]) -> Study:
    """Read every sparcom output in ``paths`` (each an output folder or a folder holding some)."""
    if not paths:
        raise SparcomError("no study folders given; pass identify, compare, ablate, profile or examples outputs")
    outputs: list[Output] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise SparcomError(f"{path}: not a folder; pass sparcom output folders (identify, compare, ablate, "
                               "profile runs, examples)")
        found = _search(path, SEARCH_DEPTH)
        if not found:
            raise SparcomError(f"{path}: not a sparcom output (no summary.json, manifest.json or examples.json in it "
                               f"or {SEARCH_DEPTH} levels below); pass identify, compare, ablate, profile or examples "
                               "output folders")
        for output in found:
            key = output.path.resolve()
            if key not in seen:
                seen.add(key)
                outputs.append(output)
    outputs.sort(key=lambda o: KIND_ORDER.index(o.kind))
    names = [o.path.name for o in outputs]
    for output in outputs:
        if names.count(output.path.name) > 1:
            output.label = f"{output.path.parent.name}-{output.path.name}"
    return Study(outputs)
