"""The causal check: deactivate each category's selected components and measure the damage against random sets.

For every target (``neurons``: dense, shared-expert and expert neurons together; ``experts``: ISEs) and every
category c whose set is ablated, the teacher-forced mean NLL of the reference responses is measured on every
evaluated category c' and compared with the unablated model: ΔNLL(c, c') = NLL_ablated(c') − NLL(c'). The
control is N random sets with c's per-layer (and per-expert) counts, drawn with fixed seeds
(:mod:`sparcom.causal.baseline`); each cell reports the random sets' mean and standard deviation, the excess
ΔNLL − mean, the z-score (ΔNLL − mean) / std and the one-sided empirical p-value (1 + #{random ≥ observed}) / (1 + N).
With ``generate``, greedy exact-match accuracy on the checkable categories (cls, math, qa) is measured before and
after each ablation, and after the first few random sets.

:func:`causal_check` computes; :func:`write_causal` writes the output directory; :func:`run_ablate` does both
(the API behind ``sparcom ablate``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.causal import answers as ans
from sparcom.causal.baseline import random_like
from sparcom.causal.interventions import EXPERT_REMOVAL, Ablation, AblationStats, ablate, check_ablation
from sparcom.causal.nll import (
    ScoredExample,
    batch_plan,
    category_means,
    encode_scored,
    example_nll,
    pad_id_of,
)
from sparcom.causal.sites import CausalSites, find_sites
from sparcom.causal.statistics import significance
from sparcom.data.formatting import check_tokenizer, resolve_template
from sparcom.data.schema import InstructionRow, category_label, read_rows
from sparcom.errors import SparcomError
from sparcom.models.loading import LoadedModel, load_model, tokenizer_fingerprint
from sparcom.progress import progress_bar
from sparcom.provenance import file_sha256, software_versions

FORMAT = "sparcom-causal"
VERSION = 1
#: Named targets: the component kinds ablated together. Any single kind name is a target too.
TARGETS: dict[str, tuple[str, ...]] = {
    "neurons": ("neuron", "shared_neuron", "expert_neuron"),
    "experts": ("expert",),
}
ALL_KINDS = ("neuron", "shared_neuron", "expert_neuron", "expert")
DEFAULT_SEEDS = 20
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class CausalSettings:
    """How the causal check is run."""

    seeds: int = DEFAULT_SEEDS
    seed: int = 0
    per_category: int | None = None
    batch_size: int = 8
    expert_removal: str = "renormalize"
    targets: tuple[str, ...] | None = None
    generate: bool = False
    max_new_tokens: int = 64
    generate_seeds: int = 3
    exclude_profiled: bool = False
    force: bool = False
    #: Deactivate only the components unique to each category (in its set and in no other category's set).
    unique: bool = False

    def check(self) -> None:
        if self.seeds < 0:
            raise SparcomError(f"--seeds must be 0 (no random baseline) or more, got {self.seeds}")
        if self.per_category is not None and self.per_category < 1:
            raise SparcomError(f"--per-category must be at least 1, got {self.per_category}")
        if self.batch_size < 1:
            raise SparcomError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.expert_removal not in EXPERT_REMOVAL:
            raise SparcomError(f"--expert-removal must be one of {', '.join(EXPERT_REMOVAL)}, "
                               f"got {self.expert_removal!r}")
        if self.max_new_tokens < 1:
            raise SparcomError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.generate_seeds < 0:
            raise SparcomError(f"--generate-seeds must be 0 or more, got {self.generate_seeds}")
        for target in self.targets or ():
            if target not in TARGETS and target not in ALL_KINDS:
                raise SparcomError(f"unknown target {target!r}; choose from {', '.join([*TARGETS, *ALL_KINDS])}")

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "seed": self.seed, "per_category": self.per_category,
                "batch_size": self.batch_size, "expert_removal": self.expert_removal,
                "targets": list(self.targets) if self.targets else None, "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "generate_seeds": self.generate_seeds,
                "exclude_profiled": self.exclude_profiled, "force": self.force, "unique": self.unique}


# ------------------------------------------------------------------------------------------- results


@dataclass
class TargetResult:
    """The ΔNLL matrix of one target (a group of component kinds), its random baseline and its accuracy."""

    name: str
    kinds: list[str]
    ablated: list[str]
    evaluated: list[str]
    ablations: dict[str, Ablation]
    nll: np.ndarray  # [A, C] mean NLL with c's set ablated
    delta: np.ndarray  # [A, C]
    random_delta: np.ndarray  # [A, N, C]
    stats: dict[str, AblationStats] = field(default_factory=dict)

    def significance(self) -> dict[str, np.ndarray]:
        return significance(self.delta, self.random_delta)

    def sizes(self) -> dict[str, int]:
        return {c: self.ablations[c].size() for c in self.ablated}

    def specificity(self) -> list[dict[str, Any]]:
        """Per ablated category in the evaluated set: its own ΔNLL minus the mean ΔNLL on the other categories."""
        rows = []
        sig = self.significance()
        for a, category in enumerate(self.ablated):
            if category not in self.evaluated:
                continue
            own = self.evaluated.index(category)
            others = [j for j in range(len(self.evaluated)) if j != own]
            off = float(np.mean(self.delta[a, others])) if others else float("nan")
            rows.append({"target": self.name, "ablated": category, "own_delta_nll": float(self.delta[a, own]),
                         "mean_other_delta_nll": off, "specificity": float(self.delta[a, own]) - off,
                         "own_excess_over_random": float(sig["excess"][a, own]),
                         "own_p_value": float(sig["p"][a, own])})
        return rows


@dataclass
class CausalResult:
    """Everything the causal check measured, with the settings and identities needed to reproduce it."""

    settings: CausalSettings
    model: dict[str, Any]
    selection: dict[str, Any]
    data: dict[str, Any]
    template: str
    system_prompt: str | None
    examples: list[ScoredExample]
    evaluated: list[str]
    baseline: dict[str, dict[str, float | int]]
    baseline_sums: np.ndarray
    counts: np.ndarray
    targets: dict[str, TargetResult]
    per_example: dict[str, np.ndarray] = field(default_factory=dict)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)
    wall_time_seconds: float = 0.0
    software: dict[str, str] = field(default_factory=dict)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """CSV tables by file stem (long format, one row per cell / seed / layer / example)."""
        tables: dict[str, list[dict[str, Any]]] = {"nll_baseline": [], "delta_nll": [], "random_delta_nll": [],
                                                   "specificity": [], "set_sizes": [], "per_example_nll": []}
        for category in self.evaluated:
            b = self.baseline[category]
            tables["nll_baseline"].append({"category": category, "label": category_label(category),
                                           "instructions": b["instructions"], "tokens": b["tokens"], "nll": b["nll"]})
        for name, t in self.targets.items():
            sig = t.significance()
            sizes = t.sizes()
            for a, ablated in enumerate(t.ablated):
                for j, evaluated in enumerate(t.evaluated):
                    tables["delta_nll"].append({
                        "target": name, "ablated": ablated, "ablated_label": category_label(ablated),
                        "set_size": sizes[ablated], "evaluated": evaluated,
                        "evaluated_label": category_label(evaluated),
                        "nll_base": self.baseline[evaluated]["nll"], "nll_ablated": t.nll[a, j],
                        "delta_nll": t.delta[a, j], "random_mean": sig["mean"][a, j], "random_std": sig["std"][a, j],
                        "random_min": sig["min"][a, j], "random_max": sig["max"][a, j],
                        "seeds": t.random_delta.shape[1], "excess_over_random": sig["excess"][a, j],
                        "z": sig["z"][a, j], "p_value": sig["p"][a, j]})
                    for s in range(t.random_delta.shape[1]):
                        tables["random_delta_nll"].append({
                            "target": name, "ablated": ablated, "seed": self.settings.seed + s, "evaluated": evaluated,
                            "delta_nll": t.random_delta[a, s, j]})
                tables["set_sizes"] += set_size_rows(name, ablated, t.ablations[ablated])
            tables["specificity"] += t.specificity()
        for condition, sums in self.per_example.items():
            for i, example in enumerate(self.examples):
                tokens = int(self.counts[i])
                tables["per_example_nll"].append({"condition": condition, "row_id": example.row_id,
                                                  "category": example.category, "tokens": tokens,
                                                  "nll_sum": sums[i], "nll_mean": sums[i] / tokens})
        if self.accuracy:
            tables["accuracy"] = self.accuracy
        return {name: rows for name, rows in tables.items() if rows}

    def matrices(self) -> dict[str, list[dict[str, Any]]]:
        """Wide ΔNLL matrices by file stem: one row per ablated category, one column per evaluated category."""
        result = {}
        for name, t in self.targets.items():
            result[f"delta_nll_matrix_{name}"] = [
                {"ablated": category_label(c), **{category_label(e): t.delta[a, j] for j, e in enumerate(t.evaluated)}}
                for a, c in enumerate(t.ablated)]
        return result

    def summary(self) -> dict[str, Any]:
        targets = {}
        for name, t in self.targets.items():
            sig = t.significance()
            targets[name] = {
                "kinds": t.kinds, "ablated": t.ablated, "evaluated": t.evaluated, "set_sizes": t.sizes(),
                "nll_ablated": t.nll, "delta_nll": t.delta,
                "random": {"seeds": int(t.random_delta.shape[1]), "mean": sig["mean"], "std": sig["std"],
                           "min": sig["min"], "max": sig["max"]},
                "excess_over_random": sig["excess"], "z": sig["z"], "p_value": sig["p"],
                "specificity": t.specificity(),
                "expert_removal": {c: {"removed_slots": s.removed_slots, "routed_slots": s.routed_slots,
                                       "fallback_tokens": s.fallback_tokens} for c, s in t.stats.items()
                                   if s.routed_slots} or None,
            }
        accuracy = None
        if self.settings.generate:
            accuracy = {"checks": {c: ans.CHECKS[c] for c in self.evaluated if c in ans.CHECKS},
                        "rows": self.accuracy}
        return {
            "format": FORMAT, "version": VERSION, "model": self.model, "selection": self.selection, "data": self.data,
            "template": self.template, "system_prompt": self.system_prompt, "settings": self.settings.to_json(),
            "significance": {"z": "(ΔNLL − random mean) / random std (ddof 1)",
                             "p_value": "(1 + #{random ΔNLL ≥ observed}) / (1 + seeds), one-sided",
                             "level": SIGNIFICANCE_LEVEL},
            "nll_unit": "nats per response token, tokens pooled within a category",
            "evaluated": self.evaluated,
            "baseline": self.baseline, "targets": targets, "accuracy": accuracy, "notes": self.notes,
            "overridden": self.overridden, "wall_time_seconds": round(self.wall_time_seconds, 3),
            "software": self.software,
        }


def set_size_rows(target: str, category: str, ablation: Ablation) -> list[dict[str, Any]]:
    rows = []
    for kind in ablation.kinds:
        if kind == "expert_neuron":
            for layer, per_expert in ablation.expert_counts().items():
                rows += [{"target": target, "category": category, "kind": kind, "layer": layer, "expert": e,
                          "selected": int(n)} for e, n in enumerate(per_expert) if n]
        else:
            rows += [{"target": target, "category": category, "kind": kind, "layer": layer, "expert": None,
                      "selected": n} for layer, n in ablation.counts(kind).items()]
    return rows


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
        kind, category, layer = key.split("/")
        others = [masks[f"{kind}/{c}/{layer}"] for c in categories if c != category and f"{kind}/{c}/{layer}" in masks]
        result[key] = mask & ~np.logical_or.reduce(others) if others else mask.copy()
    return result


def _fingerprint_field(meta: dict, dotted: str):
    return (meta.get("manifest") or {}).get(dotted)


def check_compatibility(selection, loaded: LoadedModel, force: bool) -> tuple[list[str], list[str]]:
    """Refuse a selection made on another model or tokenizer (unless ``force``); (overridden reasons, notes)."""
    meta = selection.meta
    problems, notes = [], []
    made_on = _fingerprint_field(meta, "model.name_or_path") or "another model"
    theirs, ours = _fingerprint_field(meta, "model.fingerprint"), loaded.info.get("fingerprint")
    if not theirs or not ours or "unhashed" in (theirs, ours):
        notes.append("the model's weights could not be compared with the selection's (no fingerprint on one side)")
    elif theirs != ours:
        problems.append(f"the weights differ from those the selection was made on ({made_on})")
    architecture = _fingerprint_field(meta, "model.architecture")
    if architecture and architecture != type(loaded.model).__name__:
        problems.append(f"architecture {type(loaded.model).__name__} differs from the selection's {architecture}")
    tok_theirs = _fingerprint_field(meta, "tokenizer_hash")
    if not tok_theirs:
        notes.append("the selection records no tokenizer hash; the tokenizer could not be checked")
    elif tok_theirs != tokenizer_fingerprint(loaded.tokenizer):
        problems.append("the tokenizer differs from the selection's")
    if problems and not force:
        raise SparcomError(f"{selection.path}: selection made on another model: {'; '.join(problems)}; "
                           "pass --force to ablate anyway")
    return problems, notes


def pick_rows(rows: Sequence[InstructionRow], per_category: int | None, exclude: set[str]) -> list[InstructionRow]:
    """The first ``per_category`` rows of each category (file order), skipping ``exclude`` ids."""
    kept, taken = [], {}
    for row in rows:
        if row.id in exclude:
            continue
        if per_category is None or taken.get(row.category, 0) < per_category:
            kept.append(row)
            taken[row.category] = taken.get(row.category, 0) + 1
    if not kept:
        raise SparcomError("no rows left to evaluate (all were profiled and --exclude-profiled is on)")
    return kept


def profiled_ids(selection) -> set[str]:
    """Instruction ids the selection's source run counted (for --exclude-profiled)."""
    source = selection.meta.get("source_run")
    manifest = Path(source) / "manifest.json" if source else None
    if manifest is None or not manifest.is_file():
        raise SparcomError(f"--exclude-profiled: the selection's source run {source!r} is not readable here; "
                           "its manifest lists the profiled instruction ids")
    listed = json.loads(manifest.read_text(encoding="utf-8")).get("instruction_ids") or {}
    return {i for ids in listed.values() for i in ids}





