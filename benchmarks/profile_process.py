"""Whole-process cost of ``sparcom profile`` vs a bare-forward script on the same rows.

Usage: python benchmarks/profile_process.py [--model NAME] [--per-category N] [--repeats K]
                                            [--group-by category,instruction] [--threads T]

Each repetition runs, as child processes of this one (so with the same nice level and thread count), in
alternating order: (a) a bare-forward script — plain transformers loads the built-in's cached folder, the same rows
are encoded and batched as sparcom does, and the decoder stack runs once over every batch — and (b) ``sparcom
profile`` on the built-in's name, the whole command: start-up, the cache check, the counting, the manifest and the
run's files. Reported per ``--group-by``: medians of wall and CPU time (user + system) of each, and their ratios
bare / profile (a throughput ratio; target ≥ 0.95). On a busy shared machine the CPU ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path


def bare_forward(folder: str, rows_path: str, batch_size: int, dtype: str) -> None:
    """The baseline process: what a user's own script needs to run the same forward passes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparcom.data.batching import collate, plan_batches
    from sparcom.data.formatting import encode_row, pad_token_id, resolve_template
    from sparcom.data.schema import read_rows

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    rows = read_rows(rows_path)
    template = resolve_template(tokenizer, "auto")
    examples = [encode_row(row, i, tokenizer, template, None, False) for i, row in enumerate(rows)]
    categories = list(dict.fromkeys(row.category for row in rows))
    pad, side = pad_token_id(tokenizer), getattr(tokenizer, "padding_side", "right") or "right"
    with torch.inference_mode():
        for planned in plan_batches(examples, categories, batch_size):
            batch = collate(planned, "instruction", pad, side)
            model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=False)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_rows(path: Path, per_category: int) -> int:
    from sparcom.data.hexainst import load_hexainst

    taken: dict[str, int] = {}
    with path.open("w", encoding="utf-8") as handle:
        for row in load_hexainst():
            if taken.get(row.category, 0) < per_category:
                taken[row.category] = taken.get(row.category, 0) + 1
                handle.write(json.dumps(asdict(row)) + "\n")
    return sum(taken.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-by", default="category,instruction")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--bare", nargs=2, metavar=("FOLDER", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_forward(args.bare[0], args.bare[1], args.batch_size, args.dtype)
        return
    from sparcom.zoo.catalog import resolve

    folder = resolve(args.model)  # built (or converted) once before any timing
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1"}
    sparcom = str(Path(sys.executable).with_name("sparcom"))
    work = Path(tempfile.mkdtemp(prefix="sparcom-process-"))
    try:
        rows = work / "rows.jsonl"
        count = write_rows(rows, args.per_category)
        bare = [sys.executable, __file__, "--bare", str(folder), str(rows), "--batch-size", str(args.batch_size),
                "--dtype", args.dtype]
        print(f"{args.model}: {count} HexaInst rows, batch size {args.batch_size}, {args.threads} thread(s), "
              f"nice {os.nice(0)}; load before {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
        for group_by in args.group_by.split(","):
            profile = [sparcom, "profile", args.model, "--data", str(rows), "--out", str(work / "run"),
                       "--overwrite", "--quiet", "--dtype", args.dtype, "--batch-size", str(args.batch_size),
                       "--group-by", group_by]
            times: dict[str, list[tuple[float, float]]] = {"bare": [], "profile": []}
            for repeat in range(args.repeats + 1):  # the first round warms the page cache and is dropped
                order = ("bare", "profile") if repeat % 2 else ("profile", "bare")
                for side in order:
                    measured = timed(bare if side == "bare" else profile, env)
                    if repeat:
                        times[side].append(measured)
            wall = {side: statistics.median(t[0] for t in v) for side, v in times.items()}
            cpu = {side: statistics.median(t[1] for t in v) for side, v in times.items()}
            rounds = ", ".join(f"{b[1] / p[1]:.3f}" for b, p in zip(times["bare"], times["profile"], strict=True))
            print(f"  --group-by {group_by:<12} bare {wall['bare']:6.1f} s wall {cpu['bare']:6.1f} s CPU   "
                  f"profile {wall['profile']:6.1f} s wall {cpu['profile']:6.1f} s CPU   "
                  f"ratio wall {wall['bare'] / wall['profile']:.3f}  CPU {cpu['bare'] / cpu['profile']:.3f} "
                  f"(rounds: {rounds})", flush=True)
        print(f"load after {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
