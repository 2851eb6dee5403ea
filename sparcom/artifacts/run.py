"""Profile run directories: ``counts.safetensors`` + ``sums.safetensors`` + ``manifest.json`` (DESIGN §3), the only
reader and writer of runs.

``sums.safetensors`` holds the float64 activation sums (``sums/…``, ``abs_sums/…``: :mod:`sparcom.kinds`) made by the
same hooks over the same tokens as the counts; runs written before it existed have none (``ProfileRun.sums`` is
None) and stay readable. A checkpoint keeps counts and sums in one file, so they are always replaced together.

Everything is written atomically (temporary file, then rename), so a reader never sees half a file and a
killed run leaves either the previous checkpoint or the new one; a checkpoint carries its own progress record, so
the two can never disagree. The manifest records the sha256 of the counts file, and loading checks the file
against it and the manifest against the counts (categories, token and instruction totals, no count above its
category's tokens), so an edited or damaged run is refused with the reason instead of analysed. A loaded run holds
its counts as numpy int64 arrays, so the analysis layer never needs torch. Runs of the same measurement
(:mod:`sparcom.provenance`) over disjoint instructions merge by addition.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.errors import SparcomError
from sparcom.kinds import (
    GROUPS,
    categories_with_tokens,
    component_keys,
    count_key,
    instructions_key,
    is_group_counts,
    is_sum_key,
    layers_of,
    tokens_key,
)
from sparcom.outputs import (
    WriteFailed,
    check_output_dir,
    lock,
    read_json,
    staged_directory,
    write_json_atomic,
    write_problem,
)
from sparcom.provenance import MERGE_ASPECTS, file_sha256, mismatches

FORMAT_VERSION = 1
COUNTS_FILE = "counts.safetensors"
SUMS_FILE = "sums.safetensors"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Written by sparcom before checkpoints carried their progress record; removed when a run resumes or finishes.
PROGRESS_FILE = "progress.json"
#: The manifest field holding the sha256 of ``counts.safetensors``.
COUNTS_SHA256 = "counts_sha256"
#: The manifest field holding the sha256 of ``sums.safetensors`` (absent: the run has no activation sums).
SUMS_SHA256 = "sums_sha256"

def compact_dtype(array: np.ndarray) -> np.dtype:
    """The smallest unsigned integer type that holds every value of a non-negative count array."""
    top = int(array.max()) if array.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def split_sums(arrays: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(counts, activation sums) of a mapping that holds both; None for the sums when there are none."""
    sums = {key: value for key, value in arrays.items() if is_sum_key(key)}
    return {key: value for key, value in arrays.items() if not is_sum_key(key)}, sums or None


def _stored_dtype(key: str, array: np.ndarray) -> np.dtype:
    """How a key is stored: activation sums float64, counts below the category compact, other counts int64."""
    if is_sum_key(key):
        return np.dtype(np.float64)
    return compact_dtype(array) if is_group_counts(key) else np.dtype(np.int64)


def write_counts_atomic(path: Path, arrays: Mapping[str, Any], progress: Mapping[str, Any] | None = None,
                        what: str = "counts") -> None:
    """Write counters (numpy arrays or torch tensors) as safetensors, sorted by key, atomically.

    Counters are int64, except counts below the category (``groups/{kind}/{layer}``), which are stored in the
    smallest unsigned type that holds them: one row per instruction makes them the bulk of a run's bytes, and no
    count exceeds its group's tokens; activation sums (``sums/…``) are float64 (``what="sums"`` for the sums file). A
    checkpoint passes ``progress`` (how far the run got), stored in the same
    file so that counts and progress are replaced together.
    """
    numpy_arrays = {}
    for key, value in sorted(arrays.items()):
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        numpy_arrays[key] = np.require(array, _stored_dtype(key, array), "C")  # np.require keeps scalars 0-d
    save_atomic(path, numpy_arrays, f"sparcom-{what}/{FORMAT_VERSION}", progress)


