"""The causal check's run loop: deactivate each category's selected components and measure the damage.

For every target (``neurons``: dense, shared-expert and expert neurons together; ``experts``: ISEs) and every
category c whose set is ablated, the teacher-forced mean NLL of the reference responses is measured on every
evaluated category c' and compared with the unablated model: ΔNLL(c, c') = NLL_ablated(c') − NLL(c'). The
control is N random sets with c's per-layer (and per-expert) counts (:mod:`sparcom.causal.baseline`); the
statistics are in :mod:`sparcom.causal.statistics`, the result object in :mod:`sparcom.causal.result`, the files
in :mod:`sparcom.report.causal`. With ``generate``, greedy exact-match accuracy on the checkable categories (cls,
math, qa) is measured before and after each ablation, and after the first few random sets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.analysis.selection import SelectionRule
from sparcom.artifacts.run import load_manifest
from sparcom.causal import answers as ans
from sparcom.causal.baseline import random_like
from sparcom.causal.checkpoint import ConditionStore, Digest, open_store
from sparcom.causal.crossfit import FoldSelections, fold_selections
from sparcom.causal.interventions import Ablation, AblationStats, ablate, check_ablation
from sparcom.causal.nll import ScoredExample, category_means, encode_scored
from sparcom.causal.result import CausalResult, TargetResult
from sparcom.causal.scoring import ScoringPlan
from sparcom.causal.settings import TARGETS, CausalSettings
from sparcom.causal.spread import share_passes
from sparcom.causal.statistics import causal_statistics
from sparcom.data.batching import length_batches
from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.data.schema import (
    InstructionRow,
    category_label,
    first_rows_per_category,
    read_rows,
    source_balanced_rows,
)
from sparcom.distributed import join, load_for_rank
from sparcom.errors import SparcomError
from sparcom.kinds import CountKey, count_key
from sparcom.models.loading import LoadedModel, tokenizer_fingerprint
from sparcom.models.sites import ModelSites, model_sites
from sparcom.progress import progress_bar
from sparcom.provenance import ABLATE_ASPECTS, UNKNOWN_WEIGHTS, file_sha256, mismatches, software_versions

# ------------------------------------------------------------------------------------------- inputs


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
    ours = {"model.architecture": type(loaded.model).__name__, "model.fingerprint": loaded.info.get("fingerprint"),
            "tokenizer_hash": tokenizer_fingerprint(loaded.tokenizer),
            "model.sizes": model_sites(loaded.model).description(loaded.model)["sizes"]}
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


def _ordered_categories(selected: Sequence[str], rows: Sequence[InstructionRow]) -> list[str]:
    """The selection's categories that have rows, then the data's other categories (first-seen order)."""
    _, in_data = first_rows_per_category(rows)
    return [c for c in selected if c in in_data] + [c for c in in_data if c not in selected]


@dataclass
class Fold:
    """Rows scored with one family of sets: every row with a selection's sets, or (cross-fitting) the rows of one
    held-out fold with the sets selected on the other folds."""

    index: int | None
    rows: np.ndarray  # positions in CheckInputs.examples
    scoring: ScoringPlan  # the batches of those rows, built once
    ablations: dict[str, dict[str, Ablation]]  # target → category → set

    def key(self, *parts: str) -> str:
        """The condition's name in the checkpoint."""
        return "/".join(parts) + ("" if self.index is None else f"/fold{self.index}")

    def stream(self, target: str, category: str) -> str:
        """The random-set stream label (the same as before cross-fitting existed when there are no folds)."""
        return f"{target}/{category}" if self.index is None else f"{target}/{category}/fold{self.index}"


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
    def ablations(self) -> dict[str, dict[str, Ablation]]:
        """The sets of a check without folds (the first fold's otherwise)."""
        return self.folds[0].ablations

    @property
    def counts(self) -> np.ndarray:
        counts = np.zeros(len(self.examples), dtype=np.int64)
        for fold in self.folds:
            counts[fold.rows] = fold.scoring.counts
        return counts


def evaluated_rows(selection, data: Path, settings: CausalSettings) -> tuple[list[InstructionRow], int]:
    """The rows to score (``per_category`` of each category, half AI-written and half human-written, each source's
    first rows in file order; profiled ones skipped on request) and how many
    profiled ids were excluded; checked before any model loads."""
    rows = read_rows(data, require_output=True)
    exclude = profiled_ids(selection) if settings.exclude_profiled else set()
    rows, _ = source_balanced_rows(rows, settings.per_category, exclude)
    if not rows:
        raise SparcomError("no rows left to evaluate (all were profiled and --exclude-profiled is on); score the "
                           "profiled rows with cross-fitting instead (--run RUN --folds 5)")
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


