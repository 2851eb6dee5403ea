"""Data-parallel scaling of ``sparcom profile`` on one CPU machine: 2 torchrun ranks vs 1 process.

Usage: python benchmarks/scaling.py [--per-category N] [--repeats K] [--model NAME] [--out DIR]

Three configurations profile the same rows (the first N AI-written HexaInst rows of each category) with the same
real model (default: the built-in SmolLM2-135M-Instruct), each in fresh processes started the way a user would:

- ``1p×1t``: ``sparcom profile`` with OMP_NUM_THREADS=1;
- ``1p×2t``: ``sparcom profile`` with OMP_NUM_THREADS=2;
- ``2r×1t``: ``torchrun --nproc-per-node 2 -m sparcom profile`` with OMP_NUM_THREADS=1 per rank.

Throughput is the run's own measure (manifest: real tokens / wall time of the counting pass, model loading and
interpreter start excluded; for the job: rank 0's wall time, waits at the rounds' summations included). The
configurations run interleaved, ``--repeats`` times, so that the machine's other load hits all alike; the 1-minute
load average is recorded around every run. Reported: the median tokens/s of each and the ratios
``2r×1t / 1p×1t`` (target ≥ 1.8) and ``2r×1t / 1p×2t``, and whether the job's counts file is byte-identical to the
single process's (it must be for ``1p×1t``; ``1p×2t`` may differ if the kernels' results depend on threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CONFIGS = {
    "1p×1t": {"threads": "1", "ranks": 1},
    "1p×2t": {"threads": "2", "ranks": 1},
    "2r×1t": {"threads": "1", "ranks": 2},
}


def write_rows(path: Path, per_category: int) -> int:
    from sparcom.data.hexainst import load_ai_rows
    from sparcom.data.schema import first_rows_per_category

    rows, _ = first_rows_per_category(load_ai_rows(), per_category)
    path.write_text("".join(json.dumps(row.to_dict()) + "\n" for row in rows), encoding="utf-8")
    return len(rows)


def run_config(name: str, model: str, data: Path, out: Path, batch_size: int) -> dict:
    config = CONFIGS[name]
    env = {**os.environ, "OMP_NUM_THREADS": config["threads"], "MKL_NUM_THREADS": config["threads"],
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    args = ["profile", model, "--data", str(data), "--out", str(out), "--quiet", "--overwrite",
            "--batch-size", str(batch_size)]
    if config["ranks"] == 1:
        command = [str(BIN / "sparcom"), *args]
    else:
        command = [str(BIN / "torchrun"), "--nproc-per-node", str(config["ranks"]), "-m", "sparcom", *args]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"config": name, "tokens_per_second": manifest["tokens_per_second"],
            "wall_time_seconds": manifest["wall_time_seconds"], "end_to_end_seconds": round(elapsed, 1),
            "real_tokens": manifest["padding"]["real_tokens"], "load_before": load_before, "load_after": load_after,
            "counts": (out / "counts.safetensors").read_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a built-in name or a model folder")
    parser.add_argument("--out", type=Path, default=None, help="write the measurements as JSON here")
    args = parser.parse_args()

    model = args.model
    if not Path(model).exists():
        from sparcom.zoo.builtin import resolve_builtin

        model = str(resolve_builtin(model))
    work = Path(tempfile.mkdtemp(prefix="sparcom-scaling-"))
    try:
        data = work / "rows.jsonl"
        rows = write_rows(data, args.per_category)
        print(f"model {model}; {rows} rows ({args.per_category} per category); batch size {args.batch_size}; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")
        results: list[dict] = []
        for repeat in range(args.repeats):
            for name in CONFIGS:
                result = run_config(name, model, data, work / name.replace("×", "x"), args.batch_size)
                results.append(result)
                print(f"  [{repeat + 1}] {name}: {result['tokens_per_second']:8.0f} tok/s  (counting "
                      f"{result['wall_time_seconds']:.1f} s, end to end {result['end_to_end_seconds']:.1f} s, load "
                      f"{result['load_before']:.2f} → {result['load_after']:.2f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: statistics.median(r["tokens_per_second"] for r in results if r["config"] == name)
              for name in CONFIGS}
    reference = {name: next(r["counts"] for r in results if r["config"] == name) for name in CONFIGS}
    identical = {name: all(r["counts"] == reference["1p×1t"] for r in results if r["config"] == name)
                 for name in CONFIGS}
    loads = [value for r in results for value in (r["load_before"], r["load_after"])]
    summary = {
        "median_tokens_per_second": median,
        "ratio_2r1t_vs_1p1t": round(median["2r×1t"] / median["1p×1t"], 3),
        "ratio_2r1t_vs_1p2t": round(median["2r×1t"] / median["1p×2t"], 3),
        "ratio_1p2t_vs_1p1t": round(median["1p×2t"] / median["1p×1t"], 3),
        "counts_identical_to_1p1t": identical,
        "load_average": {"min": min(loads), "max": max(loads), "mean": round(statistics.mean(loads), 2)},
        "runs": [{k: v for k, v in r.items() if k != "counts"} for r in results],
    }
    print("median tokens/s: " + ", ".join(f"{k} {v:.0f}" for k, v in median.items()))
    print(f"2 ranks × 1 thread vs 1 process × 1 thread: {summary['ratio_2r1t_vs_1p1t']:.2f}× (target ≥ 1.8)")
    print(f"2 ranks × 1 thread vs 1 process × 2 threads: {summary['ratio_2r1t_vs_1p2t']:.2f}×")
    print(f"1 process × 2 threads vs 1 process × 1 thread: {summary['ratio_1p2t_vs_1p1t']:.2f}×")
    print(f"counts byte-identical to 1p×1t: {identical}")
    print(f"load average during the runs: {summary['load_average']}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
