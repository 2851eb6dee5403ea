"""The demo's whole flow on tiny random models: every step runs, SUMMARY.md answers the paper's claims from the
outputs, index.html links reports that exist, a second run reuses every step, and the full-size variant (every row
profiled, causal check by cross-fitting) runs to the end — the failure `make demo-full` once had."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from moe_tiny import tiny_moe_model
from tiny import tiny_model, tiny_tokenizer

from sparcom.data.hexainst import build_hexainst
from sparcom.demo import DemoConfig, run_demo
from sparcom.demo.config import BASE, FULL_CAUSAL, INSTRUCT, MOE, TUNED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict[str, Path]:
    """Four tiny model folders (instruct, base, tuned, MoE) and HexaInst cut to 3 AI + 3 human rows a category,
    each text cut short."""
    root = tmp_path_factory.mktemp("demo")
    folders = {INSTRUCT: root / "instruct", BASE: root / "base", TUNED: root / "tuned", MOE: root / "moe"}
    tiny_model("llama", seed=1, max_position_embeddings=4096).save_pretrained(folders[INSTRUCT])
    tiny_model("llama", seed=2, max_position_embeddings=4096).save_pretrained(folders[BASE])
    tiny_model("llama", seed=3, max_position_embeddings=4096).save_pretrained(folders[TUNED])
    tiny_moe_model("qwen2_moe", seed=4, max_position_embeddings=4096).save_pretrained(folders[MOE])
    for folder in folders.values():
        tiny_tokenizer().save_pretrained(folder)
    rows = build_hexainst(None)
    kept, seen = [], {}
    for row in rows:
        key = (row.category, row.source)
        if seen.get(key, 0) < 3:
            seen[key] = seen.get(key, 0) + 1
            kept.append(row)
    data = root / "hexainst-small.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for row in kept:
            short = {**row.to_dict(), "instruction": row.instruction[:80], "input": row.input[:80],
                     "output": row.output[:40]}  # the tiny tokenizer spends a token per byte
            handle.write(json.dumps(short) + "\n")
    return {"data": data, **{role: str(path) for role, path in folders.items()}}


def _config(setting, out: Path, **changes) -> DemoConfig:
    models = {role: setting[role] for role in (INSTRUCT, BASE, TUNED, MOE)}
    return DemoConfig(out=out, data=setting["data"], per_category=4, dtype="float32", folds=2, random_sets=5,
                      reference_rows=12, resamples=5, seeds=3, ablate_per_category=2, max_scored_tokens=4, examples_per_category=2,
                      models=models, plots=False, **changes)


def test_quick_demo_writes_claims_validity_reports_and_reuses_steps(setting, tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(_config(setting, out)).read_text(encoding="utf-8")

    claims = summary.split("## Do the paper's claims hold here?")[1].split("\n## ")[0]
    table = [line for line in claims.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 4 * 4  # four models × four claims
    for model in ("smollm2-135m-instruct (neurons)", "gemma-3-270m-base (neurons)", "gemma-3-270m-tuned (neurons)",
                  "smollm2-135m-moe (experts)"):
        assert sum(line.startswith(f"| {model} |") for line in table) == 4
    verdicts = {re.findall(r"\*\*(.+?)\*\*", line)[-1] for line in table}
    assert verdicts <= {"holds", "does not hold", "not enough evidence", "not measured"} | {
        v for v in verdicts if v.startswith("partly (")}
    # The table renders the decisions stored in claims.json (decided once; index.html reads the same file).
    stored = json.loads((out / "claims.json").read_text())["models"]
    for model, claims_of in stored.items():
        shown = [re.findall(r"\*\*(.+?)\*\*", line)[-1] for line in table if line.startswith(f"| {model} (")]
        assert [v.split(" (")[0] for v in shown] == [c["verdict"] for c in claims_of], model
    # The quick demo checks the three dense models causally, each stopped once decided; the MoE says why its
    # causal rows are missing.
    for model in ("smollm2-135m-instruct", "gemma-3-270m-base", "gemma-3-270m-tuned"):
        rows_of = [line for line in table if line.startswith(f"| {model} ") and ("critical role" in line
                                                                                  or "specificity" in line)]
        assert len(rows_of) == 2 and not any("not measured" in line for line in rows_of), model
        assert all("decided at 3 random sets, stopped after 1 drawn" in line for line in rows_of), rows_of
    moe_causal = [line for line in table if line.startswith("| smollm2-135m-moe") and "critical role" in line]
    assert "make demo-full" in moe_causal[0] and "not measured" in moe_causal[0]
    assert "Stopping when decided" in claims
    # The causal tables show each claim's outcome; a reason shared by several categories is written once below.
    causal = summary.split("| set of | damage")[1].split("\n### ")[0].split("\n## ")[0]
    rows = [line for line in causal.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 6 and all("p_holm" not in line and "critical role" in line for line in rows)
    reasons = [line for line in causal.splitlines() if line.startswith("- ")]
    assert reasons and len({line.split(": ", 1)[1] for line in reasons}) == len(reasons)
    assert any(line.startswith("- CLS critical role, CLS specificity, CODE critical role") for line in reasons)

    # Validity: both rules for every model, numbers read back from identify's summary.json.
    validity = json.loads((out / "identify/smollm2-135m-instruct/paper/summary.json").read_text())["validity"]
    accuracy = validity["neuron"]["headline"]["set_score"]["accuracy"]
    assert f"| smollm2-135m-instruct | neuron | paper | {100 * accuracy:.1f}%" in summary
    assert "| smollm2-135m-moe | expert | recommended |" in summary
    assert "drawn from whole frequency bins" in summary  # how validity's matched sets are drawn (not near misses)
    # The profiled subset keeps both sources of every category, so cross-source agreement is measured.
    headline = validity["neuron"]["headline"]
    # (summary.json writes NaN as null, so "measured" is a finite number there)
    assert isinstance(headline["cross_source_within"], float) and math.isfinite(headline["cross_source_within"])
    subset = [json.loads(line) for line in next((out / "data").glob("*.jsonl")).read_text().splitlines()]
    for category in {r["category"] for r in subset}:
        assert sorted(r["source"] for r in subset if r["category"] == category) == ["ai", "ai", "human", "human"]

    # Every image and link in SUMMARY.md exists; index.html links the reports, which exist.
    for target in re.findall(r"\]\(([^)]+)\)", summary):
        assert (out / target).exists(), target
    index = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]+\.html)"', index)
    assert sorted(links) == sorted(["reports/smollm2-135m-instruct.html", "reports/gemma-3-270m-pair.html",
                                    "reports/smollm2-135m-moe.html"])
    for link in links:
        assert (out / link).stat().st_size > 10_000

    steps = sorted(p.name for p in (out / "steps").glob("*.json"))
    again = run_demo(_config(setting, out))
    assert sorted(p.name for p in (out / "steps").glob("*.json")) == steps
    assert again.read_text(encoding="utf-8").split("## Wall time")[0] == summary.split("## Wall time")[0]
    times = summary.split("## Wall time")[1]
    assert "2 worker processes side by side" in times and "This run of `sparcom demo` took" in times
    assert "| sum of the steps |" in times


def test_full_variant_profiles_every_row_and_cross_fits_the_causal_check(setting, tmp_path):
    """Every row profiled leaves no unseen rows: the causal check must cross-fit over the run's folds."""
    out = tmp_path / "full"
    assert DemoConfig.full().interventions == ("mean", "zero", "resample")  # every intervention and control
    assert DemoConfig.full().controls == ("frequency-bin", "shape", "frequency", "magnitude", "magnitude-bin")
    config = DemoConfig.full(out=out, data=setting["data"], dtype="float32", folds=2, random_sets=5, resamples=5,
                             seeds=3, ablate_per_category=2, max_scored_tokens=4, examples_per_category=2,
                             causal_folds=2, plots=False, models={role: setting[role] for role in (INSTRUCT, BASE, TUNED, MOE)},
                             more_interventions=(), more_controls=("shape",),  # (all of them: 12× the time)
                             workers=1)  # every step in this process, in order (the quick demo uses two workers)
    assert DemoConfig(more_interventions=("zero", "mean")).interventions == ("mean", "zero")  # the claims' first
    assert config.per_category is None and config.causal == FULL_CAUSAL
    summary = run_demo(config).read_text(encoding="utf-8")
    for role, tag, target, removal in FULL_CAUSAL:
        name = {INSTRUCT: "smollm2-135m-instruct", BASE: "gemma-3-270m-base", TUNED: "gemma-3-270m-tuned",
                MOE: "smollm2-135m-moe"}[role]
        folder = out / "ablate" / name / (f"{tag}-{target}" + (f"-{removal}" if target == "experts" else ""))
        written = json.loads((folder / "summary.json").read_text())
        assert written["settings"]["folds"] == 2
        assert written["settings"]["interventions"] == ["mean"]
        assert written["settings"]["controls"] == ["frequency-bin", "shape"]
    claims = summary.split("## Do the paper's claims hold here?")[1].split("\n## ")[0]
    assert "causal check not run" not in claims
    stored = json.loads((out / "claims.json").read_text())["models"]["smollm2-135m-instruct"]
    causal = [c for c in stored if c["claim"] in ("critical role", "specificity")]
    assert causal and all((c["evidence"]["intervention"], c["evidence"]["control"]) == ("mean", "frequency-bin")
                          for c in causal)