def save_atomic(path: Path, arrays: dict[str, np.ndarray], format_name: str,
                progress: Mapping[str, Any] | None = None) -> None:
    """Write numpy arrays as safetensors through a temporary file renamed into place (no half-written file).

    One metadata key for the format (and one for ``progress``): safetensors writes a multi-key metadata dict in no
    fixed order, which would make two identical runs differ in bytes (a checkpoint's bytes do not matter).
    """
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    metadata = {"format": format_name}
    if progress is not None:
        metadata["progress"] = json.dumps(dict(progress), sort_keys=True)
    try:
        save_file(dict(sorted(arrays.items())), str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        problem = write_problem(exc)
        if problem is None:
            raise
        raise WriteFailed(f"cannot write {path}: {problem}", problem) from None
    except BaseException:  # an interrupt between writing and renaming
        tmp.unlink(missing_ok=True)
        raise


def load_counts(path: Path) -> dict[str, np.ndarray]:
    """The counters of a counts (or checkpoint) file; a damaged file is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    what = "checkpoint" if path.name == CHECKPOINT_FILE else "counts file"
    fix = ("resume is impossible, start again with --overwrite" if what == "checkpoint"
           else "restore it or re-run 'sparcom profile' for this run")
    try:
        counts = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SparcomError(f"{path}: unreadable {what} ({str(exc).splitlines()[0] if str(exc) else exc}); "
                           f"{fix}") from None
    wrong = [key for key, value in counts.items()
             if value.dtype != np.int64 and not (is_group_counts(key) and value.dtype.kind == "u")
             and not (is_sum_key(key) and value.dtype == np.float64)]
    if wrong:
        raise SparcomError(f"{path}: counter {wrong[0]!r} is {counts[wrong[0]].dtype}, not int64; the file is not a "
                           f"sparcom {what}; {fix}")
    return counts


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The counters of a checkpoint and its progress record (batches done, elapsed time, settings digest)."""
    from safetensors import SafetensorError, safe_open

    counts = load_counts(path)
    try:
        with safe_open(str(path), "np") as handle:
            metadata = handle.metadata() or {}
        progress = json.loads(metadata["progress"])
    except (SafetensorError, OSError, KeyError, ValueError):
        raise SparcomError(f"{path}: the checkpoint has no progress record (an older sparcom wrote it); "
                           "start the run again with --overwrite") from None
    return counts, progress


@dataclass
class ProfileRun:
    """A loaded profile: the raw counts, the manifest that says how they were made and the activation sums (None
    for runs made before sparcom recorded them; read them through :mod:`sparcom.artifacts.sums`)."""

    path: Path
    counts: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)
    sums: dict[str, np.ndarray] | None = None

    @property
    def categories(self) -> list[str]:
        """Categories in the order they were profiled."""
        listed = self.manifest.get("categories")
        if listed:
            return list(listed)
        return categories_with_tokens(self.counts)

    def layers(self, kind: str = "neuron") -> list[int]:
        """The layer indices that have counts of ``kind`` (neuron, expert, expert_neuron, shared_neuron)."""
        return layers_of(self.counts, kind)

    def tokens(self, category: str) -> int:
        return int(self.counts[tokens_key(category)])

    def instructions(self, category: str) -> int:
        return int(self.counts[instructions_key(category)])

    def count(self, kind: str, category: str, layer: int) -> np.ndarray:
        return self.counts[count_key(kind, category, layer)]


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a profile run directory (without loading its counts)."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise SparcomError(f"{path}: profile run directory not found; create one with 'sparcom profile'")
    if not manifest_path.is_file():
        raise SparcomError(f"{path}: no {MANIFEST_FILE}; this is not a sparcom profile run")
    manifest = read_json(manifest_path, "restore the run or re-profile")
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise SparcomError(f"{manifest_path}: format version {version!r} is not {FORMAT_VERSION}; "
                           "re-run 'sparcom profile' with this version")
    return manifest


def load_run(path: str | Path, require_complete: bool = True) -> ProfileRun:
    """Load a profile run directory; refuses incomplete runs unless told otherwise, and finished runs whose counts
    were edited, damaged or contradict their manifest (:func:`check_run`)."""
    path = Path(path)
    counts_path = path / COUNTS_FILE
    manifest = load_manifest(path)
    if not counts_path.is_file() or (require_complete and not manifest.get("complete")):
        raise SparcomError(f"{path}: the run is not complete; finish it with 'sparcom profile ... --resume'")
    counts = load_counts(counts_path)
    if manifest.get("complete"):
        check_run(path, counts, manifest)
    return ProfileRun(path, counts, manifest, load_sums(path, manifest))


