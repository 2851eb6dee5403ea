"""The causal check's inputs, checked and prepared once before any pass: which targets, rows and sets.

The selection (or, cross-fitting, one selection per fold) is checked against the model and the data; the rows
are encoded once, split into folds with their batches, and each fold gets its selected sets — target → category →
:class:`~sparcom.components.ComponentSet` — from which :func:`sparcom.causal.plan.build_plan` lists the conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import load_manifest
from sparcom.causal.controls import CONTROL_TABLE
from sparcom.causal.crossfit import FoldSelections, fold_selections
from sparcom.causal.interventions import check_ablation
from sparcom.causal.nll import ScoredExample, encode_scored
from sparcom.causal.plan import Fold
from sparcom.causal.scoring import ScoringPlan
from sparcom.causal.settings import TARGETS, CausalSettings
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows, source_balanced_rows
from sparcom.errors import SparcomError
from sparcom.kinds import CountKey, count_key
from sparcom.models.loading import LoadedModel
from sparcom.models.sites import ModelSites, model_sites
from sparcom.provenance import ABLATE_ASPECTS, UNKNOWN_WEIGHTS, mismatches


def resolve_targets(selection, requested: Sequence[str] | None) -> dict[str, list[str]]:
    """Target name → the kinds of it that the selection holds; every target with something by default."""
    present = selection.kinds
    names = list(requested) if requested else list(TARGETS)
    targets = {}
    for name in names:
        kinds = [k for k in TARGETS.get(name, (name,)) if k in present]
        if kinds:
            targets[name] = kinds
        elif requested:
            raise SparcomError(f"target {name!r}: the selection has no {' / '.join(TARGETS.get(name, (name,)))} masks "
                               f"(it has {', '.join(present) or 'none'})")
    if not targets:
        raise SparcomError(f"{selection.path}: the selection holds no component masks")
    return targets


def unique_masks(masks: dict[str, np.ndarray], categories: Sequence[str]) -> dict[str, np.ndarray]:
    """Each category's mask minus every other category's (the components selected for that category only)."""
    result = {}
    for key, mask in masks.items():
        parsed = CountKey.parse(key)
        other_keys = [count_key(parsed.kind, c, parsed.layer) for c in categories if c != parsed.category]
        others = [masks[k] for k in other_keys if k in masks]
        result[key] = mask & ~np.logical_or.reduce(others) if others else mask.copy()
    return result


def check_compatibility(selection, loaded: LoadedModel, force: bool) -> tuple[list[str], list[str]]:
    """Refuse a selection made on another model or tokenizer (unless ``force``); (overridden reasons, notes).

    The selection's recorded measurement is compared with the loaded model on the ablate aspects of
    :data:`sparcom.provenance.MEASUREMENT` (architecture and sizes, weights, tokenizer).
    """
    recorded = selection.meta.get("manifest") or {}
    made_on = recorded.get("model.name_or_path") or "another model"
    ours = loaded.measurement()
    theirs = {dotted: recorded.get(dotted) for dotted in ours}
    notes = []
    if theirs["model.fingerprint"] in UNKNOWN_WEIGHTS or ours["model.fingerprint"] in UNKNOWN_WEIGHTS:
        notes.append("the model's weights could not be compared with the selection's (no fingerprint on one side)")
    for dotted in ("model.sizes", "tokenizer_hash"):
        if theirs[dotted] is None:
            theirs[dotted] = ours[dotted]
            notes.append(f"the selection records no {dotted}; it could not be checked")
    problems = [f"{reason} — made on {made_on}" for reason in
                mismatches(theirs, ours, ABLATE_ASPECTS, names=("selection", "this model"))]
    if problems and not force:
        raise SparcomError(f"{selection.path}: selection made on another model: {'; '.join(problems)}; "
                           "pass --force to ablate anyway")
    return problems, notes


def profiled_ids(selection) -> set[str]:
    """Instruction ids the selection's source run counted (for --exclude-profiled)."""
    source = selection.meta.get("source_run")
    if not source or not Path(source).is_dir():
        raise SparcomError(f"--exclude-profiled: the selection's source run {source!r} is not readable here; "
                           "its manifest lists the profiled instruction ids")
    listed = load_manifest(source).get("instruction_ids") or {}
    return {i for ids in listed.values() for i in ids}


