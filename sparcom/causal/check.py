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

from sparcom.causal import answers as ans
from sparcom.causal.baseline import random_like
from sparcom.causal.interventions import Ablation, AblationStats, ablate, check_ablation
from sparcom.causal.nll import ScoredExample, category_means, encode_scored, example_nll
from sparcom.causal.result import CausalResult, TargetResult
from sparcom.causal.settings import TARGETS, CausalSettings
from sparcom.causal.spread import share_passes
from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, category_label, first_rows_per_category, read_rows
from sparcom.distributed import join, load_for_rank
from sparcom.errors import SparcomError
from sparcom.kinds import CountKey, count_key
from sparcom.models.loading import LoadedModel, tokenizer_fingerprint
from sparcom.models.sites import ModelSites, model_sites
from sparcom.profile.artifacts import load_manifest
from sparcom.profile.batching import length_batches
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
class CheckInputs:
    """Everything a check needs, prepared once: rows, encoded examples, the batch plan and the ablations."""

    model: LoadedModel
    sites: ModelSites
    rows: list[InstructionRow]
    examples: list[ScoredExample]
    plan: list[list[int]]
    categories: list[str]
    evaluated: list[str]
    targets: dict[str, list[str]]
    ablations: dict[str, dict[str, Ablation]]
    template: str
    system_prompt: str | None
    excluded: int
    notes: list[str]
    overridden: list[str]


def evaluated_rows(selection, data: Path, settings: CausalSettings) -> tuple[list[InstructionRow], int]:
    """The rows to score (first ``per_category`` of each category, profiled ones skipped on request) and how many
    profiled ids were excluded; checked before any model loads."""
    rows = read_rows(data, require_output=True)
    exclude = profiled_ids(selection) if settings.exclude_profiled else set()
    rows, _ = first_rows_per_category(rows, settings.per_category, exclude)
    if not rows:
        raise SparcomError("no rows left to evaluate (all were profiled and --exclude-profiled is on)")
    return rows, len(exclude)


def prepare_inputs(model: LoadedModel, selection, rows: list[InstructionRow], excluded: int,
                   settings: CausalSettings) -> CheckInputs:
    """Check the selection against the model and the data, encode the rows, build the ablations."""
    targets = resolve_targets(selection, settings.targets)
    overridden, notes = check_compatibility(selection, model, settings.force)
    sites = model_sites(model.model)
    categories = selection.categories
    masks = unique_masks(selection.masks, categories) if settings.unique else selection.masks
    ablations = {name: {c: Ablation.from_masks(masks, c, kinds, label=f"{name}/{c}") for c in categories}
                 for name, kinds in targets.items()}
    for per_category in ablations.values():
        for ablation in per_category.values():
            check_ablation(ablation, sites, settings.expert_removal)
    manifest = selection.meta.get("manifest") or {}
    check_tokenizer(model.tokenizer)
    template = resolve_template(model.tokenizer, manifest.get("template") or "auto")
    system_prompt = manifest.get("system_prompt")
    limit = getattr(model.model.config, "max_position_embeddings", None)
    examples = encode_scored(rows, model.tokenizer, template, system_prompt, limit)
    evaluated = _ordered_categories(categories, rows)
    if not any(c in evaluated for c in categories):
        notes.append("no evaluated category has a selected set of its own (the data and the selection share no "
                     "category), so the matrix has no diagonal")
    selection_dtype = manifest.get("dtype")
    if selection_dtype and selection_dtype != model_dtype(model):
        notes.append(f"the selection was profiled in {selection_dtype}; this check runs in {model_dtype(model)}")
    plan = length_batches([len(e) for e in examples], settings.batch_size)
    return CheckInputs(model, sites, rows, examples, plan, list(categories), evaluated, targets, ablations, template,
                       system_prompt, excluded, notes, overridden)