# ------------------------------------------------------------------------------------------- the check


class _Evaluator:
    """Runs NLL passes and generations of one model under ablations, with one progress bar."""

    def __init__(self, loaded: LoadedModel, sites: CausalSites, examples, plan, settings: CausalSettings, bar, task):
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.sites, self.examples, self.plan, self.settings = sites, examples, plan, settings
        self.pad_id = pad_id_of(loaded.tokenizer)
        self.bar, self.task = bar, task

    def _step(self) -> None:
        self.bar.advance(self.task)

    def nll(self, ablation: Ablation | None, description: str) -> tuple[np.ndarray, np.ndarray, AblationStats]:
        self.bar.update(self.task, description=description)
        if ablation is None:
            sums, counts = example_nll(self.model, self.examples, self.plan, self.pad_id, self._step)
            return sums, counts, AblationStats()
        with ablate(self.model, ablation, sites=self.sites, expert_removal=self.settings.expert_removal) as stats:
            sums, counts = example_nll(self.model, self.examples, self.plan, self.pad_id, self._step)
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
        with ablate(self.model, ablation, sites=self.sites, expert_removal=s.expert_removal):
            return run()


def _ordered_categories(selected: Sequence[str], rows: Sequence[InstructionRow]) -> list[str]:
    in_data: list[str] = []
    for row in rows:
        if row.category not in in_data:
            in_data.append(row.category)
    return [c for c in selected if c in in_data] + [c for c in in_data if c not in selected]


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
    settings.check()
    if not isinstance(selection, Selection):
        selection = load_selection(selection)
    targets = resolve_targets(selection, settings.targets)
    data = Path(data)
    rows = read_rows(data, require_output=True)
    exclude = profiled_ids(selection) if settings.exclude_profiled else set()
    rows = pick_rows(rows, settings.per_category, exclude)
    if isinstance(model, str):
        model = load_model(model, dtype=dtype, device=device, device_map=device_map)
    overridden, notes = check_compatibility(selection, model, settings.force)
    sites = find_sites(model.model)
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
    model_dtype = str(next(model.model.parameters()).dtype).replace("torch.", "")
    if selection_dtype and selection_dtype != model_dtype:
        notes.append(f"the selection was profiled in {selection_dtype}; this check runs in {model_dtype}")
    plan = batch_plan([len(e) for e in examples], settings.batch_size)

    checks = [ans.make_check(r) for r in rows] if settings.generate else []
    checked = [i for i, c in enumerate(checks) if c is not None]
    if settings.generate and not checked:
        notes.append("--generate: no row has a checkable answer (cls label, math final number, short qa answer)")
    prompts = ans.encode_prompts([rows[i] for i in checked], model.tokenizer, template, system_prompt)
    generate_seeds = min(settings.generate_seeds, settings.seeds)

    passes = 1 + sum((1 + settings.seeds) for per in ablations.values() for a in per.values() if not a.is_empty())
    gen_batches = -(-len(prompts) // settings.batch_size) if prompts else 0
    gen_runs = (1 + sum(1 + generate_seeds for per in ablations.values() for a in per.values() if not a.is_empty())
                if gen_batches else 0)
    bar = progress_bar("batches", enabled=progress, description_width=28)
    with bar:
        task = bar.add_task("baseline", total=passes * len(plan) + gen_runs * gen_batches)
        evaluator = _Evaluator(model, sites, examples, plan, settings, bar, task)
        base_sums, counts, _ = evaluator.nll(None, "unablated")
        baseline = category_means(examples, base_sums, counts, evaluated)
        base_vector = np.array([baseline[c]["nll"] for c in evaluated])

        def means(sums: np.ndarray) -> np.ndarray:
            m = category_means(examples, sums, counts, evaluated)
            return np.array([m[c]["nll"] for c in evaluated])

        per_example = {"none": base_sums}
        results: dict[str, TargetResult] = {}
        for name, kinds in targets.items():
            nll = np.zeros((len(categories), len(evaluated)))
            random_delta = np.zeros((len(categories), settings.seeds, len(evaluated)))
            stats = {}
            for a, category in enumerate(categories):
                ablation = ablations[name][category]
                label = f"{name} {category_label(category)}"
                if ablation.is_empty():
                    nll[a] = base_vector
                    notes.append(f"{name}: the {category_label(category)} set is empty; its row is 0 by definition")
                    continue
                sums, _, stats[category] = evaluator.nll(ablation, label)
                per_example[f"{name}:{category}"] = sums
                nll[a] = means(sums)
                for s in range(settings.seeds):
                    control = random_like(ablation, settings.seed + s, f"{name}/{category}")
                    random_sums, _, _ = evaluator.nll(control, f"{label} random {s + 1}/{settings.seeds}")
                    random_delta[a, s] = means(random_sums) - base_vector
            results[name] = TargetResult(name, kinds, list(categories), evaluated, ablations[name], nll,
                                         nll - base_vector[None, :], random_delta, stats)

        accuracy, generations = [], []
        if prompts:
            checked_checks = [checks[i] for i in checked]

            def score(texts: list[str], target: str, ablated: str | None, condition: str, seed: int | None):
                per_cat: dict[str, list[bool]] = {}
                for check, text in zip(checked_checks, texts, strict=True):
                    correct = ans.is_correct(check, text)
                    per_cat.setdefault(check.category, []).append(correct)
                    generations.append({"target": target, "ablated": ablated, "condition": condition, "seed": seed,
                                        "row_id": check.row_id, "category": check.category, "check": check.kind,
                                        "reference": check.reference, "prediction": ans.predicted(check, text),
                                        "correct": correct, "generation": text})
                for category in evaluated:
                    if category in per_cat:
                        hits = per_cat[category]
                        accuracy.append({"target": target, "ablated": ablated, "condition": condition, "seed": seed,
                                         "evaluated": category, "correct": int(sum(hits)), "total": len(hits),
                                         "accuracy": sum(hits) / len(hits)})

            score(evaluator.generate(None, prompts, "generate unablated"), "none", None, "unablated", None)
            for name in targets:
                for category in categories:
                    ablation = ablations[name][category]
                    if ablation.is_empty():
                        continue
                    label = f"generate {name} {category_label(category)}"
                    score(evaluator.generate(ablation, prompts, label), name, category, "selected", None)
                    for s in range(generate_seeds):
                        control = random_like(ablation, settings.seed + s, f"{name}/{category}")
                        texts = evaluator.generate(control, prompts, f"{label} random {s + 1}")
                        score(texts, name, category, "random", settings.seed + s)

    info = dict(model.info)
    info.update(architecture=type(model.model).__name__, model_type=model.model.config.model_type,
                family=sites.family, layers=sites.layers, dtype=model_dtype,
                device=str(next(model.model.parameters()).device))
    meta = selection.meta
    selection_info = {"path": str(Path(selection.path).resolve()), "rule": meta.get("rule"),
                      "epsilon": meta.get("epsilon"), "description": meta.get("description"),
                      "source_run": meta.get("source_run"), "categories": list(categories),
                      "kinds": selection.kinds, "made_on": manifest.get("model.name_or_path")}
    data_info = {"path": str(data), "sha256": file_sha256(data),
                 "instructions": {c: baseline[c]["instructions"] for c in evaluated},
                 "instruction_ids": {c: [r.id for r in rows if r.category == c] for c in evaluated},
                 "excluded_profiled": len(exclude)}
    return CausalResult(settings, info, selection_info, data_info, template, system_prompt, examples, evaluated,
                        baseline, base_sums, counts, results, per_example, accuracy, generations,
                        _dedupe(notes), overridden, time.perf_counter() - started, software_versions())


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------- outputs


def write_causal(result: CausalResult, out: str | Path, overwrite: bool = False, plots: bool = True) -> Path:
    """Write summary.json, tables/*.csv, generations.jsonl (with --generate) and plots/*.png into ``out``."""
    from sparcom.causal import plots as causal_plots
    from sparcom.report.outputs import staged_directory, to_json, write_csv, write_json

    out = Path(out)
    with staged_directory(out, overwrite) as staging:
        (staging / "tables").mkdir()
        files = [write_csv(staging / "tables" / f"{name}.csv", rows)
                 for name, rows in {**result.tables(), **result.matrices()}.items()]
        if result.generations:
            path = staging / "generations.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for record in result.generations:
                    handle.write(json.dumps(to_json(record), ensure_ascii=False) + "\n")
            files.append(path)
        if plots:
            (staging / "plots").mkdir()
            for name, target in result.targets.items():
                files.append(causal_plots.delta_nll_heatmap(result, target, staging / "plots" / f"delta_nll_{name}.png"))
            if result.accuracy:
                files.append(causal_plots.accuracy_heatmap(result, staging / "plots" / "accuracy.png"))
        summary = result.summary()
        summary["files"] = sorted(["summary.json"] + [str(f.relative_to(staging)) for f in files])
        write_json(staging / "summary.json", summary)
    return out


def run_ablate(
    model: str | LoadedModel,
    selection,
    data: str | Path,
    out: str | Path,
    settings: CausalSettings | None = None,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> CausalResult:
    """``sparcom ablate``: check ``out`` first, run :func:`causal_check`, write the output directory."""
    from sparcom.report.outputs import check_output_dir

    settings = settings or CausalSettings()
    settings.check()
    check_output_dir(out, overwrite)
    result = causal_check(model, selection, data, settings, dtype=dtype, device=device, device_map=device_map,
                          progress=progress)
    write_causal(result, out, overwrite=overwrite, plots=plots)
    return result


__all__ = ["CausalResult", "CausalSettings", "TargetResult", "causal_check", "run_ablate", "significance",
           "write_causal"]