def known_profiled_ids(selection) -> set[str]:
    """The instruction ids the selection's source run counted, or none when the run is not readable here."""
    try:
        return profiled_ids(selection)
    except SparcomError:
        return set()


def in_sample_note(selection, rows: Sequence[InstructionRow]) -> str | None:
    """A note when scored rows are rows the selection was made from (None when none are, or it cannot be told)."""
    profiled = known_profiled_ids(selection)
    seen = sum(1 for r in rows if r.id in profiled)
    if not seen:
        return None
    return (f"{seen} of {len(rows)} scored rows were profiled to make the selection: the sets were chosen on them, "
            "which favours the selected sets over random ones (in-sample); pass --exclude-profiled to score other "
            "rows, or cross-fit (--run RUN --crossfit-folds 5)")


def _ordered_categories(selected: Sequence[str], rows: Sequence[InstructionRow]) -> list[str]:
    """The selection's categories that have rows, then the data's other categories (first-seen order)."""
    _, in_data = first_rows_per_category(rows)
    return [c for c in selected if c in in_data] + [c for c in in_data if c not in selected]


@dataclass
class CheckInputs:
    """Everything a check needs, prepared once: rows, encoded examples, the folds with their batches and sets."""

    model: LoadedModel
    sites: ModelSites
    rows: list[InstructionRow]
    examples: list[ScoredExample]
    folds: list[Fold]
    categories: list[str]
    evaluated: list[str]
    targets: dict[str, list[str]]
    template: str
    system_prompt: str | None
    excluded: int
    notes: list[str]
    overridden: list[str]
    crossfit: FoldSelections | None = None

    @property
    def sets(self) -> dict[str, dict[str, ComponentSet]]:
        """The selected sets of a check without folds (the first fold's otherwise): target → category → set."""
        return self.folds[0].sets

    @cached_property
    def counts(self) -> np.ndarray:
        """Scored tokens per row (the same under every condition)."""
        counts = np.zeros(len(self.examples), dtype=np.int64)
        for fold in self.folds:
            counts[fold.rows] = fold.scoring.counts
        return counts


def evaluated_rows(selection, data: Path, settings: CausalSettings) -> tuple[list[InstructionRow], int]:
    """The rows to score (``per_category`` of each category, half AI-written and half human-written, each source's
    first rows in file order; profiled ones skipped on request) and how many profiled ids were excluded; checked
    before any model loads."""
    rows = read_rows(data, require_output=True)
    exclude = profiled_ids(selection) if settings.exclude_profiled else set()
    rows, _ = source_balanced_rows(rows, settings.per_category, exclude)
    if not rows:
        raise SparcomError("no rows left to evaluate (all were profiled and --exclude-profiled is on); score the "
                           "profiled rows with cross-fitting instead (--run RUN --crossfit-folds 5)")
    return rows, len(exclude)


def crossfit_rows(crossfit: FoldSelections, data: Path, settings: CausalSettings) -> list[InstructionRow]:
    """The rows of ``data`` that the run profiled (each belongs to one fold), ``per_category`` of each shared
    equally over the sources."""
    rows = [r for r in read_rows(data, require_output=True) if r.id in crossfit.fold_of]
    rows, _ = source_balanced_rows(rows, settings.per_category)
    if not rows:
        raise SparcomError(f"{data}: none of the run's profiled instructions is in this file; give the dataset "
                           f"{crossfit.run.path} was profiled on")
    return rows


def _selected_sets(masks: dict[str, np.ndarray], categories: list[str], targets: dict[str, list[str]],
                   settings: CausalSettings, sites: ModelSites) -> dict[str, dict[str, ComponentSet]]:
    """Target → category → the set it deactivates (checked against the model)."""
    masks = unique_masks(masks, categories) if settings.unique else masks
    sets = {name: {c: ComponentSet.from_masks(masks, c, kinds, label=f"{name}/{c}") for c in categories}
            for name, kinds in targets.items()}
    for per_category in sets.values():
        for selected in per_category.values():
            check_ablation(selected, sites, settings.expert_removal)
    return sets


