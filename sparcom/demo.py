"""``sparcom demo``: the whole pipeline on real weights, on a laptop-sized machine, resumable step by step.

Steps: build HexaInst → convert the built-in models → materialise the tuned Gemma from the committed adapter →
profile SmolLM2-135M-Instruct, Gemma-3-270M base and tuned → identify ISNs → compare base → tuned → causal check
on SmolLM2 → ``SUMMARY.md``. Each finished step leaves a record in ``steps/``; a second run skips it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sparcom.errors import SparcomError
from sparcom.report.files import SUMMARY_FILE

console = Console(stderr=True)

#: The committed LoRA adapter that turns Gemma-3-270M base into the demo's tuned model (see its RECIPE.md).
DEMO_ADAPTER = Path(__file__).resolve().parents[1] / "demo" / "adapters" / "gemma-3-270m-sparcom-sft"
INSTRUCT_MODEL = "smollm2-135m-instruct"
BASE_MODEL = "gemma-3-270m"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults finish in about 20 minutes on 2 CPU cores."""

    out: Path = Path("results/demo")
    data: Path = Path("data/hexainst.jsonl")
    per_category: int | None = 24
    batch_size: int = 8
    ablate_per_category: int = 4
    seeds: int = 3
    epsilon: float = 0.01
    adapter: Path = DEMO_ADAPTER

    @classmethod
    def full(cls, **changes) -> DemoConfig:
        """All 1,200 instructions and a larger causal check (hours on 2 cores; minutes on a GPU)."""
        return cls(**{"per_category": None, "ablate_per_category": 20, "seeds": 10, **changes})

    def check(self) -> None:
        """Refuse settings that would fail late, after minutes of work, before any step runs."""
        from sparcom.models.lora import is_adapter_folder
        from sparcom.outputs import check_parent

        if self.per_category is not None and self.per_category < 1:
            raise SparcomError(f"--per-category must be at least 1, got {self.per_category}")
        if not is_adapter_folder(self.adapter):
            raise SparcomError(f"{self.adapter}: not a LoRA adapter folder (needs adapter_config.json and "
                               "adapter_model.safetensors); pass the adapter 'sparcom tune' wrote, or omit --adapter")
        if self.data.exists() and not self.data.is_file():
            raise SparcomError(f"{self.data}: --data must be a JSON Lines file (it is built there when missing)")
        if self.out.exists() and not self.out.is_dir():
            raise SparcomError(f"{self.out}: exists and is a file; --out must be a directory")
        check_parent(self.out)


class Steps:
    """Runs named steps once; records wall time and result of each in ``out/steps/{name}.json``."""

    def __init__(self, out: Path) -> None:
        self.folder = out / "steps"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        record_path = self.folder / f"{name}.json"
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
                self.timings[name] = record["seconds"]
            except (ValueError, KeyError, TypeError):
                raise SparcomError(f"{record_path}: damaged step record; delete it to run step {name} again") from None
            console.print(f"[dim]✓ {name}: done before ({record['seconds']:.0f} s), reused[/]")
            return record.get("result")
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
        self.timings[name] = seconds
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seconds": round(seconds, 1), "result": result}, indent=2, default=str))
        tmp.replace(record_path)
        console.print(f"[green]✓ {name}[/] in {seconds:.0f} s")
        return result


