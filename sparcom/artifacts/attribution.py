"""Attribution runs: ``effects.safetensors`` + ``manifest.json``, the only reader and writer of them.

An attribution run holds, per category and component, the sum over the category's rows of the linear estimate of
what deactivating the component does to the row's summed response NLL (:mod:`sparcom.attribution.estimate`), with
the same key grammar as the counts (:mod:`sparcom.kinds`):

- ``{kind}/{cat}/{layer}`` [I]: the summed estimates; ``nll/{cat}``: the summed NLL of the category's scored tokens;
- ``tokens/{cat}``: scored tokens; ``instructions/{cat}``: rows;
- with ``--group-by instruction``: ``groups/{kind}/{layer}`` [G, I], ``groups/tokens`` and ``groups/nll`` [G], one
  row per instruction of the whole run (a shard leaves the other rows 0).

Sums are stored as int64 fixed-point numbers (value × 2^:data:`SCALE_BITS`, rounded once per batch): integer sums
are exact in any order, so shards, torchrun ranks and resumed runs add up to the bytes of one uninterrupted pass,
and two runs merge by addition. Readers get float64 (:meth:`AttributionRun.value`). Everything is written
atomically and loading checks the file against the sha256 its manifest records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.artifacts.run import merged_manifest as run_manifest
from sparcom.artifacts.run import save_atomic
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.kinds import GROUPS, categories_with_tokens, check_kind, count_key, layers_of, tokens_key
from sparcom.outputs import (
    check_output_dir,
    lock,
    read_json,
    staged_directory,
    write_json_atomic,
)
from sparcom.provenance import file_sha256, mismatches

ARTIFACT = "attribution"
FORMAT_VERSION = 1
EFFECTS_FILE = "effects.safetensors"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Fixed-point scale: a stored integer n means n / 2^32 nats (resolution 2.3e-10; range ±2.1e9 nats).
SCALE_BITS = 32
#: What two attribution runs must share to be merged (the measurement's aspects, and the estimate's own settings).
MERGE_ASPECTS = ("model", "weights", "tokenizer", "tokens", "numerics")
ESTIMATE_FIELDS = ("replacement", "scale_bits", "group_by", "max_scored_tokens", "kinds")


def nll_key(category: str) -> str:
    return f"nll/{category}"


def to_fixed(values: np.ndarray) -> np.ndarray:
    """float64 nats → int64 fixed point (rounded to nearest)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(2 ** SCALE_BITS))
    if not np.all(np.isfinite(scaled)) or np.abs(scaled).max(initial=0) >= 2.0 ** 62:
        raise SparcomError("an attribution sum is non-finite or beyond ±1e9 nats; check the model's weights")
    return scaled.astype(np.int64)


def from_fixed(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) / float(2 ** SCALE_BITS)


def write_sums_atomic(path: Path, arrays: Mapping[str, Any], progress: Mapping[str, Any] | None = None) -> None:
    """Write int64 sums as safetensors (sorted keys, one metadata key: identical sums give identical bytes)."""
    data = {key: np.require(value.numpy() if hasattr(value, "numpy") else np.asarray(value), np.int64, "C")
            for key, value in arrays.items()}
    save_atomic(path, data, f"sparcom-attribution/{FORMAT_VERSION}", progress)


