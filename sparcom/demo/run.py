"""Running the demo: named steps, each done once and recorded, over the public API."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sparcom.demo.config import BASE, INSTRUCT, MODEL_NAMES, MOE, TUNED, DemoConfig
from sparcom.demo.lanes import Task, run_tasks
from sparcom.demo.layout import RULE_TAGS, Layout, rules
from sparcom.demo.steps import Steps, console
from sparcom.errors import SparcomError
from sparcom.outputs import read_json


def _resolve(spec: str) -> str:
    """A built-in model name (converted or derived) → its local folder, made on first use; a folder stays as it is."""
    from sparcom.zoo.catalog import is_builtin, resolve

    return str(resolve(spec)) if is_builtin(spec) else spec


def run_demo(config: DemoConfig | None = None) -> Path:
    """Run (or resume) the demo; returns the path of ``SUMMARY.md``."""
    from sparcom.data.hexainst import build_hexainst
    from sparcom.demo.summary import write_claims, write_index, write_summary

    started = time.perf_counter()
    config = (config or DemoConfig()).resolved()
    config.check()
    out = config.out
    where = Layout(out)
    if (out / "config.json").is_file():
        config.check_reuse(read_json(out / "config.json", "delete it, or pass another --out"))
    steps = Steps(out)
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=2), encoding="utf-8")

    def build_data() -> dict:
        if config.data.is_file():
            return {"path": str(config.data), "note": "existing file reused"}
        rows = build_hexainst(config.data)
        return {"path": str(config.data), "rows": len(rows)}

    steps.run("hexainst", build_data)
    profiled = config.data
    if config.per_category is not None:  # the subset keeps both sources of every category (cross-source measures)
        profiled = out / "data" / f"hexainst-{config.per_category}-per-category.jsonl"
        steps.run("subset", lambda: balanced_subset(config.data, config.per_category, profiled))
    steps.run("reference", lambda: write_reference(config, where.reference_data))
    roles = [r for r in (INSTRUCT, BASE, MOE) if config.model(r)]
    specs = {role: config.model(role) for role in roles}
    if config.model(TUNED):
        specs[TUNED] = config.model(TUNED)
    elif BASE in specs:
        specs[TUNED] = str(out / "models" / "gemma-3-270m-sparcom-sft")
    order = [r for r in (INSTRUCT, BASE, TUNED, MOE) if r in specs]
    run_tasks(steps, demo_tasks(config, where, specs, order, profiled), config.workers)

    for report_name, roles_in in report_groups(order).items():
        steps.run(f"report-{report_name}", lambda report_name=report_name, roles_in=roles_in: write_report(
            config, where, report_name, roles_in))
    write_claims(config, where, order)  # decided once, stored; the index and the summary read them back
    write_index(config, where, report_groups(order))
    summary = write_summary(config, where, steps.timings, order, time.perf_counter() - started)
    console.print(f"[bold green]demo finished[/]: {summary} and {where.index}")
    return summary


#: Rough relative costs of the demo's steps on one thread (units of about 30 s, from the step records of a
#: fresh-clone ``make demo`` on 2026-12-07): they only order the ready steps, longest remaining chain first, so that
#: the MoE's build and its chain start early instead of running alone at the end. The MoE's steps cost about twice
#: a dense model's (its expert neurons are counted too).
COSTS = {"model": 1.0, "moe-build": 6.0, "profile": 1.2, "reference": 0.7, "identify": 1.0, "compare": 0.05,
         "ablate": 4.0, "examples": 0.5}
MOE_SCALE = 1.8


def _cost(step: str, role: str) -> float:
    """A step's relative cost for a model role (:data:`COSTS`, the MoE's scaled by :data:`MOE_SCALE`)."""
    return COSTS[step] * (MOE_SCALE if role == MOE else 1.0)


def demo_tasks(config: DemoConfig, where: Layout, specs: dict[str, str], order: list[str], profiled: Path
               ) -> list[Task]:
    """Every model step of the demo, in the order one process runs them (each after the steps it reads): the
    models, then per model its profiles and identifications, the comparisons, the causal checks and the examples.
    Each step resolves its model itself (a built-in name: its converted folder, made by the model's step)."""
    tasks = [Task(f"model-{MODEL_NAMES[role]}", model_folder, {"spec": specs[role]},
                  (f"model-{MODEL_NAMES[INSTRUCT]}",) if role == MOE and INSTRUCT in specs else (),
                  COSTS["moe-build"] if role == MOE else COSTS["model"])
             for role in (INSTRUCT, BASE, MOE) if role in specs]
    made = {role: f"model-{MODEL_NAMES[role]}" for role in (INSTRUCT, BASE, MOE) if role in specs}
    if TUNED in specs and not config.model(TUNED):
        tasks.append(Task("tuned-model", materialise_tuned, {"base_path": specs[BASE], "adapter": config.adapter,
                                                             "out": Path(specs[TUNED])}, (made[BASE],)))
        made[TUNED] = "tuned-model"
    for role in order:
        name, model = MODEL_NAMES[role], specs[role]
        needs = (made[role],) if role in made else ()
        tasks += [Task(f"profile-{name}", profile_one, {"config": config, "path": model, "data": profiled,
                                                         "out": where.run(name)}, needs, _cost("profile", role)),
                  Task(f"profile-{name}-reference", profile_one, {
                      "config": config, "path": model, "data": where.reference_data,
                      "out": where.reference_run(name), "template": "raw"}, needs, _cost("reference", role))]
        tasks += [Task(f"identify-{name}-{tag}", identify_one, {"config": config, "where": where, "name": name,
                                                                "tag": tag},
                       (f"profile-{name}", f"profile-{name}-reference"), _cost("identify", role))
                  for tag in rules()]
    if BASE in specs and TUNED in specs:
        runs = (f"profile-{MODEL_NAMES[BASE]}", f"profile-{MODEL_NAMES[TUNED]}")
        tasks += [Task(f"compare-gemma-{tag}", compare_one, {"config": config, "where": where, "tag": tag}, runs,
                       COSTS["compare"]) for tag in rules()]
    for role, tag, target, removal in config.causal:
        if role in specs:
            name = MODEL_NAMES[role]
            tasks.append(Task(f"ablate-{name}-{tag}-{target}" + (f"-{removal}" if target == "experts" else ""),
                              run_ablation, {"config": config, "model_path": specs[role], "where": where,
                                             "name": name, "tag": tag, "target": target, "removal": removal},
                              (f"identify-{name}-{tag}",), _cost("ablate", role)))
    tasks += [Task(f"examples-{MODEL_NAMES[role]}", record_examples, {
        "config": config, "model_path": specs[role], "where": where, "name": MODEL_NAMES[role]},
        (f"identify-{MODEL_NAMES[role]}-paper",), _cost("examples", role))
        for role in order]
    return tasks


def model_folder(spec: str) -> str:
    """A model step: a built-in name converted (or derived) once into its cache folder; a folder as it is."""
    return _resolve(spec)


def identify_one(config: DemoConfig, where: Layout, name: str, tag: str) -> dict:
    """Identify one model's sets with one rule, with held-out validity (and claims evidence for the paper's)."""
    from sparcom.api import identify

    out = where.identify(name, tag)
    identify(where.run(name), rules()[tag], folds=config.folds, random_sets=config.random_sets,
             resamples=config.resamples if tag == "paper" else 0, reference=str(where.reference_run(name)),
             out=out, overwrite=True, plots=config.plots)
    return _selected(out)


def compare_one(config: DemoConfig, where: Layout, tag: str) -> dict:
    """Compare Gemma base → tuned under one rule."""
    from sparcom.api import compare

    out = where.compare(tag)
    compare(where.run(MODEL_NAMES[BASE]), where.run(MODEL_NAMES[TUNED]), rules()[tag], out=out, overwrite=True,
            plots=config.plots)
    return _changes(out)


def _selected(out: Path) -> dict:
    """The step record of an identify: set sizes per kind, read back through the typed reader of what it wrote."""
    from sparcom.artifacts.summaries import read_identify

    return {kind: k.selected for kind, k in read_identify(out).kinds.items()}


def _changes(out: Path) -> dict:
    """The step record of a compare: the neuron sets' changes per category, read back like :func:`_selected`."""
    from dataclasses import asdict

    from sparcom.artifacts.summaries import read_compare

    return {c: asdict(change) for c, change in read_compare(out).kinds["neuron"].per_category.items()}


def balanced_subset(data: Path, per_category: int, out: Path) -> dict:
    """The profiled rows: ``per_category`` of each category, half AI-written and half human-written."""
    from sparcom.data.schema import balanced_rows, read_rows, write_rows

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = balanced_rows(read_rows(data), per_category)
    write_rows(rows, out)
    return {"path": str(out), "rows": len(rows)}


def write_reference(config: DemoConfig, out: Path) -> dict:
    """The reference corpus every model also profiles: prose that is not an instruction (the generality null)."""
    from sparcom.data.reference import reference_rows
    from sparcom.data.schema import write_rows

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = reference_rows("xsum", config.reference_rows)
    write_rows(rows, out)
    return {"path": str(out), "rows": len(rows), "corpus": "xsum"}


def profile_one(config: DemoConfig, path: str, data: Path, out: Path, template: str = "auto") -> dict:
    from sparcom.api import load_model, profile
    from sparcom.profile.settings import ProfileSettings

    settings = ProfileSettings(batch_size=config.batch_size, group_by="instruction", template=template)
    run = profile(load_model(_resolve(path), dtype=config.dtype), data, out, settings, resume=True)
    return {"tokens": run.manifest["counted_tokens"], "wall_time_seconds": run.manifest["wall_time_seconds"],
            "tokens_per_second": run.manifest["tokens_per_second"], "dtype": config.dtype}


def materialise_tuned(base_path: str, adapter: Path, out: Path) -> dict:
    """Merge the committed demo adapter into the base model (the folder ``sparcom tune`` would have written)."""
    from sparcom.tune.lora import materialise_adapter

    if not adapter.is_dir():
        raise SparcomError(f"{adapter}: demo adapter not found; retrain it with 'make demo-full' or 'sparcom tune'")
    if (out / "config.json").is_file():
        return {"path": str(out), "note": "existing folder reused"}
    record = materialise_adapter(_resolve(base_path), adapter, out, overwrite=True)
    return {"path": str(out), "adapter_sha256": record.get("adapter", {}).get("sha256")}


def run_ablation(config: DemoConfig, model_path: str, where: Layout, name: str, tag: str, target: str,
                 removal: str) -> dict:
    """The causal check of one model's sets: held-out rows the profile did not see, or (``causal_folds``)
    cross-fitting over the profiled rows. An interrupted check resumes from its checkpoint."""
    from sparcom.api import ablate
    from sparcom.causal.checkpoint import checkpoint_dir

    out = where.ablate(name, tag, target, removal)
    model_path = _resolve(model_path)
    resume = checkpoint_dir(out).is_dir()
    common = dict(seeds=config.seeds, per_category=config.ablate_per_category, batch_size=config.batch_size,
                  max_scored_tokens=config.max_scored_tokens, targets=(target,), expert_removal=removal,
                  interventions=config.interventions, controls=config.controls,
                  stop_when_decided=config.stop_when_decided, dtype=config.dtype, out=out, resume=resume,
                  overwrite=not resume, plots=config.plots)
    if config.causal_folds:
        result = ablate(model_path, None, config.data, run=where.run(name), rule=rules()[tag],
                        crossfit_folds=config.causal_folds, **common)
    else:
        result = ablate(model_path, where.identify(name, tag), config.data, exclude_profiled=True, **common)
    return {"wall_time_seconds": round(result.wall_time_seconds, 1)}


def record_examples(config: DemoConfig, model_path: str, where: Layout, name: str) -> dict:
    """Where the top selected components of the paper's sets fire most, for the report's cards."""
    from sparcom.api import record_examples as record

    result = record(_resolve(model_path), where.identify(name, "paper"), config.data, out=where.examples(name),
                    overwrite=True, rows_per_category=config.examples_per_category, batch_size=config.batch_size,
                    dtype=config.dtype, progress=True)
    return {"components": len(result.components)}


def report_groups(order: list[str]) -> dict[str, list[str]]:
    """One report per model, the base/tuned pair in one."""
    groups = {MODEL_NAMES[r]: [r] for r in order if r not in (BASE, TUNED)}
    pair = [r for r in (BASE, TUNED) if r in order]
    if pair:
        groups["gemma-3-270m-pair" if len(pair) == 2 else MODEL_NAMES[pair[0]]] = pair
    return dict(sorted(groups.items(), key=lambda item: order.index(item[1][0])))


def report_studies(where: Layout, roles: list[str]) -> list[Path]:
    """Every output folder of the models in ``roles`` that exists (a report shows what is there)."""
    studies: list[Path] = []
    for role in roles:
        name = MODEL_NAMES[role]
        studies += [where.run(name), *(where.identify(name, tag) for tag in RULE_TAGS), where.examples(name)]
        studies += sorted((where.out / "ablate" / name).glob("*")) if (where.out / "ablate" / name).is_dir() else []
    if BASE in roles and TUNED in roles:
        studies += [where.compare(tag) for tag in RULE_TAGS]
    return [s for s in studies if s.is_dir()]


def write_report(config: DemoConfig, where: Layout, report_name: str, roles: list[str]) -> dict:
    from sparcom.api import report

    path = report(report_studies(where, roles), where.report(report_name), overwrite=True,
                  title=f"sparcom demo — {report_name}")
    return {"path": str(path), "bytes": path.stat().st_size}


__all__ = ["Steps", "report_groups", "run_demo"]