def run_demo(config: DemoConfig | None = None) -> Path:
    """Run (or resume) the demo; returns the path of ``SUMMARY.md``."""
    from sparcom.analysis.selection import SelectionRule
    from sparcom.api import compare, identify
    from sparcom.data.hexainst import build_hexainst
    from sparcom.models.builtin import resolve_builtin
    from sparcom.models.loading import load_model
    from sparcom.profile.runner import ProfileSettings, profile

    config = config or DemoConfig()
    config.check()
    out = config.out
    steps = Steps(out)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    def build_data() -> dict:
        if config.data.is_file():
            return {"path": str(config.data), "note": "existing file reused"}
        rows = build_hexainst(config.data)
        return {"path": str(config.data), "rows": len(rows)}

    steps.run("01-hexainst", build_data)
    paths = steps.run("02-models", lambda: {name: str(resolve_builtin(name)) for name in (INSTRUCT_MODEL, BASE_MODEL)})
    settings = ProfileSettings(per_category=config.per_category, batch_size=config.batch_size)
    rule = SelectionRule(name="percentile", epsilon=config.epsilon)

    def profile_one(name: str, path: str) -> dict:
        run = profile(load_model(path), config.data, out / "runs" / name, settings, resume=True)
        return {"tokens": run.manifest["counted_tokens"], "wall_time_seconds": run.manifest["wall_time_seconds"],
                "tokens_per_second": run.manifest["tokens_per_second"]}

    def identify_one(name: str) -> dict:
        result = identify(out / "runs" / name, rule, out=out / "identify" / name, overwrite=True)
        return result.summary()["kinds"]["neuron"]["selected"]

    # The instruct model: ISNs and the causal check.
    steps.run(f"03-profile-{INSTRUCT_MODEL}", lambda: profile_one(INSTRUCT_MODEL, paths[INSTRUCT_MODEL]))
    steps.run(f"04-identify-{INSTRUCT_MODEL}", lambda: identify_one(INSTRUCT_MODEL))
    steps.run(f"05-ablate-{INSTRUCT_MODEL}", lambda: run_ablation(paths[INSTRUCT_MODEL], out, config))

    # The base → tuned pair.
    tuned_dir = out / "models" / "gemma-3-270m-sparcom-sft"
    steps.run("06-tuned-model", lambda: materialise_tuned(paths[BASE_MODEL], config.adapter, tuned_dir))
    pair = {"gemma-3-270m-base": paths[BASE_MODEL], "gemma-3-270m-tuned": str(tuned_dir)}
    for number, (name, path) in enumerate(pair.items()):
        steps.run(f"{7 + 2 * number:02d}-profile-{name}", lambda name=name, path=path: profile_one(name, path))
        steps.run(f"{8 + 2 * number:02d}-identify-{name}", lambda name=name: identify_one(name))

    def compare_gemma() -> dict:
        result = compare(out / "runs" / "gemma-3-270m-base", out / "runs" / "gemma-3-270m-tuned", rule,
                         out=out / "compare" / "gemma-3-270m", overwrite=True)
        return result.summary()["kinds"]["neuron"]["per_category"]

    steps.run("11-compare-gemma", compare_gemma)
    summary = write_summary(out, steps.timings, config)
    console.print(f"[bold green]demo finished[/]: {summary}")
    return summary


def materialise_tuned(base_path: str, adapter: Path, out: Path) -> dict:
    """Merge the committed demo adapter into the base model (the folder ``sparcom tune`` would have written)."""
    from sparcom.tune.lora import materialise_adapter

    if not adapter.is_dir():
        raise SparcomError(f"{adapter}: demo adapter not found; retrain it with 'make demo-full' or 'sparcom tune'")
    if (out / "config.json").is_file():
        return {"path": str(out), "note": "existing folder reused"}
    record = materialise_adapter(base_path, adapter, out, overwrite=True)
    return {"path": str(out), "adapter_sha256": record.get("adapter", {}).get("sha256")}


def run_ablation(model_path: str, out: Path, config: DemoConfig) -> dict:
    """Causal check of SmolLM2's ISNs on held-out HexaInst rows (not the ones the ISNs were selected on)."""
    from sparcom.api import ablate

    result = ablate(model_path, out / "identify" / INSTRUCT_MODEL, config.data, out=out / "ablate" / INSTRUCT_MODEL,
                    seeds=config.seeds, per_category=config.ablate_per_category, exclude_profiled=True,
                    batch_size=config.batch_size, overwrite=True)
    return {"wall_time_seconds": round(result.wall_time_seconds, 1)}