def load_sums(path: Path, manifest: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The activation sums of a finished run (None when its manifest records none: an older run), checked against
    the sha256 the manifest records."""
    recorded = manifest.get(SUMS_SHA256)
    if not recorded or not manifest.get("complete"):
        return None
    sums_path = path / SUMS_FILE
    fix = "restore the run or re-run 'sparcom profile'"
    if not sums_path.is_file():
        raise SparcomError(f"{path}: {MANIFEST_FILE} records activation sums but {SUMS_FILE} is missing: {fix}")
    if file_sha256(sums_path) != recorded:
        raise SparcomError(f"{sums_path}: the file differs from the one {MANIFEST_FILE} records (sha256); it was "
                           f"edited or damaged: {fix}")
    sums = load_counts(sums_path)
    wrong = [key for key in sums if not is_sum_key(key)]
    if wrong:
        raise SparcomError(f"{sums_path}: key {wrong[0]!r} is not an activation sum: {fix}")
    return sums


def check_run(path: Path, counts: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> None:
    """Refuse a finished run whose counts file is not the one its manifest records, or whose manifest contradicts
    its counts: other categories, other token or instruction totals, layer widths other than the model's, or a
    count above its category's counted tokens (a neuron is active on at most every counted token)."""
    counts_path = path / COUNTS_FILE
    fix = "restore the run or re-run 'sparcom profile'"
    recorded = manifest.get(COUNTS_SHA256)
    if recorded and file_sha256(counts_path) != recorded:
        raise SparcomError(f"{counts_path}: the file differs from the one {MANIFEST_FILE} records (sha256); it was "
                           f"edited or damaged: {fix}")
    listed = manifest.get("categories")
    present = categories_with_tokens(counts)
    if listed is not None and sorted(listed) != present:
        raise SparcomError(f"{path}: {MANIFEST_FILE} lists categories {', '.join(listed) or 'none'} but the counts "
                           f"hold {', '.join(present) or 'none'}: {fix}")
    for total, key_of in (("counted_tokens", tokens_key), ("instructions", instructions_key)):
        for category, value in (manifest.get(total) or {}).items():
            if key_of(category) in counts and int(counts[key_of(category)]) != value:
                raise SparcomError(f"{path}: {MANIFEST_FILE} says {total} {category} = {value} but the counts say "
                                   f"{int(counts[key_of(category)])}: {fix}")
    widths = ((manifest.get("model") or {}).get("sizes") or {}).get("mlp_neurons")
    for key in component_keys(counts):
        value = counts[str(key)]
        if key.kind == "neuron" and isinstance(widths, list):
            expected = widths[key.layer] if key.layer < len(widths) else None
            if value.shape != (expected,):
                raise SparcomError(f"{path}: count {str(key)!r} has shape {value.shape} but the model recorded in "
                                   f"{MANIFEST_FILE} has {expected} neurons at layer {key.layer}: {fix}")
        tokens = tokens_key(key.category)
        if tokens in counts and value.size and int(value.max()) > int(counts[tokens]):
            raise SparcomError(f"{path}: count {str(key)!r} reaches {int(value.max())}, above the "
                               f"{int(counts[tokens])} tokens counted for {key.category}; the counts are damaged: {fix}")


def write_run(folder: Path, counts: Mapping[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run into ``folder``: the counts and the activation sums (the ``sums/…`` keys of ``counts``,
    if any), then the manifest recording their sha256 (last, so a manifest that says complete always has its
    files)."""
    counts, sums = split_sums(counts)
    write_counts_atomic(folder / COUNTS_FILE, counts)
    manifest[COUNTS_SHA256] = file_sha256(folder / COUNTS_FILE)
    manifest.pop(SUMS_SHA256, None)
    if sums is not None:
        write_counts_atomic(folder / SUMS_FILE, sums, what="sums")
        manifest[SUMS_SHA256] = file_sha256(folder / SUMS_FILE)
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return manifest


def merge_runs(paths: list[str | Path], out: str | Path, overwrite: bool = False) -> ProfileRun:
    """Add runs of the same measurement over disjoint instructions into a new run directory.

    Refuses mismatched settings (the merge aspects of :data:`sparcom.provenance.MEASUREMENT`), overlapping
    instruction ids and counters of different shapes, each with the reason.
    """
    if len(paths) < 2:
        raise SparcomError("merge needs at least two runs")
    out = Path(out)
    with lock(out):  # held from the checks to the rename: a second merge into the same --out is refused
        return _merge(paths, out, overwrite)


def _merge(paths: list[str | Path], out: Path, overwrite: bool) -> ProfileRun:
    check_output_dir(out, overwrite, marker=MANIFEST_FILE, kind="profile run")
    runs = [load_run(p) for p in paths]
    first = runs[0]
    seen_ids: dict[str, Path] = {}
    for run in runs:
        for ids in run.manifest.get("instruction_ids", {}).values():
            for instruction_id in ids:
                if instruction_id in seen_ids:
                    raise SparcomError(f"cannot merge {run.path} into {seen_ids[instruction_id]}: both counted "
                                       f"instruction {instruction_id!r}; merge only runs over disjoint rows (ids are unique across "
                                       "merged runs: give reused ids new names)")
                seen_ids[instruction_id] = run.path
    merged: dict[str, np.ndarray] = {}
    for run in runs:
        reasons = mismatches(first.manifest, run.manifest, MERGE_ASPECTS)
        if reasons:
            raise SparcomError(f"cannot merge {run.path} with {first.path}: {reasons[0]}")
        for key, value in run.counts.items():  # runs may hold different categories
            if key.startswith(GROUPS):
                continue
            if key in merged and merged[key].shape != value.shape:
                raise SparcomError(f"cannot merge {run.path} with {first.path}: count {key!r} has shape "
                                   f"{tuple(value.shape)} in one run and {tuple(merged[key].shape)} in the other")
            merged[key] = merged[key] + value if key in merged else value.astype(np.int64, copy=True)
    if all(run.sums is not None for run in runs):  # exact to float64 rounding, like the ranks' sums
        for run in runs:
            for key, value in run.sums.items():
                merged[key] = merged[key] + value if key in merged else value.astype(np.float64, copy=True)
    groups = merged_groups(runs)
    if groups is not None:
        merged.update(groups[1])
    manifest = merged_manifest([r.manifest for r in runs], [str(r.path) for r in runs])
    if groups is not None:
        manifest["groups"] = groups[0]
    manifest["counted_tokens"] = {c: int(merged[tokens_key(c)]) for c in manifest["categories"]}
    manifest["instructions"] = {c: int(merged[instructions_key(c)]) for c in manifest["categories"]}
    with staged_directory(out, overwrite, marker=MANIFEST_FILE, kind="profile run") as staging:
        write_run(staging, merged, manifest)
    return load_run(out)


def merged_groups(runs: list[ProfileRun]) -> tuple[dict[str, list[str]], dict[str, np.ndarray]] | None:
    """Counts below the category of merged runs: groups with the same label add (the two halves of a category
    profiled in two shards), new labels are appended in run order. None when the runs keep no groups."""
    if not any(run.manifest.get("groups") for run in runs):
        return None
    labels: list[str] = []
    meta: dict[str, tuple[str, str]] = {}
    for run in runs:
        groups = run.manifest.get("groups") or {}
        for label, category, source in zip(groups.get("labels", []), groups.get("categories", []),
                                           groups.get("sources", []), strict=True):
            if label not in meta:
                labels.append(label)
                meta[label] = (category, source)
    whole_order = shards_group_order(runs, labels)
    if whole_order is not None:
        labels = whole_order
    position = {label: i for i, label in enumerate(labels)}
    arrays: dict[str, np.ndarray] = {}
    for run in runs:
        rows = np.array([position[label] for label in run.manifest["groups"]["labels"]], dtype=np.int64)
        for key, value in run.counts.items():
            if not key.startswith(GROUPS):
                continue
            if key not in arrays:
                arrays[key] = np.zeros((len(labels), *value.shape[1:]), dtype=np.int64)
            if arrays[key].shape[1:] != value.shape[1:]:
                raise SparcomError(f"cannot merge {run.path}: group counts {key!r} have shape {tuple(value.shape)} "
                                   f"here and {tuple(arrays[key].shape)} elsewhere")
            np.add.at(arrays[key], rows, value.astype(np.int64))
    manifest = {"labels": labels, "categories": [meta[label][0] for label in labels],
                "sources": [meta[label][1] for label in labels]}
    return manifest, arrays


def shards_group_order(runs: list[ProfileRun], labels: list[str]) -> list[str] | None:
    """The merged group labels in the whole run's order when every run is a shard (``--shard``) of one whole run;
    None otherwise (labels then stay in first-seen order)."""
    shards = [run.manifest.get("shard") or {} for run in runs]
    wholes = {(s.get("whole_rows_sha256"), s.get("count")) for s in shards}
    if len(wholes) != 1 or None in next(iter(wholes)) or any(s.get("group_positions") is None for s in shards):
        return None
    at: dict[str, int] = {}
    for run, shard in zip(runs, shards, strict=True):
        at.update(zip(run.manifest["groups"]["labels"], shard["group_positions"], strict=True))
    return sorted(labels, key=lambda label: at[label])


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
        shard=None,
        datasets=[m.get("dataset") for m in manifests],
        wall_time_seconds=sum(m.get("wall_time_seconds", 0.0) for m in manifests),
        complete=True,
    )
    return merged
