"""Throughput of profiling vs a bare forward of the decoder stack, on the same batches.

Usage: python benchmarks/profile_overhead.py [--rows N] [--repeats K] [--real NAME] [--group-by category,instruction]

For each model, the same length-bucketed batches run (a) through the decoder stack alone and (b) through the
decoder stack with sparcom's counting hooks, batch by batch in alternating order so that machine noise hits both
alike. Reported: tokens/s of each and their ratios in wall and in CPU time (the steadier one on a shared machine;
target ≥ 0.97 for dense models), by category and with counts per instruction (``--group-by``). A real built-in model is included when its
package is installed and converted (``sparcom models``). A small Mixtral-shaped model (8 experts, top-2) is
measured with expert-neuron counting off (experts only), ``auto`` (activations captured from the experts'
own computation) and ``recompute`` (gates recomputed from the expert weights); target ≥ 0.90 (``--no-moe`` skips).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sparcom.data.batching import collate, plan_batches
from sparcom.data.schema import InstructionRow
from sparcom.profile.runner import GroupPlan, Profiler, ProfileSettings, wrap_model

WORDS = ["the", "model", "reads", "an", "instruction", "and", "writes", "a", "careful", "answer", "about", "code", "math", "facts", "stories", "and", "summaries", "of", "long", "news", "articles", "for", "curious", "readers"]


def synthetic_rows(n: int) -> list[InstructionRow]:
    """Instruction rows of varied length over six categories (deterministic)."""
    categories = ("cls", "code", "qa", "gen", "math", "sum")
    rows = []
    for i in range(n):
        length = 10 + (i * 37) % 60
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(length))
        rows.append(InstructionRow(f"b{i}", categories[i % 6], "ai", "bench", f"Task {i}: {text}", "", "ok",
                                   "CC0-1.0"))
    return rows


def llama_shaped(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=12,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def mixtral_shaped(vocab: int):
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=vocab, hidden_size=256, intermediate_size=896, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                           max_position_embeddings=2048)
    torch.manual_seed(0)
    return MixtralForCausalLM(config).eval()


def measure(profiler: Profiler, rows: list[InstructionRow], batch_size: int, repeats: int,
            group_by: str = "category") -> dict[str, float]:
    """Bare and counting forwards of each batch back to back, their order alternating from batch to batch and
    round to round (so load changes hit both alike); the hooks are attached only around the counting forward.
    Ratios are bare time / counting time (throughput ratios) in wall and in CPU time; round 0 warms up."""
    settings = profiler.settings
    examples = profiler.encode(rows)
    categories = sorted({r.category for r in rows})
    tokenizer = profiler.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    batches = [collate(b, settings.scope, pad, "right") for b in plan_batches(examples, categories, batch_size)]
    tokens = sum(b.real_tokens for b in batches)
    backbone = profiler.sites.backbone
    profiler.groups = GroupPlan.of(rows, group_by)

    def bare(batch) -> None:
        with torch.inference_mode():
            backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, use_cache=False)

    def counting(batch) -> None:
        profiler._count_batch(batch, rows)

    totals = {"bare": [0.0, 0.0], "counting": [0.0, 0.0]}  # wall, CPU
    rounds = []
    for round_index in range(repeats + 1):
        spent = {"bare": [0.0, 0.0], "counting": [0.0, 0.0]}
        for index, batch in enumerate(batches):
            order = ("bare", "counting") if (round_index + index) % 2 == 0 else ("counting", "bare")
            for side in order:
                handles = profiler._hooks(categories) if side == "counting" else []
                wall, cpu = time.perf_counter(), time.process_time()
                (bare if side == "bare" else counting)(batch)
                spent[side][0] += time.perf_counter() - wall
                spent[side][1] += time.process_time() - cpu
                for handle in handles:
                    handle.remove()
        if round_index:
            rounds.append(spent["bare"][1] / spent["counting"][1])
            for side in totals:
                totals[side][0] += spent[side][0]
                totals[side][1] += spent[side][1]
    bare_wall, bare_cpu = totals["bare"]
    count_wall, count_cpu = totals["counting"]
    return {"tokens": tokens, "bare_tps": tokens * repeats / bare_wall, "profile_tps": tokens * repeats / count_wall,
            "ratio": bare_wall / count_wall, "cpu_ratio": bare_cpu / count_cpu,
            "cpu_rounds": statistics.median(rounds), "cpu_spread": (min(rounds), max(rounds))}


def report(name: str, result: dict[str, float]) -> None:
    low, high = result["cpu_spread"]
    print(f"{name:<66} tokens {result['tokens']:>6,}  bare {result['bare_tps']:>6,.0f} tok/s  "
          f"profiling {result['profile_tps']:>6,.0f} tok/s  ratio wall {result['ratio']:.3f}  "
          f"CPU {result['cpu_ratio']:.3f} (rounds {low:.3f}-{high:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=36)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real", default="smollm2-135m-instruct", help="built-in model to include when cached")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--scopes", default="instruction,all")
    parser.add_argument("--group-by", default="category,instruction", help="comma-separated --group-by values")
    parser.add_argument("--no-moe", action="store_true", help="skip the Mixtral-shaped MoE model")
    parser.add_argument("--no-dense", action="store_true", help="skip the Llama-shaped dense model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tiny import tiny_tokenizer

    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}; threads {torch.get_num_threads()}",
          flush=True)
    rows = synthetic_rows(args.rows)
    tokenizer = tiny_tokenizer()
    groupings, scopes = args.group_by.split(","), args.scopes.split(",")
    dense = None if args.no_dense else wrap_model(llama_shaped(len(tokenizer)), tokenizer)
    for scope in scopes if dense is not None else ():
        for group_by in groupings:
            profiler = Profiler(dense, ProfileSettings(scope=scope, template="raw", batch_size=args.batch_size))
            report(f"llama-shaped 12x576/1536 [{scope}, by {group_by}]",
                   measure(profiler, rows, args.batch_size, args.repeats, group_by))
    if not args.no_moe:
        moe = wrap_model(mixtral_shaped(len(tokenizer)), tokenizer)
        for scope in scopes:
            for neurons in ("off", "auto", "recompute"):
                for group_by in groupings:
                    settings = ProfileSettings(scope=scope, template="raw", batch_size=args.batch_size,
                                               expert_neurons=neurons)
                    report(f"mixtral-shaped 4x256 8e top-2 [{scope}, {neurons}, by {group_by}]",
                           measure(Profiler(moe, settings), rows, args.batch_size, args.repeats, group_by))
    real = cached_builtin(args.real)
    if real is None:
        print(f"{args.real}: not installed/cached; run 'sparcom models' to see how to add it")
        return
    from sparcom.zoo.catalog import load_model

    loaded = load_model(str(real))
    for group_by in groupings:
        profiler = Profiler(loaded, ProfileSettings(scope="instruction", template="raw", batch_size=args.batch_size))
        report(f"{args.real} [instruction, by {group_by}]", measure(profiler, rows, args.batch_size, args.repeats,
                                                                   group_by))
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


def cached_builtin(name: str):
    try:
        from sparcom.zoo.builtin import list_builtins
    except ImportError:
        return None
    for status in list_builtins():
        if status.name == name and status.cached:
            return status.path
    return None


if __name__ == "__main__":
    main()
