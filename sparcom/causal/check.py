"""The causal check as plan → run → assemble: deactivate each category's selected components and measure the damage.

For every target (``neurons``: dense, shared-expert and expert neurons together; ``experts``: ISEs) and every
category c whose set is ablated, the teacher-forced mean NLL of the reference responses is measured on every
evaluated category c' and compared with the unablated model: ΔNLL(c, c') = NLL_ablated(c') − NLL(c'). The
control is N random sets with c's per-layer (and per-expert) counts (:mod:`sparcom.random_sets`). With
``generate``, greedy exact-match accuracy on the checkable categories (cls, math, qa) is measured before and after
each ablation, and after the first few random sets.

The inputs are checked and prepared once (:mod:`sparcom.causal.inputs`); :func:`~sparcom.causal.plan.build_plan`
lists every condition; :func:`run_plan` computes them (shared over torchrun ranks, each finished condition kept in
the checkpoint); :func:`assemble` turns the results, keyed by condition, into per-row arrays, the statistics
(:mod:`sparcom.causal.statistics`) and the accuracy rows. The result object is in :mod:`sparcom.causal.result`, the
files in :mod:`sparcom.report.causal`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sparcom.causal import answers as ans
from sparcom.causal.checkpoint import ConditionStore, open_store
from sparcom.causal.controls import (
    CONTROL_TABLE,
    NEAR_MISSES,
    STATISTICS,
    Matching,
    MatchRow,
    control_matching,
    match_row,
)
from sparcom.causal.decisions import power_note
from sparcom.causal.dose import DoseCurve, DoseResponse, dose_sets
from sparcom.causal.inputs import CheckInputs, model_dtype, prepare_inputs, read_inputs
from sparcom.causal.interventions import AblationStats, InterventionReference
from sparcom.causal.nll import category_means
from sparcom.causal.plan import Axes, Condition, ConditionKey, Plan, build_plan, plan_digest, set_size
from sparcom.causal.reference import intervention_reference, read_means
from sparcom.causal.result import CausalResult, TargetResult
from sparcom.causal.settings import CausalSettings
from sparcom.causal.spread import my_conditions, run_shared
from sparcom.causal.statistics import causal_statistics, settled_after
from sparcom.data.formatting import pad_token_id
from sparcom.data.schema import category_label
from sparcom.distributed import Ranks, join, load_for_rank
from sparcom.models.loading import LoadedModel
from sparcom.progress import progress_bar
from sparcom.provenance import file_sha256, software_versions
from sparcom.stats import ALPHA
from sparcom.zoo.catalog import preview_model

# ------------------------------------------------------------------------------------------- run


class _Evaluator:
    """Runs one condition's pass on the model, with one progress bar and the checkpoint (rank 0 keeps it)."""

    def __init__(self, inputs: CheckInputs, settings: CausalSettings, prompts: list, bar, task,
                 store: ConditionStore | None = None, reference: InterventionReference | None = None) -> None:
        self.inputs, self.settings, self.prompts, self.reference = inputs, settings, prompts, reference
        self.model, self.tokenizer = inputs.model.model, inputs.model.tokenizer
        self.bar, self.task, self.store = bar, task, store

    def _step(self) -> None:
        self.bar.advance(self.task)

    def run(self, condition: Condition) -> Any:
        """NLL: per-row summed NLL of the fold's rows and the ablation's counters; generation: the texts."""
        self.bar.update(self.task, description=condition.key.label)
        s = self.settings
        with condition.deactivated(self.model, self.inputs.sites, s.expert_removal, self.reference) as stats:
            if condition.key.pass_kind == "nll":
                fold, prepare = condition.fold, stats.before_batch
                before = None if prepare is None else (lambda batch: prepare(fold.rows[list(batch.rows)], batch))
                value = (fold.scoring.run(self.model, self._step, before),
                         {"fallback_tokens": stats.fallback_tokens, "removed_slots": stats.removed_slots,
                          "routed_slots": stats.routed_slots})
            else:
                value = ans.greedy_generate(self.model, self.tokenizer, self.prompts, s.max_new_tokens, s.batch_size,
                                            pad_token_id(self.tokenizer))
                self.bar.advance(self.task, condition.batches)
        self.keep(condition, value)
        return value

    def stored(self, plan: Plan) -> dict[ConditionKey, Any]:
        """The finished conditions the checkpoint holds."""
        if self.store is None:
            return {}
        found = {}
        for condition in plan:
            key, nll = str(condition.key), condition.key.pass_kind == "nll"
            if self.store.has(key) if nll else self.store.has_texts(key):
                found[condition.key] = self.store.load(key) if nll else self.store.load_texts(key)
        return found

    def keep(self, condition: Condition, value: Any) -> None:
        """Save a finished condition into the checkpoint (when this rank keeps one)."""
        if self.store is None:
            return
        key = str(condition.key)
        if condition.key.pass_kind == "nll":
            self.store.save(key, *value)
        else:
            self.store.save_texts(key, value)


