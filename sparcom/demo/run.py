"""Running the demo: named steps, each done once and recorded, over the public API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from sparcom.demo.config import BASE, INSTRUCT, MODEL_NAMES, MOE, TUNED, DemoConfig
from sparcom.demo.layout import RULE_TAGS, Layout, rules
from sparcom.errors import SparcomError

console = Console(stderr=True)

class Steps:
    """Runs named steps once; records wall time, CPU time and result of each in ``out/steps/{NN-name}.json``."""

    def __init__(self, out: Path) -> None:
        self.folder = out / "steps"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, dict[str, float]] = {}

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        earlier = sorted(self.folder.glob(f"[0-9][0-9]-{name}.json"))  # its number moves when steps are added
        name = earlier[0].stem if earlier else f"{len(self.timings) + 1:02d}-{name}"
        record_path = self.folder / f"{name}.json"
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                self.timings[name] = {"seconds": float(record["seconds"]), "cpu_seconds": record.get("cpu_seconds")}
            except (ValueError, KeyError, TypeError):
                raise SparcomError(f"{record_path}: damaged step record; delete it to run step {name} again") from None
            console.print(f"[dim]✓ {name}: done before ({record['seconds']:.0f} s), reused[/]")
            return record.get("result")
        console.rule(f"[bold]{name}")
        started, cpu = time.perf_counter(), time.process_time()
        result = work()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        self.timings[name] = {"seconds": seconds, "cpu_seconds": cpu_seconds}
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                                   "result": result}, indent=2, default=str), encoding="utf-8")
        tmp.replace(record_path)
        console.print(f"[green]✓ {name}[/] in {seconds:.0f} s (CPU {cpu_seconds:.0f} s)")
        return result


def _resolve(spec: str) -> str:
    """A built-in model name (converted or derived) → its local folder, made on first use; a folder stays as it is."""
    from sparcom.zoo.catalog import is_builtin, resolve

    return str(resolve(spec)) if is_builtin(spec) else spec


def run_demo(config: DemoConfig | None = None) -> Path:
    """Run (or resume) the demo; returns the path of ``SUMMARY.md``."""
    from sparcom.api import compare, identify
    from sparcom.data.hexainst import build_hexainst
    from sparcom.demo.summary import write_claims, write_index, write_summary

    config = (config or DemoConfig()).resolved()
    config.check()
    out = config.out
    where = Layout(out)
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
    paths = {role: steps.run(f"model-{MODEL_NAMES[role]}", lambda role=role: _resolve(config.model(role)))
             for role in roles}
    if config.model(TUNED):
        paths[TUNED] = _resolve(config.model(TUNED))
    elif BASE in paths:
        tuned_dir = out / "models" / "gemma-3-270m-sparcom-sft"
        steps.run("tuned-model", lambda: materialise_tuned(paths[BASE], config.adapter, tuned_dir))
        paths[TUNED] = str(tuned_dir)
    order = [r for r in (INSTRUCT, BASE, TUNED, MOE) if r in paths]

    for role in order:
        name = MODEL_NAMES[role]
        steps.run(f"profile-{name}", lambda role=role, name=name: profile_one(config, paths[role], profiled,
                                                                               where.run(name)))
        steps.run(f"profile-{name}-reference", lambda role=role, name=name: profile_one(
            config, paths[role], where.reference_data, where.reference_run(name), template="raw"))
        for tag, rule in rules().items():
            steps.run(f"identify-{name}-{tag}", lambda name=name, tag=tag, rule=rule: _selected(identify(
                where.run(name), rule, folds=config.folds, random_sets=config.random_sets,
                resamples=config.resamples if tag == "paper" else 0, reference=str(where.reference_run(name)),
                out=where.identify(name, tag), overwrite=True, plots=config.plots), where.identify(name, tag)))

    if BASE in paths and TUNED in paths:
        for tag, rule in rules().items():
            steps.run(f"compare-gemma-{tag}", lambda tag=tag, rule=rule: _changes(compare(
                where.run(MODEL_NAMES[BASE]), where.run(MODEL_NAMES[TUNED]), rule, out=where.compare(tag),
                overwrite=True, plots=config.plots), where.compare(tag)))

    for role, tag, target, removal in config.causal:
        if role not in paths:
            continue
        name = MODEL_NAMES[role]
        steps.run(f"ablate-{name}-{tag}-{target}" + (f"-{removal}" if target == "experts" else ""),
                  lambda role=role, name=name, tag=tag, target=target, removal=removal: run_ablation(
                      config, paths[role], where, name, tag, target, removal))

    for role in order:
        name = MODEL_NAMES[role]
        steps.run(f"examples-{name}", lambda role=role, name=name: record_examples(config, paths[role], where, name))
    for report_name, roles_in in report_groups(order).items():
        steps.run(f"report-{report_name}", lambda report_name=report_name, roles_in=roles_in: write_report(
            config, where, report_name, roles_in))
    write_claims(config, where, order)  # decided once, stored; the index and the summary read them back
    write_index(config, where, report_groups(order))
    summary = write_summary(config, where, steps.timings, order)
    console.print(f"[bold green]demo finished[/]: {summary} and {where.index}")
    return summary


def _selected(_result, out: Path) -> dict:
    """The step record of an identify (run first, its result unused): set sizes per kind, read back through the
    typed reader of what it wrote."""
    from sparcom.artifacts.summaries import read_identify

    return {kind: k.selected for kind, k in read_identify(out).kinds.items()}


def _changes(_result, out: Path) -> dict:
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
    run = profile(load_model(path, dtype=config.dtype), data, out, settings, resume=True)
    return {"tokens": run.manifest["counted_tokens"], "wall_time_seconds": run.manifest["wall_time_seconds"],
            "tokens_per_second": run.manifest["tokens_per_second"], "dtype": config.dtype}


def materialise_tuned(base_path: str, adapter: Path, out: Path) -> dict:
    """Merge the committed demo adapter into the base model (the folder ``sparcom tune`` would have written)."""
    from sparcom.tune.lora import materialise_adapter

    if not adapter.is_dir():
        raise SparcomError(f"{adapter}: demo adapter not found; retrain it with 'make demo-full' or 'sparcom tune'")
    if (out / "config.json").is_file():
        return {"path": str(out), "note": "existing folder reused"}
    record = materialise_adapter(base_path, adapter, out, overwrite=True)
    return {"path": str(out), "adapter_sha256": record.get("adapter", {}).get("sha256")}


def run_ablation(config: DemoConfig, model_path: str, where: Layout, name: str, tag: str, target: str,
                 removal: str) -> dict:
    """The causal check of one model's sets: held-out rows the profile did not see, or (``causal_folds``)
    cross-fitting over the profiled rows. An interrupted check resumes from its checkpoint."""
    from sparcom.api import ablate
    from sparcom.causal.checkpoint import checkpoint_dir

    out = where.ablate(name, tag, target, removal)
    resume = checkpoint_dir(out).is_dir()
    common = dict(seeds=config.seeds, per_category=config.ablate_per_category, batch_size=config.batch_size,
                  max_scored_tokens=config.max_scored_tokens, targets=(target,), expert_removal=removal,
                  interventions=config.interventions, controls=config.controls,
                  stop_when_decided=config.stop_when_decided, dtype=config.dtype, out=out, resume=resume, overwrite=not resume, plots=config.plots)
    if config.causal_folds:
        result = ablate(model_path, None, config.data, run=where.run(name), rule=rules()[tag],
                        crossfit_folds=config.causal_folds, **common)
    else:
        result = ablate(model_path, where.identify(name, tag), config.data, exclude_profiled=True, **common)
    return {"wall_time_seconds": round(result.wall_time_seconds, 1)}


def record_examples(config: DemoConfig, model_path: str, where: Layout, name: str) -> dict:
    """Where the top selected components of the paper's sets fire most, for the report's cards."""
    from sparcom.api import record_examples as record

    result = record(model_path, where.identify(name, "paper"), config.data, out=where.examples(name),
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