def load_sums(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """The sums of an effects (or checkpoint) file and its progress record (None for a finished file)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        sums = load_file(str(path))
        with safe_open(str(path), "np") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SparcomError(f"{path}: unreadable attribution file ({str(exc).splitlines()[0] if str(exc) else exc}); "
                           "re-run 'sparcom attribute' (with --overwrite)") from None
    if not metadata.get("format", "").startswith("sparcom-attribution/") or any(
            v.dtype != np.int64 for v in sums.values()):
        raise SparcomError(f"{path}: not a sparcom attribution file; re-run 'sparcom attribute'")
    progress = json.loads(metadata["progress"]) if "progress" in metadata else None
    return sums, progress


@dataclass
class KindEffects:
    """Mean estimated ΔNLL per scored token of one kind: ``per_token`` [K, N] (float64), ``tokens`` [K]."""

    kind: str
    layout: Layout
    categories: tuple[str, ...]
    per_token: np.ndarray
    tokens: np.ndarray


@dataclass
class AttributionRun:
    """A loaded attribution run: the fixed-point sums and the manifest that says how they were made."""

    path: Path
    sums: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return list(self.manifest.get("categories") or categories_with_tokens(self.sums))

    def value(self, key: str) -> np.ndarray:
        """The float64 value (nats) of a sum key; token and instruction counts are returned as they are."""
        array = self.sums[key]
        return array if key.startswith(("tokens/", "instructions/")) or key == f"{GROUPS}tokens" else from_fixed(array)

    def effects(self, kind: str, categories: list[str] | None = None) -> KindEffects:
        """Σ estimate / scored tokens per category, flattened over layers like the counts (DESIGN §3)."""
        check_kind(kind)
        categories = list(categories or self.categories)
        layers = layers_of(self.sums, kind)
        if not layers:
            raise SparcomError(f"{self.path}: the attribution run has no {kind} estimates")
        missing = [c for c in categories if tokens_key(c) not in self.sums]
        if missing:
            raise SparcomError(f"{self.path}: the attribution run has no rows of categor"
                               f"{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}; attribute them too")
        shapes = tuple(self.sums[count_key(kind, categories[0], j)].shape for j in layers)
        layout = Layout(kind, tuple(layers), shapes)
        tokens = np.array([int(self.sums[tokens_key(c)]) for c in categories], dtype=np.int64)
        stacked = np.stack([layout.flatten({j: self.value(count_key(kind, c, j)) for j in layers})
                            for c in categories])
        per_token = stacked / np.maximum(tokens, 1)[:, None]
        return KindEffects(kind, layout, tuple(categories), per_token, tokens)


def load_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir() or not manifest_path.is_file():
        raise SparcomError(f"{path}: no attribution run here (no {MANIFEST_FILE}); create one with 'sparcom attribute'")
    manifest = read_json(manifest_path, "re-run 'sparcom attribute'")
    if not isinstance(manifest, dict) or manifest.get("artifact") != ARTIFACT:
        raise SparcomError(f"{path}: not an attribution run (a profile run? make one with 'sparcom attribute')")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SparcomError(f"{path}: attribution format {manifest.get('format_version')!r} is not {FORMAT_VERSION}; "
                           "re-run 'sparcom attribute' with this version")
    return manifest


def is_attribution_run(path: str | Path) -> bool:
    """Whether ``path`` holds an attribution run (by its manifest; nothing else is read)."""
    try:
        return json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8")).get("artifact") == ARTIFACT
    except (OSError, ValueError, AttributeError):
        return False


def load_attribution(path: str | Path) -> AttributionRun:
    """A finished attribution run, checked against the sha256 its manifest records."""
    path = Path(path)
    manifest = load_manifest(path)
    effects = path / EFFECTS_FILE
    if not manifest.get("complete") or not effects.is_file():
        raise SparcomError(f"{path}: the attribution run is not complete; finish it with 'sparcom attribute ... "
                           "--resume'")
    if file_sha256(effects) != manifest.get("effects_sha256"):
        raise SparcomError(f"{effects}: the file differs from the one {MANIFEST_FILE} records (sha256); it was edited "
                           "or damaged: re-run 'sparcom attribute'")
    sums, _ = load_sums(effects)
    return AttributionRun(path, sums, manifest)


def write_attribution(folder: Path, sums: Mapping[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The sums, then the manifest recording their sha256 (last: a manifest that says complete has its sums)."""
    write_sums_atomic(folder / EFFECTS_FILE, sums)
    manifest["effects_sha256"] = file_sha256(folder / EFFECTS_FILE)
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return manifest


def merge_attributions(paths: list[str | Path], out: str | Path, overwrite: bool = False) -> AttributionRun:
    """Add attribution runs of the same model and settings over disjoint rows (shards: the whole run's bytes)."""
    if len(paths) < 2:
        raise SparcomError("merge needs at least two runs")
    out = Path(out)
    with lock(out):
        check_output_dir(out, overwrite, marker=MANIFEST_FILE, kind="attribution run")
        runs = [load_attribution(p) for p in paths]
        first = runs[0]
        seen: dict[str, Path] = {}
        for run in runs:
            reasons = mismatches(first.manifest, run.manifest, MERGE_ASPECTS)
            reasons += [f"{name} differs" for name in ESTIMATE_FIELDS
                        if run.manifest.get(name) != first.manifest.get(name)]
            if run.manifest.get("group_by") == "instruction" and run.manifest["groups"] != first.manifest["groups"]:
                reasons.append("their instruction groups differ (only shards of one run merge per instruction)")
            if reasons:
                raise SparcomError(f"cannot merge {run.path} with {first.path}: {reasons[0]}")
            for ids in run.manifest.get("instruction_ids", {}).values():
                for row_id in ids:
                    if row_id in seen:
                        raise SparcomError(f"cannot merge {run.path} into {seen[row_id]}: both attributed row "
                                           f"{row_id!r}; merge only runs over disjoint rows")
                    seen[row_id] = run.path
        merged: dict[str, np.ndarray] = {}
        for run in runs:
            for key, value in run.sums.items():
                if key in merged and merged[key].shape != value.shape:
                    raise SparcomError(f"cannot merge {run.path}: {key!r} has shape {value.shape} here and "
                                       f"{merged[key].shape} elsewhere")
                merged[key] = merged[key] + value if key in merged else value.copy()
        manifest = merged_manifest([r.manifest for r in runs], [str(r.path) for r in runs])
        manifest["scored_tokens"] = {c: int(merged[tokens_key(c)]) for c in manifest["categories"]}
        with staged_directory(out, overwrite, marker=MANIFEST_FILE, kind="attribution run") as staging:
            write_attribution(staging, merged, manifest)
    return load_attribution(out)


def merged_manifest(manifests: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """A merged profile run's manifest (:func:`sparcom.artifacts.run.merged_manifest`: rows of all, datasets, wall
    time), without the per-shard hash of the effects."""
    merged = run_manifest(manifests, sources)
    merged.pop("effects_sha256", None)
    return merged