def test_the_fast_dtype_is_resolved_once_from_the_cpu(monkeypatch):
    """``fast`` stands for bfloat16 only where the CPU computes it natively (emulated it is many times slower)."""
    import torch

    from sparcom.demo import config as demo_config

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert demo_config.fast_cpu_dtype() == expected
        assert DemoConfig().resolved().dtype == expected
    assert DemoConfig(dtype="float16").resolved().dtype == "float16"  # an explicit dtype is kept


def test_a_demo_folder_made_with_other_settings_is_refused_until_the_affected_steps_are_deleted(tmp_path, capsys):
    """A changed causal setting (here the control, as when a default changes on an upgrade) would otherwise reuse
    stale causal checks under the new settings' name: one line, exit 2, naming the records to delete; once they
    are gone those steps run again. A changed setting every step reads asks for a new folder."""
    from sparcom.cli import main
    from sparcom.errors import SparcomError

    out = tmp_path / "demo"
    (out / "steps").mkdir(parents=True)
    earlier = {**json.loads(json.dumps(DemoConfig(out=out).resolved().to_json())), "control": "frequency"}
    (out / "config.json").write_text(json.dumps(earlier), encoding="utf-8")
    for name in ("08-profile-smollm2", "26-ablate-smollm2-paper-neurons", "33-report-smollm2"):
        (out / "steps" / f"{name}.json").write_text("{}", encoding="utf-8")
    capsys.readouterr()
    assert main(["demo", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "control: 'frequency' → 'frequency-bin'" in err[0], err
    assert "*-ablate-*.json and " in err[0] and "*-report-*.json" in err[0] and "Traceback" not in err[0]
    assert json.loads((out / "config.json").read_text()) == earlier  # nothing rewritten
    config = DemoConfig(out=out).resolved()
    for name in ("26-ablate-smollm2-paper-neurons", "33-report-smollm2"):
        (out / "steps" / f"{name}.json").unlink()
    config.check_reuse(earlier)  # the affected records are gone: those steps run again
    with pytest.raises(SparcomError, match=f"per_category: 24 → 12\\); delete {out}, or pass another --out"):
        DemoConfig(out=out, per_category=12).check_reuse(json.loads(json.dumps(DemoConfig(out=out).to_json())))
    assert DemoConfig(out=out, workers=1).check_reuse(earlier | {"control": "frequency-bin", "workers": 2}) is None