def model_dtype(model: LoadedModel) -> str:
    return str(next(model.model.parameters()).dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------------- passes


class _Evaluator:
    """Runs NLL passes and generations of one model under ablations, with one progress bar."""

    def __init__(self, inputs: CheckInputs, settings: CausalSettings, bar, task):
        self.inputs, self.settings = inputs, settings
        self.model, self.tokenizer = inputs.model.model, inputs.model.tokenizer
        self.pad_id = pad_token_id(self.tokenizer)
        self.bar, self.task = bar, task

    def _step(self) -> None:
        self.bar.advance(self.task)

    def nll(self, ablation: Ablation | None, description: str) -> tuple[np.ndarray, np.ndarray, AblationStats]:
        self.bar.update(self.task, description=description)
        examples, plan = self.inputs.examples, self.inputs.plan
        if ablation is None:
            sums, counts = example_nll(self.model, examples, plan, self.pad_id, self._step)
            return sums, counts, AblationStats()
        with ablate(self.model, ablation, sites=self.inputs.sites, expert_removal=self.settings.expert_removal) as stats:
            sums, counts = example_nll(self.model, examples, plan, self.pad_id, self._step)
        return sums, counts, stats

    def generate(self, ablation: Ablation | None, prompts, description: str) -> list[str]:
        self.bar.update(self.task, description=description)
        s = self.settings

        def run() -> list[str]:
            texts = ans.greedy_generate(self.model, self.tokenizer, prompts, s.max_new_tokens, s.batch_size,
                                        self.pad_id)
            self.bar.advance(self.task, -(-len(prompts) // s.batch_size))
            return texts

        if ablation is None:
            return run()
        with ablate(self.model, ablation, sites=self.inputs.sites, expert_removal=s.expert_removal):
            return run()


def _category_vector(inputs: CheckInputs, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    means = category_means(inputs.examples, sums, counts, inputs.evaluated)
    return np.array([means[c]["nll"] for c in inputs.evaluated])


def nll_targets(inputs: CheckInputs, settings: CausalSettings, evaluator: _Evaluator, base: np.ndarray,
                counts: np.ndarray, per_example: dict[str, np.ndarray]) -> dict[str, TargetResult]:
    """For each target: the NLL with each category's set deactivated, and the ΔNLL of its random sets."""
    base_vector = _category_vector(inputs, base, counts)
    results: dict[str, TargetResult] = {}
    for name, kinds in inputs.targets.items():
        nll = np.zeros((len(inputs.categories), len(inputs.evaluated)))
        random_delta = np.zeros((len(inputs.categories), settings.seeds, len(inputs.evaluated)))
        stats = {}
        for a, category in enumerate(inputs.categories):
            ablation = inputs.ablations[name][category]
            label = f"{name} {category_label(category)}"
            if ablation.is_empty():
                nll[a] = base_vector
                inputs.notes.append(f"{name}: the {category_label(category)} set is empty; its row is 0 by definition")
                continue
            sums, _, stats[category] = evaluator.nll(ablation, label)
            per_example[f"{name}:{category}"] = sums
            nll[a] = _category_vector(inputs, sums, counts)
            for s in range(settings.seeds):
                control = random_like(ablation, settings.seed + s, f"{name}/{category}")
                random_sums, _, _ = evaluator.nll(control, f"{label} random {s + 1}/{settings.seeds}")
                random_delta[a, s] = _category_vector(inputs, random_sums, counts) - base_vector
        results[name] = TargetResult(name, kinds, list(inputs.categories), inputs.evaluated, inputs.ablations[name],
                                     nll, nll - base_vector[None, :], random_delta, stats)
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
    scorer(evaluator.generate(None, prompts, "generate unablated"), "none", None, "unablated", None)
    for name in inputs.targets:
        for category in inputs.categories:
            ablation = inputs.ablations[name][category]
            if ablation.is_empty():
                continue
            label = f"generate {name} {category_label(category)}"
            scorer(evaluator.generate(ablation, prompts, label), name, category, "selected", None)
            for s in range(min(settings.generate_seeds, settings.seeds)):
                control = random_like(ablation, settings.seed + s, f"{name}/{category}")
                scorer(evaluator.generate(control, prompts, f"{label} random {s + 1}"), name, category, "random",
                       settings.seed + s)
    return scorer.accuracy, scorer.generations


def _planned_batches(inputs: CheckInputs, settings: CausalSettings, prompts: list) -> int:
    """Forward batches the progress bar will count: NLL passes, then generation batches."""
    active = [a for per in inputs.ablations.values() for a in per.values() if not a.is_empty()]
    passes = 1 + len(active) * (1 + settings.seeds)
    gen_batches = -(-len(prompts) // settings.batch_size) if prompts else 0
    gen_runs = 1 + len(active) * (1 + min(settings.generate_seeds, settings.seeds)) if gen_batches else 0
    return passes * len(inputs.plan) + gen_runs * gen_batches


# ------------------------------------------------------------------------------------------- the check


def causal_check(
    model: str | LoadedModel,
    selection,
    data: str | Path,
    settings: CausalSettings | None = None,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    progress: bool = True,
) -> CausalResult:
    """Run the causal check of ``selection`` (a directory or a loaded Selection) on ``model`` with ``data``."""
    from sparcom.analysis.selection_file import Selection, load_selection

    started = time.perf_counter()
    settings = settings or CausalSettings()
    ranks = join(device, device_map)  # under torchrun: the conditions are shared over the ranks (causal/spread.py)
    with ranks.step("reading the selection and data"):
        settings.check()
        if not isinstance(selection, Selection):
            selection = load_selection(selection)
        data = Path(data)
        resolve_targets(selection, settings.targets)
        rows, excluded = evaluated_rows(selection, data, settings)
    if isinstance(model, str):
        model = load_for_rank(model, ranks, dtype=dtype, device=device, device_map=device_map)
    with ranks.step("checking the selection against the model"):
        inputs = prepare_inputs(model, selection, rows, excluded, settings)
    checks = [ans.make_check(r) for r in inputs.rows] if settings.generate else []
    checked = [i for i, c in enumerate(checks) if c is not None]
    if settings.generate and not checked:
        inputs.notes.append("--generate: no row has a checkable answer (cls label, math final number, short qa answer)")
    prompts = ans.encode_prompts([inputs.rows[i] for i in checked], model.tokenizer, inputs.template,
                                 inputs.system_prompt)
    bar = progress_bar("batches", enabled=progress and ranks.is_main, description_width=28)
    with bar:
        task = bar.add_task("baseline", total=_planned_batches(inputs, settings, prompts))
        evaluator = share_passes(_Evaluator(inputs, settings, bar, task), inputs, settings, prompts, ranks)
        base_sums, counts, _ = evaluator.nll(None, "unablated")
        per_example = {"none": base_sums}
        results = nll_targets(inputs, settings, evaluator, base_sums, counts, per_example)
        accuracy, generations = (accuracy_runs(inputs, settings, evaluator, [checks[i] for i in checked], prompts)
                                 if prompts else ([], []))
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
                      "kinds": selection.kinds, "made_on": manifest.get("model.name_or_path")}
    data_info = {"path": str(data), "sha256": file_sha256(data),
                 "instructions": {c: baseline[c]["instructions"] for c in inputs.evaluated},
                 "instruction_ids": {c: [r.id for r in inputs.rows if r.category == c] for c in inputs.evaluated},
                 "excluded_profiled": inputs.excluded}
    return CausalResult(settings, info, selection_info, data_info, inputs.template, inputs.system_prompt,
                        inputs.examples, inputs.evaluated, baseline, base_sums, counts, results, per_example,
                        accuracy, generations, list(dict.fromkeys(inputs.notes)), inputs.overridden,
                        time.perf_counter() - started, software_versions())