def _ablations(masks: dict[str, np.ndarray], categories: list[str], targets: dict[str, list[str]],
               settings: CausalSettings, sites: ModelSites) -> dict[str, dict[str, Ablation]]:
    masks = unique_masks(masks, categories) if settings.unique else masks
    ablations = {name: {c: Ablation.from_masks(masks, c, kinds, label=f"{name}/{c}") for c in categories}
                 for name, kinds in targets.items()}
    for per_category in ablations.values():
        for ablation in per_category.values():
            check_ablation(ablation, sites, settings.expert_removal)
    return ablations


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
                          _ablations(masks, list(categories), targets, settings, sites)))
    return CheckInputs(model, sites, rows, examples, folds, list(categories), evaluated, targets, template,
                       system_prompt, excluded, notes, overridden, crossfit)


def model_dtype(model: LoadedModel) -> str:
    return str(next(model.model.parameters()).dtype).replace("torch.", "")


def check_digest(inputs: CheckInputs, settings: CausalSettings) -> str:
    """What fixes every condition's numbers (:mod:`sparcom.causal.checkpoint`): a resume needs the same digest."""
    digest = Digest()
    info = inputs.model.info
    digest.add("model", {"name": info.get("name_or_path"), "fingerprint": info.get("fingerprint"),
                         "dtype": model_dtype(inputs.model), "device": str(next(inputs.model.model.parameters()).device),
                         "architecture": type(inputs.model.model).__name__})
    digest.add("settings", {"seeds": settings.seeds, "seed": settings.seed, "expert_removal": settings.expert_removal,
                            "targets": inputs.targets, "unique": settings.unique, "generate": settings.generate,
                            "max_new_tokens": settings.max_new_tokens, "generate_seeds": settings.generate_seeds,
                            "batch_size": settings.batch_size, "template": inputs.template,
                            "system_prompt": inputs.system_prompt, "categories": inputs.categories})
    for example in inputs.examples:
        digest.add(example.row_id, [example.category, list(example.input_ids), list(example.scored)])
    for fold in inputs.folds:
        digest.add("fold", {"index": fold.index, "rows": fold.rows.tolist(),
                            "batches": [list(b.rows) for b in fold.scoring.batches]})
        for name, per_category in fold.ablations.items():
            for category, ablation in per_category.items():
                for kind in sorted(ablation.components):
                    for layer, indices in sorted(ablation.components[kind].items()):
                        digest.add(f"{name}/{category}/{kind}/{layer}", np.asarray(indices, dtype=np.int64))
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- passes