def ablation_section(out: Path) -> list[str]:
    """Own-category ΔNLL of each ISN set against random sets with the same per-layer counts."""
    from sparcom.data.schema import category_label
    from sparcom.report.causal import causal_plot

    folder = out / "ablate" / INSTRUCT_MODEL
    summary = _load(folder / SUMMARY_FILE)
    if not summary.get("targets"):
        return ["*no causal-check output*", ""]
    lines = [f"Mean NLL (nats per response token) of the reference responses of held-out rows, before and after "
             f"zeroing each category's ISNs; random control: {summary['settings']['seeds']} sets with the same "
             "per-layer counts. z = (ΔNLL − random mean) / random std; p one-sided, empirical.", ""]
    for name, target in summary["targets"].items():
        evaluated = target["evaluated"]
        lines += [f"**{name}**", "", "| ISNs of | ΔNLL on own category | random ΔNLL (mean ± std) | z | p | "
                  "mean ΔNLL on the other categories |", "|---|---:|---:|---:|---:|---:|"]
        for row in target["specificity"]:
            a, j = target["ablated"].index(row["ablated"]), evaluated.index(row["ablated"])
            mean, std = target["random"]["mean"][a][j], target["random"]["std"][a][j]
            lines.append(f"| {category_label(row['ablated'])} | {row['own_delta_nll']:+.3f} | {mean:+.3f} ± {std:.3f} | "
                         f"{target['z'][a][j]:+.1f} | {row['own_p_value']:.2f} | {row['mean_other_delta_nll']:+.3f} |")
        lines += ["", f"![ΔNLL matrix](ablate/{INSTRUCT_MODEL}/{causal_plot(name)})", ""]
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def identify_section(out: Path, name: str) -> list[str]:
    """Per-category ISN counts and general/unique shares of one model, with its plots."""
    from sparcom.data.schema import category_label
    from sparcom.report.outputs import identify_plot

    summary = _load(out / "identify" / name / SUMMARY_FILE)
    neuron = summary.get("kinds", {}).get("neuron")
    if not neuron:
        return [f"*{name}: no identify output*", ""]
    shares = neuron["shares"]
    lines = [f"### {name}", "",
             f"{neuron['components']:,} MLP neurons in {neuron['layers']} layers; {summary.get('rule_description', '')}.",
             f"Selected by at least one category: **{neuron['selected_any']:,}**; general (all six): "
             f"**{neuron['general']:,}** ({_pct(shares.get('general_share'))} of the selected); unique to one "
             f"category: **{neuron['unique_total']:,}** ({_pct(shares.get('unique_share'))}); dead (never active): "
             f"{neuron['dead']:,}.", "",
             "| category | ISNs | unique | unique share | general share |", "|---|---:|---:|---:|---:|"]
    for category in summary["categories"]:
        lines.append(f"| {category_label(category)} | {neuron['selected'][category]:,} | "
                     f"{neuron['unique'][category]:,} | {_pct(shares.get(f'unique_share_{category}'))} | "
                     f"{_pct(shares.get(f'general_share_{category}'))} |")
    lines += ["", f"![ISNs per layer: general, shared, unique](identify/{name}/{identify_plot('neuron', 'sets_per_layer')})",
              f"![Overlap of the categories' ISN sets](identify/{name}/{identify_plot('neuron', 'overlap')})",
              f"![epsilon sweep](identify/{name}/{identify_plot('neuron', 'epsilon_sweep')})", ""]
    return lines


def compare_section(out: Path) -> list[str]:
    from sparcom.data.schema import category_label
    from sparcom.report.outputs import compare_plot

    summary = _load(out / "compare" / "gemma-3-270m" / SUMMARY_FILE)
    neuron = summary.get("kinds", {}).get("neuron")
    if not neuron:
        return ["*no comparison output*", ""]
    lines = ["| category | base ISNs | tuned ISNs | retained | gained | lost | Jaccard | Spearman ρ of p |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for category in summary["categories"]:
        c = neuron["per_category"][category]
        rho = neuron["correlation"][category]["spearman"]
        lines.append(f"| {category_label(category)} | {c['base']:,} | {c['tuned']:,} | {c['retained']:,} | "
                     f"{c['gained']:,} | {c['lost']:,} | {c['jaccard']:.3f} | {rho:.3f} |")
    structure = neuron["structure"]
    lines += ["", f"General ISNs: {structure['general']['base']:,} → {structure['general']['tuned']:,}; "
              f"selected by any category: {structure['selected_any']['base']:,} → "
              f"{structure['selected_any']['tuned']:,}.", "",
              f"![Retained, gained and lost ISNs](compare/gemma-3-270m/{compare_plot('neuron', 'set_changes')})",
              f"![Per-layer change](compare/gemma-3-270m/{compare_plot('neuron', 'change_per_layer')})", ""]
    return lines


def write_summary(out: Path, timings: dict[str, float], config: DemoConfig) -> Path:
    """``SUMMARY.md``: the headline numbers of every step, with the plots embedded."""
    lines = ["# sparcom demo — results", "",
             f"Data: HexaInst, {'all rows' if config.per_category is None else f'the first {config.per_category} rows of each category'}"
             f" (scope `instruction`: the user text only; chat template where the tokenizer has one, raw otherwise). "
             f"Selection: top ε = {config.epsilon:g} of each category's activation frequencies over all layers.", "",
             "## Instruction-specific neurons", ""]
    for name in (INSTRUCT_MODEL, "gemma-3-270m-base", "gemma-3-270m-tuned"):
        lines += identify_section(out, name)
    lines += ["## Base → tuned: Gemma-3-270M and its LoRA-tuned version", "", *compare_section(out)]
    lines += ["## Causal check: SmolLM2-135M-Instruct", "", *ablation_section(out)]
    lines += ["## Wall time per step", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:,.0f} |" for name, seconds in timings.items()]
    lines += [f"| total | {sum(timings.values()):,.0f} |", ""]
    path = out / "SUMMARY.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
