"""Where an artifact came from and what it measured: file hashes, software versions, and the one definition of
"the same measurement" that merge, compare, identify and the causal check all use."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (weights files are gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions(*extra: str) -> dict[str, str]:
    """Versions of Python, sparcom, torch and transformers (and any ``extra`` installed packages)."""
    versions = {"python": platform.python_version()}
    for name in ("sparcom", "torch", "transformers", *extra):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


# --------------------------------------------------------------------------------------------- the same measurement

#: The manifest fields that identify a measurement, each with the aspect it belongs to. Every check that refuses to
#: mix two artifacts (merge, compare, a selection's fingerprint, the causal check) reads this one table.
MEASUREMENT: dict[str, str] = {
    "model.architecture": "model",
    "model.sizes": "model",
    "model.fingerprint": "weights",
    "tokenizer_hash": "tokenizer",
    "scope": "tokens",
    "template": "tokens",
    "system_prompt": "tokens",
    "dtype": "numerics",
    "group_by": "groups",
    "bootstrap.replicates": "counters",
    "bootstrap.seed": "counters",
    "moe_counting.expert_neurons": "counters",
}
#: Which aspects must agree, per check: merged runs must be the same measurement in every respect; a base → tuned
#: comparison differs in weights by design (and may differ in bootstrap counters); a causal check needs the model
#: the selection was made on.
MERGE_ASPECTS: tuple[str, ...] = ("model", "weights", "tokenizer", "tokens", "numerics", "counters", "groups")
COMPARE_ASPECTS: tuple[str, ...] = ("model", "tokenizer", "tokens", "numerics", "groups")
ABLATE_ASPECTS: tuple[str, ...] = ("model", "weights", "tokenizer")
#: Decoding other instructions with a selection's sets (``sparcom evaluate``) compares frequencies across runs: the
#: same model and weights, the same counted tokens and numerics (grouping and bootstrap counters may differ).
EVALUATE_ASPECTS: tuple[str, ...] = ("model", "weights", "tokenizer", "tokens", "numerics")
#: Fields a selection records beside the measurement, for people (not compared).
DISPLAY_FIELDS: tuple[str, ...] = ("model.name_or_path", "template_policy")
#: The value of a field that artifacts written before it existed did not record.
ADDED_LATER: dict[str, Any] = {"group_by": "category"}


def get_field(record: Mapping[str, Any], dotted: str) -> Any:
    """A manifest field by dotted path (``model.sizes``); a flat record with dotted keys works too."""
    if dotted in record:
        return record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return ADDED_LATER.get(dotted) if value is None else value


def measurement(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The identifying fields of a run manifest, flat with dotted keys (what ``selection.json`` records)."""
    return {dotted: get_field(manifest, dotted) for dotted in (*DISPLAY_FIELDS, *MEASUREMENT)}


def _shown(value: Any) -> Any:
    return value if len(repr(value)) <= 60 else repr(value)[:57] + "..."


#: Weight fingerprints that identify nothing (a model too large to hash in memory, or none recorded).
UNKNOWN_WEIGHTS = (None, "unhashed")


def mismatches(a: Mapping[str, Any], b: Mapping[str, Any], aspects: tuple[str, ...],
               names: tuple[str, str] = ("", "")) -> list[str]:
    """Every identifying field of the given aspects on which two records differ, as readable reasons.

    Values are compared exactly (``system_prompt`` None is "no system prompt"), except weight fingerprints that
    identify nothing (:data:`UNKNOWN_WEIGHTS`), which cannot disagree.
    """
    reasons = []
    for dotted, aspect in MEASUREMENT.items():
        if aspect not in aspects:
            continue
        left, right = get_field(a, dotted), get_field(b, dotted)
        if aspect == "weights" and (left in UNKNOWN_WEIGHTS or right in UNKNOWN_WEIGHTS):
            continue
        if left != right:
            first, second = (f"{name} " if name else "" for name in names)
            reasons.append(f"{dotted} differs ({first}{_shown(left)!r}, {second}{_shown(right)!r})")
    return reasons
