"""What the examples pass will record, decided before any model loads: the selection, the components (listed,
or the top members of each category's set), the rows and how they become tokens. No torch here, so a bad
selection, run or dataset is refused at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.analysis.ranking import card_components, flat_position
from sparcom.components import Component
from sparcom.data.formatting import FormatSettings
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows
from sparcom.errors import SparcomError
from sparcom.examples.settings import DEFAULT_PER_CATEGORY, ExamplesSettings
from sparcom.provenance import ABLATE_ASPECTS, measurement, mismatches


@dataclass
class ExamplesPlan:
    """The inputs of one examples pass, checked."""

    selection: Any  # a loaded Selection
    components: list[Component]
    listed: bool  # the caller listed the components (else: the top members of each set)
    format: FormatSettings  # the selection's scope, template policy and system prompt
    template: str  # the template the counts were made with (or the policy, resolved on the tokenizer)
    rows: list[InstructionRow]
    data: Path
    settings: ExamplesSettings
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # per component: frequencies, sets

    @property
    def manifest(self) -> dict[str, Any]:
        return self.selection.meta.get("manifest") or {}


def default_components(selection, run=None, per_category: int = DEFAULT_PER_CATEGORY,
                       kinds: Sequence[str] | None = None) -> tuple[list[Component], dict[str, dict[str, Any]]]:
    """The top ``per_category`` members of each category's set by frequency and by the margin score, per kind,
    with each one's frequencies across categories (from the selection's source run, or ``run``)."""
    from sparcom.analysis.frequencies import kind_frequencies
    from sparcom.artifacts.run import ProfileRun, load_run

    if run is None:
        source = selection.meta.get("source_run")
        if not source or not Path(source).is_dir():
            raise SparcomError(f"{selection.path}: its source run {source!r} is not readable here; pass the run "
                               "(run=...) or list the components to record")
        run = source
    if not isinstance(run, ProfileRun):
        run = load_run(run)
    categories = selection.categories
    check_run_matches(selection, run)
    chosen: list[Component] = []
    extra: dict[str, dict[str, Any]] = {}
    for kind in kinds or selection.kinds:
        freqs = kind_frequencies(run.counts, categories, kind)
        mask = np.stack([freqs.layout.flatten({j: selection.mask(kind, c, j) for j in freqs.layout.layers})
                         for c in categories])
        picked = card_components(freqs.p, mask, freqs.layout, categories, per_category)
        for c in picked:
            flat = flat_position(freqs.layout, c)
            extra[c.key] = {"p": {cat: float(freqs.p[i, flat]) for i, cat in enumerate(categories)},
                            "selected_for": [cat for i, cat in enumerate(categories) if mask[i, flat]]}
        chosen += picked
    return chosen, extra


def check_run_matches(selection, run) -> None:
    """Refuse a profile run that is not the selection's measurement (another model, sizes or tokenizer) or lacks
    a category the selection names: its frequencies would describe other components."""
    missing = [c for c in selection.categories if c not in run.categories]
    if missing:
        raise SparcomError(f"{run.path}: the run has no {', '.join(missing)} rows but the selection {selection.path} "
                           f"names {'that category' if len(missing) == 1 else 'those categories'}; pass the "
                           "selection's own profile run (--run)")
    recorded = selection.meta.get("manifest") or {}
    reasons = mismatches(recorded, measurement(run.manifest), ABLATE_ASPECTS, names=("selection", "run"))
    if recorded and reasons:
        raise SparcomError(f"{run.path}: not the run the selection {selection.path} was made from: {reasons[0]}; "
                           "pass the selection's own profile run (--run)")


def plan_examples(selection, data: str | Path, settings: ExamplesSettings,
                  components: Sequence[Component | str] | None = None, run=None) -> ExamplesPlan:
    """Load the selection, choose the components and read the rows (``settings`` already checked)."""
    from sparcom.artifacts.selection import Selection, load_selection

    if not isinstance(selection, Selection):
        selection = load_selection(selection)
    extra: dict[str, dict[str, Any]] = {}
    if components is None:
        chosen, extra = default_components(selection, run, settings.components_per_category)
    else:
        chosen = [c if isinstance(c, Component) else Component.from_key(c) for c in components]
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise SparcomError("no components to record: the selection's sets are empty")
    manifest = selection.meta.get("manifest") or {}
    fmt = FormatSettings(manifest.get("scope") or "instruction", manifest.get("template_policy") or "auto",
                         manifest.get("system_prompt"))
    data = Path(data)
    rows = read_rows(data, categories=settings.categories, require_output=fmt.needs_response)
    if settings.rows_per_category is not None:
        rows, _ = first_rows_per_category(rows, settings.rows_per_category)
    return ExamplesPlan(selection, chosen, components is not None, fmt, manifest.get("template") or fmt.template,
                        rows, data, settings, extra)


__all__ = ["ExamplesPlan", "check_run_matches", "default_components", "plan_examples"]