class _Evaluator:
    """Runs NLL passes and generations of one model under ablations, with one progress bar and the checkpoint."""

    def __init__(self, inputs: CheckInputs, settings: CausalSettings, bar, task, store: ConditionStore | None = None):
        self.inputs, self.settings = inputs, settings
        self.model, self.tokenizer = inputs.model.model, inputs.model.tokenizer
        self.pad_id = pad_token_id(self.tokenizer)
        self.bar, self.task = bar, task
        self.store = store

    def _step(self) -> None:
        self.bar.advance(self.task)

    def nll(self, fold: Fold, ablation: Ablation | None, key: str, description: str
            ) -> tuple[np.ndarray, dict[str, int]]:
        """Per-row summed NLL of ``fold``'s rows with ``ablation`` active (loaded when the checkpoint has it)."""
        if self.store is not None and self.store.has(key):
            self.bar.advance(self.task, len(fold.scoring.batches))
            return self.store.load(key)
        self.bar.update(self.task, description=description)
        if ablation is None:
            sums, counters = fold.scoring.run(self.model, self._step), {}
        else:
            with ablate(self.model, ablation, sites=self.inputs.sites,
                        expert_removal=self.settings.expert_removal) as stats:
                sums = fold.scoring.run(self.model, self._step)
            counters = {"fallback_tokens": stats.fallback_tokens, "removed_slots": stats.removed_slots,
                        "routed_slots": stats.routed_slots}
        if self.store is not None:
            self.store.save(key, sums, counters)
        return sums, counters

    def generate(self, ablation: Ablation | None, prompts, key: str, description: str) -> list[str]:
        s = self.settings
        batches = -(-len(prompts) // s.batch_size)
        if self.store is not None and self.store.has_texts(key):
            self.bar.advance(self.task, batches)
            return self.store.load_texts(key)
        self.bar.update(self.task, description=description)

        def run() -> list[str]:
            texts = ans.greedy_generate(self.model, self.tokenizer, prompts, s.max_new_tokens, s.batch_size,
                                        self.pad_id)
            self.bar.advance(self.task, batches)
            return texts

        if ablation is None:
            texts = run()
        else:
            with ablate(self.model, ablation, sites=self.inputs.sites, expert_removal=s.expert_removal):
                texts = run()
        if self.store is not None:
            self.store.save_texts(key, texts)
        return texts


def _category_vector(inputs: CheckInputs, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    means = category_means(inputs.examples, sums, counts, inputs.evaluated)
    return np.array([means[c]["nll"] for c in inputs.evaluated])


def baseline_sums(inputs: CheckInputs, evaluator: _Evaluator) -> np.ndarray:
    """Per-row summed NLL of the unablated model (each fold's rows in that fold's batches)."""
    base = np.zeros(len(inputs.examples))
    for fold in inputs.folds:
        base[fold.rows], _ = evaluator.nll(fold, None, fold.key("none"), "unablated")
    return base


def nll_targets(inputs: CheckInputs, settings: CausalSettings, evaluator: _Evaluator, base: np.ndarray,
                counts: np.ndarray, per_example: dict[str, np.ndarray]) -> dict[str, TargetResult]:
    """For each target: per-row NLL sums with each category's set deactivated and with each of its random sets
    (per fold when cross-fitting, pooled over the folds), the ΔNLL matrices and the paired statistics."""
    base_vector = _category_vector(inputs, base, counts)
    labels = [e.category for e in inputs.examples]
    seeds = settings.seeds
    results: dict[str, TargetResult] = {}
    for name, kinds in inputs.targets.items():
        a_count = len(inputs.categories)
        selected = np.tile(base, (a_count, 1))
        random = np.tile(base, (a_count, seeds, 1))
        stats: dict[str, AblationStats] = {}
        sizes: dict[str, list[int]] = {}
        for a, category in enumerate(inputs.categories):
            sizes[category] = [fold.ablations[name][category].size() for fold in inputs.folds]
            for fold in inputs.folds:
                ablation = fold.ablations[name][category]
                label = f"{name} {category_label(category)}" + ("" if fold.index is None else f" fold {fold.index}")
                if ablation.is_empty():
                    where = "" if fold.index is None else f" in fold {fold.index}"
                    inputs.notes.append(f"{name}: the {category_label(category)} set is empty{where}; its rows are "
                                        "unchanged by definition")
                    continue
                sums, counters = evaluator.nll(fold, ablation, fold.key(name, category, "selected"), label)
                selected[a, fold.rows] = sums
                total = stats.setdefault(category, AblationStats())
                total.fallback_tokens += counters.get("fallback_tokens", 0)
                total.removed_slots += counters.get("removed_slots", 0)
                total.routed_slots += counters.get("routed_slots", 0)
                for s in range(seeds):
                    control = random_like(ablation, settings.seed + s, fold.stream(name, category))
                    random[a, s, fold.rows], _ = evaluator.nll(fold, control, fold.key(name, category, f"random/{s:04d}"),
                                                               f"{label} random {s + 1}/{seeds}")
            if any(sizes[category]):
                per_example[f"{name}:{category}"] = selected[a]
        nll = np.stack([_category_vector(inputs, selected[a], counts) for a in range(a_count)])
        random_delta = np.zeros((a_count, seeds, len(inputs.evaluated)))
        for a in range(a_count):
            if any(sizes[inputs.categories[a]]):
                for s in range(seeds):
                    random_delta[a, s] = _category_vector(inputs, random[a, s], counts) - base_vector
        statistics = causal_statistics(
            base, selected, random, counts, labels, inputs.categories, inputs.evaluated,
            set_sizes=[sum(sizes[c]) for c in inputs.categories], target=name, replicates=settings.replicates,
            seed=settings.seed, test=settings.test)
        results[name] = TargetResult(name, kinds, list(inputs.categories), inputs.evaluated, inputs.ablations[name],
                                     nll, nll - base_vector[None, :], random_delta, stats, selected, random,
                                     statistics, fold_sizes=sizes if inputs.crossfit is not None else None)
    return results


@dataclass
class _Scorer:
    """Greedy exact-match scoring of generations into accuracy rows and generation records."""

    checks: list[ans.Check]
    evaluated: list[str]
    accuracy: list[dict[str, Any]]
    generations: list[dict[str, Any]]

    def __call__(self, texts: list[str], target: str, ablated: str | None, condition: str, seed: int | None) -> None:
        per_category: dict[str, list[bool]] = {}
        for check, text in zip(self.checks, texts, strict=True):
            correct = ans.is_correct(check, text)
            per_category.setdefault(check.category, []).append(correct)
            self.generations.append({"target": target, "ablated": ablated, "condition": condition, "seed": seed,
                                     "row_id": check.row_id, "category": check.category, "check": check.kind,
                                     "reference": check.reference, "prediction": ans.predicted(check, text),
                                     "correct": correct, "generation": text})
        for category in self.evaluated:
            if category in per_category:
                hits = per_category[category]
                self.accuracy.append({"target": target, "ablated": ablated, "condition": condition, "seed": seed,
                                      "evaluated": category, "correct": int(sum(hits)), "total": len(hits),
                                      "accuracy": sum(hits) / len(hits)})


def accuracy_runs(inputs: CheckInputs, settings: CausalSettings, evaluator: _Evaluator, checks, prompts,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Exact match unablated, with each set deactivated, and with its first ``generate_seeds`` random sets."""
    scorer = _Scorer(checks, inputs.evaluated, [], [])
    scorer(evaluator.generate(None, prompts, "generate/none", "generate unablated"), "none", None, "unablated", None)
    for name in inputs.targets:
        for category in inputs.categories:
            ablation = inputs.ablations[name][category]
            if ablation.is_empty():
                continue
            label = f"generate {name} {category_label(category)}"
            key = f"generate/{name}/{category}"
            scorer(evaluator.generate(ablation, prompts, f"{key}/selected", label), name, category, "selected", None)
            for s in range(min(settings.generate_seeds, settings.seeds)):
                control = random_like(ablation, settings.seed + s, f"{name}/{category}")
                scorer(evaluator.generate(control, prompts, f"{key}/random/{s:04d}", f"{label} random {s + 1}"),
                       name, category, "random", settings.seed + s)
    return scorer.accuracy, scorer.generations


def _planned_batches(inputs: CheckInputs, settings: CausalSettings, prompts: list) -> int:
    """Forward batches the progress bar will count: NLL passes, then generation batches."""
    passes = 0
    for fold in inputs.folds:
        active = [a for per in fold.ablations.values() for a in per.values() if not a.is_empty()]
        passes += (1 + len(active) * (1 + settings.seeds)) * len(fold.scoring.batches)
    gen_batches = -(-len(prompts) // settings.batch_size) if prompts else 0
    active = [a for per in inputs.ablations.values() for a in per.values() if not a.is_empty()]
    gen_runs = 1 + len(active) * (1 + min(settings.generate_seeds, settings.seeds)) if gen_batches else 0
    return passes + gen_runs * gen_batches


# ------------------------------------------------------------------------------------------- the check


def causal_check(
    model: str | LoadedModel,
    selection=None,
    data: str | Path | None = None,
    settings: CausalSettings | None = None,
    *,
    run=None,
    rule=None,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> CausalResult:
    """Run the causal check of ``selection`` (a directory or a loaded Selection) on ``model`` with ``data``.

    Cross-fitting (``settings.folds``): give ``run`` (a run profiled with ``--group-by instruction``) and ``rule``
    (a :class:`~sparcom.analysis.selection.SelectionRule`) instead of a selection. ``checkpoint`` (the output folder
    the result will be written to) keeps every finished condition beside it, so ``resume`` continues an interrupted
    check (:mod:`sparcom.causal.checkpoint`); ``overwrite`` discards an earlier checkpoint.
    """
    from sparcom.artifacts.selection import Selection, load_selection

    started = time.perf_counter()
    settings = settings or CausalSettings()
    ranks = join(device, device_map)  # under torchrun: the conditions are shared over the ranks (causal/spread.py)
    with ranks.step("reading the selection and data"):
        settings.check()
        if data is None:
            raise SparcomError("give --data: the rows whose reference responses are scored")
        data = Path(data)
        crossfit = None
        if settings.folds is not None:
            if selection is not None or run is None:
                raise SparcomError("--folds selects on each fold's complement of a run: give --run RUN (profiled "
                                   "with --group-by instruction) and --rule, not --selection")
            crossfit = fold_selections(_load_run(run), rule or SelectionRule(), settings.folds, settings.seed)
            selection = crossfit.selections[0]
            resolve_targets(selection, settings.targets)
            rows, excluded = crossfit_rows(crossfit, data, settings), 0
        else:
            if selection is None:
                raise SparcomError("give --selection (a 'sparcom identify' folder), or --run with --folds to "
                                   "cross-fit")
            if not isinstance(selection, Selection):
                selection = load_selection(selection)
            resolve_targets(selection, settings.targets)
            rows, excluded = evaluated_rows(selection, data, settings)
    if isinstance(model, str):
        model = load_for_rank(model, ranks, dtype=dtype, device=device, device_map=device_map)
    with ranks.step("checking the selection against the model"):
        inputs = prepare_inputs(model, selection, rows, excluded, settings, crossfit)
    store = None
    with ranks.step("opening the check's checkpoint"):
        if checkpoint is not None and ranks.is_main:  # rank 0 alone keeps the checkpoint (causal/spread.py)
            store = open_store(checkpoint, check_digest(inputs, settings), resume, overwrite)
    checks = [ans.make_check(r) for r in inputs.rows] if settings.generate else []
    checked = [i for i, c in enumerate(checks) if c is not None]
    if settings.generate and not checked:
        inputs.notes.append("--generate: no row has a checkable answer (cls label, math final number, short qa answer)")
    prompts = ans.encode_prompts([inputs.rows[i] for i in checked], model.tokenizer, inputs.template,
                                 inputs.system_prompt)
    bar = progress_bar("batches", enabled=progress and ranks.is_main, description_width=28)
    try:
        with bar:
            task = bar.add_task("baseline", total=_planned_batches(inputs, settings, prompts))
            evaluator = share_passes(_Evaluator(inputs, settings, bar, task, store), inputs, settings, prompts, ranks)
            base_sums = baseline_sums(inputs, evaluator)
            counts = inputs.counts
            per_example = {"none": base_sums}
            results = nll_targets(inputs, settings, evaluator, base_sums, counts, per_example)
            accuracy, generations = (accuracy_runs(inputs, settings, evaluator, [checks[i] for i in checked], prompts)
                                     if prompts else ([], []))
    finally:
        if store is not None:
            store.release()
    if store is not None and store.resumed:
        inputs.notes.append(f"resumed: {store.resumed} finished conditions were read from the checkpoint")
    baseline = category_means(inputs.examples, base_sums, counts, inputs.evaluated)
    info = dict(model.info)
    info.update(architecture=type(model.model).__name__, model_type=model.model.config.model_type,
                family=inputs.sites.family.name, layers=inputs.sites.layers, dtype=model_dtype(model),
                device=str(next(model.model.parameters()).device))
    meta = selection.meta
    manifest = meta.get("manifest") or {}
    selection_info = {"path": str(Path(selection.path).resolve()), "rule": meta.get("rule"),
                      "epsilon": meta.get("epsilon"), "description": meta.get("description"),
                      "source_run": meta.get("source_run"), "categories": list(inputs.categories),
                      "kinds": selection.kinds, "made_on": manifest.get("model.name_or_path"),
                      "crossfit": crossfit.summary() if crossfit is not None else None}
    data_info = {"path": str(data), "sha256": file_sha256(data),
                 "instructions": {c: baseline[c]["instructions"] for c in inputs.evaluated},
                 "instruction_ids": {c: [r.id for r in inputs.rows if r.category == c] for c in inputs.evaluated},
                 "excluded_profiled": inputs.excluded,
                 "scored_tokens": {c: baseline[c]["tokens"] for c in inputs.evaluated},
                 "forward_tokens": sum(f.scoring.tokens for f in inputs.folds)}
    if crossfit is not None:
        data_info["fold_of"] = {r.id: crossfit.fold_of[r.id] for r in inputs.rows}
    return CausalResult(settings, info, selection_info, data_info, inputs.template, inputs.system_prompt,
                        inputs.examples, inputs.evaluated, baseline, base_sums, counts, results, per_example,
                        accuracy, generations, list(dict.fromkeys(inputs.notes)), inputs.overridden,
                        time.perf_counter() - started, software_versions())


def _load_run(run):
    from sparcom.artifacts.run import ProfileRun, load_run

    return run if isinstance(run, ProfileRun) else load_run(run)