def run_plan(plan: Plan, evaluator: _Evaluator, ranks: Ranks,
             settled: Callable[[Mapping[ConditionKey, Any], int], bool] | None = None) -> dict[ConditionKey, Any]:
    """Every condition's result on every rank: the checkpoint's finished conditions read (rank 0) and sent, the rest
    computed, each by one rank (:mod:`sparcom.causal.spread`); rank 0 keeps what the other ranks computed.

    With ``settled`` (``--stop-when-decided``) the plan runs in its stages (:meth:`Plan.stages`), and after draw
    d the run stops when ``settled(results, d + 1)``: every rank holds the same results, so all stop together."""
    with ranks.step("reading the check's checkpoint"):
        stored = evaluator.stored(plan)
    stored = ranks.broadcast(stored if ranks.is_main else None, "sending the checkpoint's finished conditions")
    results = dict(stored)
    stages = plan.stages() if settled is not None else [list(plan)]
    for index, stage in enumerate(stages):
        todo = [c for c in stage if c.key not in stored]
        results.update(zip([c.key for c in todo], run_shared(todo, evaluator.run, ranks), strict=True))
        mine = {todo[i].key for i in my_conditions(len(todo), ranks)}
        for condition in stage:
            if condition.key not in mine:  # read from the checkpoint, or computed by another rank
                evaluator.bar.advance(evaluator.task, condition.batches)
                if condition.key not in stored:
                    evaluator.keep(condition, results[condition.key])
        if settled is not None and index and index < len(stages) - 1 and settled(results, index):
            done = sum(c.batches for ran in stages[:index + 1] for c in ran)
            evaluator.bar.update(evaluator.task, total=done, description=f"settled after {index} draws")
            break
    return results


def drawn(results: Mapping[ConditionKey, Any], plan: Plan, seeds: int) -> int:
    """How many draws of the plan's main random sets (:meth:`Plan.stages` after the first) are complete in
    ``results``: all ``seeds``, unless the check stopped once settled."""
    draws = plan.stages()[1:]
    return next((d for d, stage in enumerate(draws) if any(c.key not in results for c in stage)), seeds)


# ------------------------------------------------------------------------------------------- assemble


class Assembled(NamedTuple):
    """The per-row arrays, target results (per control: the first control's are ``targets``) and accuracy rows
    built from a run's results."""

    base_sums: np.ndarray
    targets: dict[str, TargetResult]
    controls: dict[str, dict[str, TargetResult]]
    per_example: dict[str, np.ndarray]
    accuracy: list[dict[str, Any]]
    generations: list[dict[str, Any]]


def _category_vector(inputs: CheckInputs, sums: np.ndarray) -> np.ndarray:
    means = category_means(inputs.examples, sums, inputs.counts, inputs.evaluated)
    return np.array([means[c]["nll"] for c in inputs.evaluated])


def result_name(target: str, intervention: str, settings: CausalSettings) -> str:
    """A target's name in the results: plain for the first intervention asked for, ``target@intervention`` for the
    others (one result per intervention)."""
    return target if intervention == settings.interventions[0] else f"{target}@{intervention}"