def prepare_inputs(model: LoadedModel, selection, rows: list[InstructionRow], excluded: int,
                   settings: CausalSettings, crossfit: FoldSelections | None = None) -> CheckInputs:
    """Check the selection against the model and the data, encode the rows once, build the batches and the sets
    (one fold without cross-fitting; with ``crossfit``, one fold per held-out part, ``selection`` is its first)."""
    targets = resolve_targets(selection, settings.targets)
    overridden, notes = check_compatibility(selection, model, settings.force)
    sites = model_sites(model.model)
    categories = selection.categories
    manifest = selection.meta.get("manifest") or {}
    check_tokenizer(model.tokenizer)
    template = resolve_template(model.tokenizer, manifest.get("template") or "auto")
    system_prompt = manifest.get("system_prompt")
    limit = getattr(model.model.config, "max_position_embeddings", None)
    examples = encode_scored(rows, model.tokenizer, template, system_prompt, limit, settings.max_scored_tokens)
    evaluated = _ordered_categories(categories, rows)
    if not any(c in evaluated for c in categories):
        notes.append("no evaluated category has a selected set of its own (the data and the selection share no "
                     "category), so the matrix has no diagonal")
    selection_dtype = manifest.get("dtype")
    if selection_dtype and selection_dtype != model_dtype(model):
        notes.append(f"the selection was profiled in {selection_dtype}; this check runs in {model_dtype(model)}")
    if crossfit is None and not settings.exclude_profiled and (note := in_sample_note(selection, rows)):
        notes.append(note)
    main = CONTROL_TABLE[settings.controls[0]]
    if main.whole_bins:
        notes.append(f"the main control ({settings.controls[0]}) draws near misses, which the selection biases: for "
                     "sets that fill the top bins they are less frequent than the set (docs/causal.md, \"Which "
                     f"control by default\"); its verdicts are for comparison — put --control {main.whole_bins} "
                     "first for whole bins")
    if settings.max_scored_tokens:
        reached = sum(1 for e in examples if e.tokens == settings.max_scored_tokens)
        notes.append(f"only the first {settings.max_scored_tokens} tokens of each reference response are scored "
                     f"(--max-scored-tokens); {reached} of {len(rows)} rows reach the cap")
    pad_id = pad_token_id(model.tokenizer)
    if crossfit is None:
        parts = [(None, np.arange(len(examples)), selection.masks)]
    else:
        fold_of = np.array([crossfit.fold_of[r.id] for r in rows])
        parts = [(f, np.flatnonzero(fold_of == f), crossfit.selections[f].masks) for f in range(crossfit.folds)]
    folds = []
    for index, positions, masks in parts:
        if positions.size == 0:
            notes.append(f"fold {index} has no scored rows (--per-category keeps the first rows only)")
            continue
        subset = [examples[i] for i in positions]
        plan = length_batches([len(e) for e in subset], settings.batch_size)
        folds.append(Fold(index, positions, ScoringPlan.build(subset, plan, pad_id),
                          _selected_sets(masks, list(categories), targets, settings, sites)))
    return CheckInputs(model, sites, rows, examples, folds, list(categories), evaluated, targets, template,
                       system_prompt, excluded, notes, overridden, crossfit)


def model_dtype(model: LoadedModel) -> str:
    return str(next(model.model.parameters()).dtype).replace("torch.", "")


def read_inputs(selection, data, settings: CausalSettings, run=None, rule=None
                ) -> tuple[object, list[InstructionRow], int, FoldSelections | None]:
    """The selection (cross-fitting: the fold selections of ``run`` under ``rule``), the rows to score and how many
    profiled rows were excluded — all checked before any model loads."""
    from sparcom.artifacts.run import ProfileRun, load_run
    from sparcom.artifacts.selection import Selection, load_selection

    settings.check()
    if data is None:
        raise SparcomError("give --data: the rows whose reference responses are scored")
    data = Path(data)
    if settings.folds is not None:
        if selection is not None or run is None:
            raise SparcomError("--crossfit-folds selects on each fold's complement of a run: give --run RUN (profiled "
                               "with --group-by instruction) and --rule, not --selection")
        run = run if isinstance(run, ProfileRun) else load_run(run)
        crossfit = fold_selections(run, rule or SelectionRule(), settings.folds, settings.seed)
        resolve_targets(crossfit.selections[0], settings.targets)
        return crossfit.selections[0], crossfit_rows(crossfit, data, settings), 0, crossfit
    if selection is None:
        raise SparcomError("give --selection (a 'sparcom identify' folder), or --run with --crossfit-folds to cross-fit")
    if not isinstance(selection, Selection):
        selection = load_selection(selection)
    resolve_targets(selection, settings.targets)
    return (selection, *evaluated_rows(selection, data, settings), None)
