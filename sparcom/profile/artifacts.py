"""Profile run directories: ``counts.safetensors`` + ``manifest.json`` (DESIGN §3), loading and merging.

Everything is written atomically (temporary file, then rename), so a reader never sees half a file and a
killed run leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sparcom.errors import SparcomError
from sparcom.profile.counters import CountStore

FORMAT_VERSION = 1
COUNTS_FILE = "counts.safetensors"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
PROGRESS_FILE = "progress.json"

#: Manifest fields that must agree for two runs to be merged or compared as the same measurement.
MERGE_KEYS: tuple[str, ...] = ("model.architecture", "model.fingerprint", "model.sizes", "tokenizer_hash",
                               "scope", "template", "system_prompt", "dtype", "bootstrap.replicates",
                               "bootstrap.seed", "moe_counting.expert_neurons")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_counts_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # One metadata key: safetensors writes a multi-key metadata dict in no fixed order, which would make two
    # identical runs differ in bytes.
    save_file(tensors, str(tmp), metadata=metadata or {"format": f"sparcom-counts/{FORMAT_VERSION}"})
    os.replace(tmp, path)


def get_field(manifest: dict, dotted: str) -> Any:
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass
class ProfileRun:
    """A loaded profile: the raw counts and the manifest that says how they were made."""

    path: Path
    counts: dict[str, torch.Tensor]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        """Categories in the order they were profiled."""
        listed = self.manifest.get("categories")
        if listed:
            return list(listed)
        return sorted({k.split("/")[1] for k in self.counts if k.startswith("tokens/")})

    def layers(self, kind: str = "neuron") -> list[int]:
        """The layer indices that have counts of ``kind`` (neuron, expert, expert_neuron, shared_neuron)."""
        prefix = f"{kind}/"
        return sorted({int(k.rsplit("/", 1)[1]) for k in self.counts if k.startswith(prefix)})

    def tokens(self, category: str) -> int:
        return int(self.counts[f"tokens/{category}"])

    def instructions(self, category: str) -> int:
        return int(self.counts[f"instructions/{category}"])

    def count(self, kind: str, category: str, layer: int) -> np.ndarray:
        return self.counts[f"{kind}/{category}/{layer}"].numpy()

    def frequencies(self, kind: str = "neuron") -> dict[str, dict[int, np.ndarray]]:
        """p = count / counted tokens, per category and layer (float64; zeros where a category has no tokens)."""
        result: dict[str, dict[int, np.ndarray]] = {}
        for category in self.categories:
            total = self.tokens(category)
            result[category] = {
                layer: self.count(kind, category, layer) / total if total else
                np.zeros(self.count(kind, category, layer).shape)
                for layer in self.layers(kind)
                if f"{kind}/{category}/{layer}" in self.counts
            }
        return result

    def frequency_matrix(self, kind: str = "neuron") -> dict[str, np.ndarray]:
        """Per category, the frequencies stacked as [layers, ...] (only when every layer has the same width)."""
        per_layer = self.frequencies(kind)
        stacked = {}
        for category, layers in per_layer.items():
            shapes = {a.shape for a in layers.values()}
            if len(shapes) != 1:
                raise SparcomError(f"{self.path}: {kind} layers have different widths {sorted(shapes)}; "
                                   "use frequencies() for per-layer arrays")
            stacked[category] = np.stack([layers[j] for j in sorted(layers)])
        return stacked


def load_run(path: str | Path, require_complete: bool = True) -> ProfileRun:
    """Load a profile run directory; refuses incomplete runs unless told otherwise."""
    path = Path(path)
    counts_path = path / COUNTS_FILE
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise SparcomError(f"{path}: profile run directory not found; create one with 'sparcom profile'")
    if not manifest_path.is_file():
        raise SparcomError(f"{path}: no {MANIFEST_FILE}; this is not a sparcom profile run")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SparcomError(f"{manifest_path}: malformed JSON ({exc.msg}, line {exc.lineno})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SparcomError(f"{manifest_path}: format version {manifest.get('format_version')!r} is not "
                           f"{FORMAT_VERSION}; re-run 'sparcom profile' with this version")
    if not counts_path.is_file() or (require_complete and not manifest.get("complete")):
        raise SparcomError(f"{path}: the run is not complete; finish it with 'sparcom profile ... --resume'")
    return ProfileRun(path, load_file(str(counts_path)), manifest)


def incompatibility(a: dict, b: dict, keys: tuple[str, ...] = MERGE_KEYS) -> str | None:
    """The first manifest field on which two runs differ, as a readable reason (None when compatible)."""
    for key in keys:
        left, right = get_field(a, key), get_field(b, key)
        if left != right:
            return f"{key} differs ({left!r} vs {right!r})"
    return None


def merge_runs(paths: list[str | Path], out: str | Path, overwrite: bool = False) -> ProfileRun:
    """Add compatible runs into a new run directory; refuses overlapping instructions and mismatched settings."""
    if len(paths) < 2:
        raise SparcomError("merge needs at least two runs")
    out = Path(out)
    if out.exists() and not overwrite:
        raise SparcomError(f"{out}: output directory exists; choose another --out or pass --overwrite")
    runs = [load_run(p) for p in paths]
    first = runs[0]
    store = CountStore()
    store.merge(first.counts)
    seen_ids: dict[str, Path] = {}
    for run in runs:
        for ids in run.manifest.get("instruction_ids", {}).values():
            for instruction_id in ids:
                if instruction_id in seen_ids:
                    raise SparcomError(f"cannot merge {run.path} into {seen_ids[instruction_id]}: both counted "
                                       f"instruction {instruction_id!r}; merge only runs over disjoint rows")
                seen_ids[instruction_id] = run.path
    for run in runs[1:]:
        reason = incompatibility(first.manifest, run.manifest)
        if reason:
            raise SparcomError(f"cannot merge {run.path} with {first.path}: {reason}")
        try:
            store.merge(run.counts, strict=False)  # runs may hold different categories
        except SparcomError as exc:
            raise SparcomError(f"cannot merge {run.path} with {first.path}: {exc}") from None
    manifest = merged_manifest([r.manifest for r in runs], [str(r.path) for r in runs])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = store.state_dict()
    manifest["counted_tokens"] = {c: int(tensors[f"tokens/{c}"]) for c in manifest["categories"]}
    manifest["instructions"] = {c: int(tensors[f"instructions/{c}"]) for c in manifest["categories"]}
    write_counts_atomic(tmp / COUNTS_FILE, tensors)
    write_json_atomic(tmp / MANIFEST_FILE, manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return load_run(out)


def merged_manifest(manifests: list[dict], sources: list[str]) -> dict:
    """The manifest of a merged run: the shared settings of the first, with data fields combined."""
    merged = json.loads(json.dumps(manifests[0]))
    categories: list[str] = []
    for manifest in manifests:
        categories += [c for c in manifest.get("categories", []) if c not in categories]
    ids: dict[str, list[str]] = {c: [] for c in categories}
    for manifest in manifests:
        for category, values in manifest.get("instruction_ids", {}).items():
            ids[category] += values
    merged.update(
        categories=categories,
        instruction_ids=ids,
        merged_from=sources,
        datasets=[m.get("dataset") for m in manifests],
        wall_time_seconds=sum(m.get("wall_time_seconds", 0.0) for m in manifests),
        complete=True,
    )
    return merged