def _row_sums(inputs: CheckInputs, name: str, results: Mapping[ConditionKey, Any], base: np.ndarray,
              intervention: str, control: str, draws: int) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]],
                                                                     dict[str, AblationStats]]:
    """Per-row NLL sums of one target under one intervention and control: with each category's set deactivated
    [A, n] and with its first ``draws`` random sets [A, draws, n] (per fold when cross-fitting); each set's sizes
    per fold and its ablation counters."""
    a_count = len(inputs.categories)
    selected, random = np.tile(base, (a_count, 1)), np.tile(base, (a_count, draws, 1))
    stats: dict[str, AblationStats] = {}
    sizes: dict[str, list[int]] = {}
    for a, category in enumerate(inputs.categories):
        sizes[category] = [fold.sets[name][category].size() for fold in inputs.folds]
        for fold in inputs.folds:
            if fold.sets[name][category].is_empty():
                continue
            key = ConditionKey("nll", "selected", name, category, fold.index, intervention=intervention)
            selected[a, fold.rows], counters = results[key]
            total = stats.setdefault(category, AblationStats())
            total.fallback_tokens += counters.get("fallback_tokens", 0)
            total.removed_slots += counters.get("removed_slots", 0)
            total.routed_slots += counters.get("routed_slots", 0)
            for s in range(draws):
                random[a, s, fold.rows] = results[dataclasses.replace(key, role="random", draw=s,
                                                                      control=control)][0]
    return selected, random, sizes, stats


def _target_result(inputs: CheckInputs, settings: CausalSettings, name: str, results: Mapping[ConditionKey, Any],
                   base: np.ndarray, per_example: dict[str, np.ndarray], intervention: str, control: str = "shape",
                   matching: Sequence[MatchRow] = (), *, draws: int) -> TargetResult:
    """One target under one intervention and one control: per-row NLL sums with each category's set deactivated
    and with each of its random sets of that control (per fold when cross-fitting, pooled over the folds), the ΔNLL
    matrices and the paired statistics against that control's sets alone. ``draws``: the random sets run (fewer
    than ``settings.seeds`` when the check stopped once settled; the decisions are judged at ``settings.seeds``)."""
    label = result_name(name, intervention, settings)
    seeds, a_count = draws, len(inputs.categories)
    selected, random, sizes, stats = _row_sums(inputs, name, results, base, intervention, control, seeds)
    for a, category in enumerate(inputs.categories):
        if any(sizes[category]):
            per_example[f"{label}:{category}"] = selected[a]
    base_vector = _category_vector(inputs, base)
    nll = np.stack([_category_vector(inputs, selected[a]) for a in range(a_count)])
    random_delta = np.zeros((a_count, seeds, len(inputs.evaluated)))
    for a in range(a_count):
        if any(sizes[inputs.categories[a]]):
            for s in range(seeds):
                random_delta[a, s] = _category_vector(inputs, random[a, s]) - base_vector
    statistics = causal_statistics(
        base, selected, random, inputs.counts, [e.category for e in inputs.examples], inputs.categories,
        inputs.evaluated, set_sizes=[set_size(sizes[c]) for c in inputs.categories], target=label,
        replicates=settings.replicates, seed=settings.seed, planned=settings.seeds)
    return TargetResult(label, inputs.targets[name], list(inputs.categories), inputs.evaluated, inputs.sets[name],
                        nll, nll - base_vector[None, :], random_delta, stats, selected, random, statistics,
                        fold_sizes=sizes if inputs.crossfit is not None else None, intervention=intervention,
                        control=control, matching=[m.row() for m in matching])


