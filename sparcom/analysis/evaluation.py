"""Judge a selection on instructions it never saw: decode another run's instructions with the selection's sets.

``sparcom identify`` measures validity by re-selecting on training folds of the same instructions. A selection
is a claim about the model, not about those instructions, so the stronger check keeps the sets fixed and decodes
the categories of *other* instructions, profiled with ``--group-by instruction`` on the same model and settings:

- nothing is re-selected; the k folds of the evaluated run only fit the decoders (standardisation of each
  component and the category centroids, on the training instructions) — :func:`sparcom.analysis.validity.
  held_out_fixed`;
- controls: R random sets per fold with the selection's per-layer (per-expert) shape, the centroid decoder on all
  components, and chance 1/K;
- the sets' specificity measured on the new instructions (mean contrast, share of the set whose most frequent
  category is its own).

A run of another measurement (model, weights, tokenizer, counted tokens, dtype) is refused: frequencies of
different measurements are not comparable (:data:`sparcom.provenance.EVALUATE_ASPECTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparcom.analysis.evidence import ValiditySettings, run_groups
from sparcom.analysis.groups import pool
from sparcom.analysis.validity import HeldOutDecoding, held_out_fixed, set_specificity, specificity
from sparcom.artifacts.run import ProfileRun, load_manifest
from sparcom.artifacts.selection import Selection
from sparcom.artifacts.summaries import EVALUATE_FORMAT, SUMMARY_VERSION
from sparcom.artifacts.summary import run_header
from sparcom.components import Layout
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_NOUNS, kinds_in
from sparcom.provenance import EVALUATE_ASPECTS, mismatches
from sparcom.results import Tabular


@dataclass
class KindEvaluation:
    """Held-out decoding of one kind's fixed sets on the evaluated run."""

    kind: str
    categories: tuple[str, ...]
    sizes: dict[str, int]
    decoding: HeldOutDecoding
    set_specificity: dict[str, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        return {"selected": self.sizes, "held_out_decoding": self.decoding.summary(),
                "set_specificity_on_this_run": self.set_specificity}


@dataclass
class EvaluateResult(Tabular):
    """Everything ``sparcom evaluate`` reports: per kind, how well the fixed sets decode other instructions."""

    selection: Selection
    run: ProfileRun
    settings: ValiditySettings
    kinds: dict[str, KindEvaluation]
    notes: list[str] = field(default_factory=list)

    @property
    def categories(self) -> tuple[str, ...]:
        return next(iter(self.kinds.values())).categories

    def headline(self) -> dict[str, dict[str, Any]]:
        """Per kind, the numbers a reader wants first (accuracy, CI, random mean and p per decoder; all; chance)."""
        return {kind: k.decoding.headline() for kind, k in self.kinds.items()}

    def summary(self) -> dict[str, Any]:
        meta = self.selection.meta
        return {**run_header(EVALUATE_FORMAT, SUMMARY_VERSION, self.run, self.settings.parameters()),
                "selection": {"path": str(self.selection.path), "rule": meta.get("parameters"),
                              "rule_description": meta.get("description"), "source_run": meta.get("source_run")},
                "headline": self.headline(), "kinds": {k: e.summary() for k, e in self.kinds.items()},
                "notes": self.notes}

    def tables(self) -> dict[str, list[dict]]:
        tables: dict[str, list[dict]] = {"evaluate_decoding": [], "evaluate_confusion": [], "evaluate_sets": []}
        for kind, k in self.kinds.items():
            tables["evaluate_decoding"] += [{"kind": kind, **r} for r in k.decoding.rows()]
            tables["evaluate_confusion"] += [{"kind": kind, **r} for r in k.decoding.confusion_rows()]
            tables["evaluate_sets"] += [{"kind": kind, "category": c, **values}
                                        for c, values in k.set_specificity.items()]
        return {name: rows for name, rows in tables.items() if rows}


def _flat_masks(selection: Selection, kind: str, layout: Layout, categories: tuple[str, ...]) -> np.ndarray:
    """The selection's [K, N] mask of ``kind`` in the evaluated run's layout (refusing a different layout)."""
    layers = selection.layers(kind)
    if tuple(layers) != layout.layers:
        raise SparcomError(f"{selection.path}: the {kind} selection has layers {layers[:3]}... but the run has "
                           f"{list(layout.layers)[:3]}...; evaluate a run of the model the selection was made on")
    rows = []
    for category in categories:
        per_layer = {j: selection.mask(kind, category, j) for j in layers}
        for j, shape in zip(layout.layers, layout.shapes, strict=True):
            if per_layer[j].shape != shape:
                raise SparcomError(f"{selection.path}: the {kind} mask of layer {j} is {per_layer[j].shape}, the "
                                   f"run's counts are {shape}; evaluate a run of the model the selection was made on")
        rows.append(layout.flatten(per_layer).astype(bool))
    return np.stack(rows)


def check_evaluable(selection: Selection, run: ProfileRun) -> None:
    """Refuse, with one line, a run the selection's sets cannot decode."""
    reasons = mismatches(selection.meta.get("manifest") or {}, run.manifest, EVALUATE_ASPECTS,
                         names=("selection", "run"))
    if reasons:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise SparcomError(f"{run.path} is not the measurement the selection {selection.path} was made on: "
                           f"{reasons[0]}{more}; profile the other instructions with the same model and settings")
    if run.manifest.get("group_by") != "instruction":
        raise SparcomError(f"{run.path}: evaluate decodes each instruction, but the run keeps counts per "
                           f"{run.manifest.get('group_by') or 'category'}; profile it with "
                           "'sparcom profile ... --group-by instruction'")
    if sorted(selection.categories) != sorted(run.categories):
        raise SparcomError(f"{run.path}: the run has categories {', '.join(run.categories)} but the selection has "
                           f"{', '.join(selection.categories)}; evaluate needs instructions of the same categories")


def _overlap_note(selection: Selection, run: ProfileRun) -> list[str]:
    """A note when the evaluated instructions include the selection's own (then decoding is not held out)."""
    source = selection.meta.get("source_run")
    try:
        source_ids = (load_manifest(source).get("instruction_ids") or {}) if source else {}
    except SparcomError:
        return [f"the selection's source run {source} is not readable: cannot check that the evaluated "
                "instructions are new"]
    shared = {i for ids in (run.manifest.get("instruction_ids") or {}).values() for i in ids} & {
        i for ids in source_ids.values() for i in ids}
    if shared:
        return [f"{len(shared)} evaluated instruction id(s) are also in the selection's source run (e.g. "
                f"{sorted(shared)[0]}): for them decoding is not held out from the selection"]
    return []


def evaluate(selection: Selection, run: ProfileRun, kinds: list[str] | None = None,
             settings: ValiditySettings | None = None) -> EvaluateResult:
    """Decode the categories of ``run``'s instructions with the fixed sets of ``selection`` (see the module)."""
    settings = (settings or ValiditySettings()).check()
    check_evaluable(selection, run)
    present = [k for k in selection.kinds if k in kinds_in(run.counts)]
    if kinds:
        missing = [k for k in kinds if k not in present]
        if missing:
            raise SparcomError(f"kind(s) {', '.join(missing)} are not in both the selection and the run; both have "
                               f"{', '.join(present) or 'none'}")
        present = [k for k in present if k in kinds]
    if not present:
        raise SparcomError(f"{selection.path} and {run.path} have no component kind in common")
    categories = tuple(selection.categories)
    results = {}
    for kind in present:
        groups = run_groups(run, kind, categories)
        mask = _flat_masks(selection, kind, groups.layout, categories)
        try:
            decoding = held_out_fixed(groups, mask, settings.folds, settings.seed, settings.random_sets,
                                      settings.level)
        except SparcomError as exc:
            raise SparcomError(f"{run.path}: {KIND_NOUNS.get(kind, kind)}: {exc}") from None
        freqs = pool(groups)
        scores = specificity(freqs.p, categories)
        sizes = {c: int(mask[i].sum()) for i, c in enumerate(categories)}
        results[kind] = KindEvaluation(kind, categories, sizes, decoding, set_specificity(mask, freqs.p, scores))
    return EvaluateResult(selection, run, settings, results, _overlap_note(selection, run))
