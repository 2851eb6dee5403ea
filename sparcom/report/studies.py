"""Find and read the sparcom outputs a report is made of (nothing here renders anything).

A *study* is whatever a user points the report at: folders written by ``sparcom identify``, ``compare`` and
``ablate`` (``summary.json``), profile runs (``manifest.json`` + ``counts.safetensors``) and examples passes
(``examples.json``). A folder that is none of these is searched two levels down (so a demo's results folder
works as a whole); one with nothing inside is an error. Every JSON file is read once; tables, plots and the
counts of a run are read only when a section asks for them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sparcom.errors import SparcomError

#: summary.json "format" → output kind.
SUMMARY_FORMATS = {"sparcom-identify": "identify", "sparcom-compare": "compare", "sparcom-causal": "ablate"}
KIND_ORDER = ("run", "identify", "compare", "ablate", "examples")
SEARCH_DEPTH = 2


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line SparcomError saying the file is damaged."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SparcomError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno}); re-run the step that wrote it") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SparcomError(f"{path}: unreadable ({exc}); re-run the step that wrote it") from None
    if not isinstance(document, dict):
        raise SparcomError(f"{path}: expected a JSON object, found {type(document).__name__}; re-run the step "
                           "that wrote it")
    return document


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
    """One sparcom output folder: its kind, its main JSON document and lazy access to its tables and plots."""

    kind: str
    path: Path
    document: dict[str, Any]
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

    @cached_property
    def run(self):
        """The loaded profile run (kind ``run``), or None for other kinds."""
        if self.kind != "run":
            return None
        from sparcom.artifacts.run import load_run

        return load_run(self.path)


def _identify_output(path: Path) -> Output | None:
    candidates = [(path / "summary.json", None), (path / "manifest.json", "run"), (path / "examples.json", "examples")]
    for file, kind in candidates:
        if not file.is_file():
            continue
        document = read_json(file)
        if kind is None:
            fmt = document.get("format")
            if fmt not in SUMMARY_FORMATS:
                raise SparcomError(f"{file}: format {fmt!r} is not one sparcom writes ({', '.join(SUMMARY_FORMATS)})"
                                   "; pass identify, compare, ablate, profile or examples output folders")
            return Output(SUMMARY_FORMATS[fmt], path, document)
        if kind == "run":
            if not (path / "counts.safetensors").is_file() or not document.get("complete"):
                raise SparcomError(f"{path}: a profile run that is not complete (no counts.safetensors or "
                                   "complete=false); finish it with 'sparcom profile ... --resume'")
            return Output("run", path, document)
        from sparcom.examples.recording import FORMAT, VERSION

        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise SparcomError(f"{file}: not a {FORMAT} version {VERSION} file; record the examples again")
        return Output("examples", path, document)
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
            source = (output.document.get("selection") or {}).get("path")
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