def _accuracy(inputs: CheckInputs, settings: CausalSettings, plan: Plan, results: Mapping[ConditionKey, Any],
              checks: list[ans.Check]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Exact-match rows and generation records of every generation condition, in the plan's order."""
    accuracy: list[dict[str, Any]] = []
    generations: list[dict[str, Any]] = []
    for condition in plan:
        key = condition.key
        if key.pass_kind != "generate":
            continue
        target = "none" if key.target is None else result_name(key.target, key.intervention, settings)
        row = {"target": target, "ablated": key.category, "condition": key.role,
               "seed": None if key.draw is None else settings.seed + key.draw}
        per_category: dict[str, list[bool]] = {}
        for check, text in zip(checks, results[key], strict=True):
            correct = ans.is_correct(check, text)
            per_category.setdefault(check.category, []).append(correct)
            generations.append({**row, "row_id": check.row_id, "category": check.category, "check": check.kind,
                                "reference": check.reference, "prediction": ans.predicted(check, text),
                                "correct": correct, "generation": text})
        accuracy += [{**row, "evaluated": c, "correct": int(sum(per_category[c])), "total": len(per_category[c]),
                      "accuracy": sum(per_category[c]) / len(per_category[c])}
                     for c in inputs.evaluated if c in per_category]
    return accuracy, generations


def _base_sums(inputs: CheckInputs, results: Mapping[ConditionKey, Any]) -> np.ndarray:
    """Per-row NLL sums of the unablated model (each fold's rows from its own pass)."""
    base = np.zeros(len(inputs.examples))
    for fold in inputs.folds:
        base[fold.rows] = results[ConditionKey("nll", "unablated", fold=fold.index)][0]
    return base


def settled_check(inputs: CheckInputs, settings: CausalSettings) -> Callable[[Mapping[ConditionKey, Any], int], bool]:
    """The stopping rule of ``--stop-when-decided``: after the first ``draws`` random sets of every selected set,
    whether every decision of every target, intervention and control is already the one all ``settings.seeds``
    would give (:func:`sparcom.causal.statistics.settled_after`, on the arrays :func:`_target_result` decides on)."""
    labels = [e.category for e in inputs.examples]

    def settled(results: Mapping[ConditionKey, Any], draws: int) -> bool:
        base = _base_sums(inputs, results)
        for name in inputs.targets:
            for intervention in settings.interventions:
                for control in settings.controls:
                    selected, random, sizes, _ = _row_sums(inputs, name, results, base, intervention, control, draws)
                    if not settled_after(base, selected, random, inputs.counts, labels, inputs.categories,
                                         inputs.evaluated, planned=settings.seeds,
                                         set_sizes=[set_size(sizes[c]) for c in inputs.categories]):
                        return False
        return True

    return settled


def assemble(inputs: CheckInputs, settings: CausalSettings, plan: Plan, results: Mapping[ConditionKey, Any],
             checks: list[ans.Check], matches: Sequence[MatchRow] | None = None) -> Assembled:
    """The check's per-row arrays, target results (with their statistics) and accuracy rows, from the results of
    the plan's conditions (the random sets drawn: all, unless the check stopped once settled)."""
    base = _base_sums(inputs, results)
    for target, category, fold in plan.empty:
        where = "" if fold is None else f" in fold {fold}"
        inputs.notes.append(f"{target}: the {category_label(category)} set is empty{where}; its rows are unchanged "
                            "by definition")
    per_example = {"none": base}
    draws = drawn(results, plan, settings.seeds)
    if draws < settings.seeds:
        inputs.notes.append(f"stopped after {draws} of {settings.seeds} random sets per set (--stop-when-decided): no "
                            "further draw could change any decision, so every decision is the one all "
                            f"{settings.seeds} would give; the random means, spreads and p-values rest on the "
                            f"{draws} drawn (docs/causal.md, 'Stopping when decided')")
    controls = {control: {result_name(name, intervention, settings): _target_result(
        inputs, settings, name, results, base, per_example, intervention, control,
        [m for m in (matches or []) if (m.target, m.control) == (name, control)], draws=draws)
        for name in inputs.targets for intervention in settings.interventions} for control in settings.controls}
    return Assembled(base, controls[settings.controls[0]], controls, per_example,
                     *_accuracy(inputs, settings, plan, results, checks))


# ------------------------------------------------------------------------------------------- the controls


def match_rows(plan: Plan, matching: Mapping[str, Matching], intervention: str) -> list[MatchRow]:
    """How well every category's random sets match its selected set, per target and control, on every statistic a
    matched control of the check matches on (the shape control is measured too: what it leaves unmatched).

    Draws each random set of the NLL passes once (the sets are the same under every ``intervention``), before any
    pass runs, so a set that cannot be drawn stops the check with one line before the model is used."""
    groups: dict[tuple[str, str, str], dict[int | None, list[Condition]]] = {}
    for condition in plan:
        key = condition.key
        if key.pass_kind == "nll" and key.role == "random" and key.size is None and key.intervention == intervention:
            groups.setdefault((key.target, key.control, key.category), {}).setdefault(key.fold, []).append(condition)
    statistics = {m.statistic: m for m in matching.values()}  # e.g. frequency and frequency-bin share theirs
    rows = []
    for (target, control, category), folds in groups.items():
        drawn = [[c.components() for c in conditions] for conditions in folds.values()]
        selected = [conditions[0].selected for conditions in folds.values()]
        own = matching[control].statistic if control in matching else None
        for name, statistic in statistics.items():
            widens = control in NEAR_MISSES and name == own  # a near-miss control widens its own statistic's bins
            merged = [w for s in selected for w in statistic.widened(s)[1]] if widens else []
            rows.append(match_row(target, control, category, statistic, selected, drawn, merged))
    return rows


#: What a matched control or the dose–response reads from the selection's profile run (its one-line refusal).
READS = {name: control.reads for name, control in CONTROL_TABLE.items() if control.reads} | {
    "dose": "the rule's score of each component"}


def _controls_and_doses(inputs: CheckInputs, settings: CausalSettings, selection, crossfit
                        ) -> tuple[dict[str, Matching], dict | None]:
    """The matched controls' binned statistics and the dose–response's top-k sets, both from the selection's
    profile run (cross-fitting: the run the folds were selected from)."""
    needs = [(f"--control {c}", READS[c], "--control shape (random sets matched on layer and expert only)")
             for c in settings.controls if c in STATISTICS]
    needs += [("--dose-response", READS["dose"], "no --dose-response")] if settings.dose_points is not None else []
    if not needs:
        return {}, None
    flag, reads, otherwise = needs[0]
    run = crossfit.run if crossfit is not None else selection.source_run(
        f"{flag} reads {reads} from the profile run", otherwise)
    kinds = sorted({k for kinds in inputs.targets.values() for k in kinds})
    matching = control_matching(settings.controls, run, kinds, inputs.sites)
    doses = dose_sets(inputs.sets, run, selection.meta, settings.dose_points) if settings.dose_points else None
    return matching, doses


def dose_response(inputs: CheckInputs, settings: CausalSettings, results: Mapping[ConditionKey, Any],
                  base: np.ndarray, doses: Mapping[tuple[str, str], Sequence[tuple[int, Any]]], selection
                  ) -> DoseResponse:
    """Each (target, category)'s ΔNLL at every k of its grid, for the top-k set and each control's random sets;
    the largest k is the whole set (the check's own conditions)."""
    base_vector = _category_vector(inputs, base)
    curves = []
    for (target, category), subsets in doses.items():
        full = inputs.sets[target][category].size()
        sizes = [k for k, _ in subsets] + [full]
        keys = [ConditionKey("nll", "selected", target, category, inputs.folds[0].index,
                             intervention=settings.interventions[0], size=None if k == full else k) for k in sizes]
        delta = np.stack([_category_vector(inputs, results[key][0]) - base_vector for key in keys])
        random = {control: np.stack([np.stack([
            _category_vector(inputs, results[dataclasses.replace(key, role="random", draw=s, control=control)][0])
            - base_vector for s in range(settings.seeds)]).reshape(settings.seeds, -1) for key in keys])
            for control in settings.controls}
        curves.append(DoseCurve(target, category, sizes, list(inputs.evaluated), delta, random))
    return DoseResponse(settings.dose_points, str(selection.meta.get("rule")), curves, settings.interventions[0])


# ------------------------------------------------------------------------------------------- the check


def _prompts(inputs: CheckInputs, settings: CausalSettings) -> tuple[list[ans.Check], list]:
    """The checkable rows' exact-match checks and prompts (``generate`` only)."""
    checks = [ans.make_check(r) for r in inputs.rows] if settings.generate else []
    checked = [i for i, c in enumerate(checks) if c is not None]
    if settings.generate and not checked:
        inputs.notes.append("--generate: no row has a checkable answer (cls label, math final number, short qa answer)")
    prompts = ans.encode_prompts([inputs.rows[i] for i in checked], inputs.model.tokenizer, inputs.template,
                                 inputs.system_prompt)
    return [checks[i] for i in checked], prompts


def _identity(inputs: CheckInputs) -> dict[str, Any]:
    """The model side of the resume digest: which weights, in which dtype, on which device, formatted how."""
    model = inputs.model
    return {"name": model.info.get("name_or_path"), "fingerprint": model.info.get("fingerprint"),
            "dtype": model_dtype(model), "device": str(next(model.model.parameters()).device),
            "architecture": type(model.model).__name__, "template": inputs.template,
            "system_prompt": inputs.system_prompt}


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
    started = time.perf_counter()
    settings = settings or CausalSettings()
    ranks = join(device, device_map)  # under torchrun: the conditions are shared over the ranks (causal/spread.py)
    with ranks.step("reading the selection and data"):
        selection, rows, excluded, crossfit = read_inputs(selection, data, settings, run, rule)
        means = read_means(selection, settings, crossfit)
    if isinstance(model, str):
        with ranks.step("reading the model's files"):  # config, tokenizer, weights fingerprint: no weights
            skeleton = preview_model(model, dtype=dtype, device=device)
        with ranks.step("checking the selection against the model"):
            if skeleton is not None:  # a selection made on another model, or rows too long, refused before loading
                prepare_inputs(skeleton, selection, rows, excluded, settings, crossfit)
        model = load_for_rank(model, ranks, dtype=dtype, device=device, device_map=device_map)
    with ranks.step("checking the selection against the model"):
        inputs = prepare_inputs(model, selection, rows, excluded, settings, crossfit)
    reference = intervention_reference(means, inputs.examples, settings, pad_token_id(model.tokenizer))
    checks, prompts = _prompts(inputs, settings)
    with ranks.step("ranking the dose-response sets and binning the matched controls' statistics"):
        matching, doses = _controls_and_doses(inputs, settings, selection, crossfit)
    plan = build_plan(inputs.folds, list(inputs.targets), inputs.categories, seeds=settings.seeds, seed=settings.seed,
                      prompts=len(prompts), generate_seeds=settings.generate_seeds, batch_size=settings.batch_size,
                      axes=Axes(controls=settings.controls, interventions=settings.interventions, matching=matching),
                      doses=doses)
    matches = match_rows(plan, matching, settings.interventions[0]) if matching else None
    weak = power_note(settings.seeds, len(inputs.categories), ALPHA)
    if weak:  # said before the run (on stdout: stderr carries errors only, one line each) and kept in the notes
        inputs.notes.append(weak)
        if progress and ranks.is_main:
            print(f"sparcom: note: {weak}", flush=True)
    store = None
    with ranks.step("opening the check's checkpoint"):
        if checkpoint is not None and ranks.is_main:  # rank 0 alone keeps the checkpoint
            store = open_store(checkpoint, plan_digest(plan, inputs.examples, settings, _identity(inputs)), resume,
                               overwrite)
    bar = progress_bar("batches", enabled=progress and ranks.is_main, description_width=28)
    try:
        with bar:
            task = bar.add_task("baseline", total=plan.batches())
            results = run_plan(plan, _Evaluator(inputs, settings, prompts, bar, task, store, reference), ranks,
                               settled_check(inputs, settings) if settings.stop_when_decided else None)
    finally:
        if store is not None:
            store.release()
    assembled = assemble(inputs, settings, plan, results, checks, matches)
    dose = dose_response(inputs, settings, results, assembled.base_sums, doses, selection) if doses else None
    if store is not None and store.resumed:
        inputs.notes.append(f"resumed: {store.resumed} finished conditions were read from the checkpoint")
    baseline = category_means(inputs.examples, assembled.base_sums, inputs.counts, inputs.evaluated)
    return CausalResult(settings, *_describe(inputs, selection, Path(data), baseline), inputs.template,
                        inputs.system_prompt, inputs.examples, inputs.evaluated, baseline, assembled.base_sums,
                        inputs.counts, assembled.targets, assembled.per_example, assembled.accuracy,
                        assembled.generations, list(dict.fromkeys(inputs.notes)), inputs.overridden,
                        time.perf_counter() - started, software_versions(), assembled.controls, dose)


def _describe(inputs: CheckInputs, selection, data: Path, baseline: dict[str, dict[str, Any]]
              ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The model, selection and data records of a check's summary."""
    model, crossfit = inputs.model, inputs.crossfit
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
    return info, selection_info, data_info
