"""The selection artifact: ``selection.safetensors`` (masks) + ``selection.json`` (how they were made).

Masks are uint8 tensors (1 = selected) keyed exactly like the counts they were computed from
(``neuron/{cat}/{layer}`` [I], ``expert/{cat}/{layer}`` [E], ``expert_neuron/{cat}/{layer}`` [E, I_e],
``shared_neuron/{cat}/{layer}`` [I_s]). ``selection.json`` records the rule and its parameters, the source run
and the fingerprint fields of its manifest, so a later step (the causal check) can refuse a selection made for
another model or setting. :func:`load_selection` gives the masks back as boolean arrays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.kinds import component_keys, count_key, kinds_in, layers_of

SELECTION_FILE = "selection.safetensors"
SELECTION_META_FILE = "selection.json"
SELECTION_FORMAT = "sparcom-selection"
SELECTION_VERSION = 1


@dataclass
class Selection:
    """Loaded selection masks (boolean, keyed like the counts) and their metadata."""

    path: Path
    masks: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def categories(self) -> list[str]:
        return list(self.meta.get("categories") or sorted({k.category for k in component_keys(self.masks)}))

    def source_run(self, needed_by: str, otherwise: str):
        """The profile run this selection was made from, for what ``needed_by`` reads from it; one line naming
        the alternative ``otherwise`` when the run is not readable here."""
        from sparcom.artifacts.run import load_run

        source = (self.meta or {}).get("source_run")
        if not source or not Path(source).is_dir():
            raise SparcomError(f"{needed_by}, but the selection's profile run {source!r} is not readable here; run "
                               f"the check where the run is (or re-run identify), or pass {otherwise}")
        return load_run(source)

    @property
    def kinds(self) -> list[str]:
        return kinds_in(self.masks)

    def layers(self, kind: str) -> list[int]:
        return layers_of(self.masks, kind)

    def mask(self, kind: str, category: str, layer: int) -> np.ndarray:
        key = count_key(kind, category, layer)
        if key not in self.masks:
            raise SparcomError(f"{self.path}: the selection has no mask {key!r}")
        return self.masks[key]

    def indices(self, kind: str, category: str) -> dict[int, np.ndarray]:
        """Per layer, the selected positions: a vector of indices for 1-D masks, [n, 2] (expert, neuron) rows for 2-D."""
        result = {}
        for layer in self.layers(kind):
            mask = self.mask(kind, category, layer)
            result[layer] = np.flatnonzero(mask) if mask.ndim == 1 else np.argwhere(mask)
        return result

    def size(self, kind: str, category: str) -> int:
        return int(sum(int(self.mask(kind, category, j).sum()) for j in self.layers(kind)))


def masks_by_key(layout: Layout, categories: Sequence[str], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Split a flat mask [K, N] back into per-layer arrays keyed like the counts."""
    result = {}
    for i, category in enumerate(categories):
        for layer, array in layout.split(np.asarray(mask[i], dtype=bool)).items():
            result[count_key(layout.kind, category, layer)] = array
    return result


def write_selection(directory: str | Path, masks: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``selection.safetensors`` (uint8 masks) and ``selection.json`` into ``directory``."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    tensors = {key: np.ascontiguousarray(np.asarray(masks[key], dtype=bool).astype(np.uint8)) for key in sorted(masks)}
    # One metadata key: safetensors writes a multi-key metadata dict in no fixed order (unstable file bytes).
    save_file(tensors, str(directory / SELECTION_FILE), metadata={"format": f"{SELECTION_FORMAT}/{SELECTION_VERSION}"})
    document = {"format": SELECTION_FORMAT, "version": SELECTION_VERSION, **meta}
    (directory / SELECTION_META_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
                                                  + "\n", encoding="utf-8")


def load_selection(directory: str | Path) -> Selection:
    """Load a selection written by ``sparcom identify``; masks come back as boolean arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from sparcom.outputs import read_json

    directory = Path(directory)
    if not directory.is_dir():
        raise SparcomError(f"{directory}: selection directory not found; create one with 'sparcom identify RUN --out DIR'")
    meta_path, masks_path = directory / SELECTION_META_FILE, directory / SELECTION_FILE
    for path in (meta_path, masks_path):
        if not path.is_file():
            raise SparcomError(f"{directory}: no {path.name}; this is not a 'sparcom identify' output directory")
    meta = read_json(meta_path, "re-run 'sparcom identify'")
    if meta.get("format") != SELECTION_FORMAT or meta.get("version") != SELECTION_VERSION:
        raise SparcomError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r} is not "
                           f"{SELECTION_FORMAT} version {SELECTION_VERSION}; re-run 'sparcom identify'")
    try:
        raw = load_file(str(masks_path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparcomError(f"{masks_path}: unreadable selection masks ({reason}); re-run 'sparcom identify'") from None
    masks = {key: value.astype(bool) for key, value in raw.items()}
    return Selection(directory, masks, meta)
