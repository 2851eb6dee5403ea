"""Throughput of profiling vs a bare forward of the decoder stack, on the same batches.

Usage: python benchmarks/profile_overhead.py [--rows N] [--repeats K] [--real NAME]

For each model, the same length-bucketed batches run (a) through the decoder stack alone and (b) through the
decoder stack with sparcom's counting hooks, interleaved so that machine noise hits both alike. Reported:
tokens/s of each and their ratio (target ≥ 0.97 for dense models). A real built-in model is included when its
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
from sparcom.data.formatting import FormatSettings
from sparcom.data.schema import InstructionRow
from sparcom.profile.runner import Profiler, ProfileSettings, wrap_model

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


def measure(profiler: Profiler, rows: list[InstructionRow], batch_size: int, repeats: int) -> dict[str, float]:
    settings = profiler.settings
    examples = profiler.encode(rows)
    categories = sorted({r.category for r in rows})
    tokenizer = profiler.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    batches = [collate(b, settings.scope, pad, "right") for b in plan_batches(examples, categories, batch_size)]
    tokens = sum(b.real_tokens for b in batches)
    backbone = profiler.sites.backbone

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         position_ids=batch.position_ids, use_cache=False)
        return time.perf_counter() - start

    def counting() -> float:
        handles = profiler._hooks(categories)
        try:
            start = time.perf_counter()
            for batch in batches:
                profiler._count_batch(batch, rows)
            return time.perf_counter() - start
        finally:
            for handle in handles:
                handle.remove()

    bare()  # warm-up
    counting()
    bare_times, count_times = [], []
    for _ in range(repeats):
        bare_times.append(bare())
        count_times.append(counting())
    bare_tps = tokens / statistics.median(bare_times)
    count_tps = tokens / statistics.median(count_times)
    return {"tokens": tokens, "bare_tps": bare_tps, "profile_tps": count_tps, "ratio": count_tps / bare_tps}


def report(name: str, result: dict[str, float]) -> None:
    print(f"{name:<58} tokens {result['tokens']:>7,}  bare {result['bare_tps']:>8,.0f} tok/s  "
          f"profiling {result['profile_tps']:>8,.0f} tok/s  ratio {result['ratio']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=36)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real", default="smollm2-135m-instruct", help="built-in model to include when cached")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-moe", action="store_true", help="skip the Mixtral-shaped MoE model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tiny import tiny_tokenizer

    rows = synthetic_rows(args.rows)
    tokenizer = tiny_tokenizer()
    for scope in ("instruction", "all"):
        settings = ProfileSettings(scope=scope, template="raw", batch_size=args.batch_size)
        FormatSettings(scope)
        profiler = Profiler(wrap_model(llama_shaped(len(tokenizer)), tokenizer), settings)
        report(f"llama-shaped 12x576/1536 [{scope}]", measure(profiler, rows, args.batch_size, args.repeats))
    if not args.no_moe:
        moe = mixtral_shaped(len(tokenizer))
        for scope in ("instruction", "all"):
            for neurons in ("off", "auto", "recompute"):
                settings = ProfileSettings(scope=scope, template="raw", batch_size=args.batch_size,
                                           expert_neurons=neurons)
                profiler = Profiler(wrap_model(moe, tokenizer), settings)
                report(f"mixtral-shaped 4x256 8e top-2 [{scope}, expert neurons {neurons}]",
                       measure(profiler, rows, args.batch_size, args.repeats))
    real = cached_builtin(args.real)
    if real is None:
        print(f"{args.real}: not installed/cached; run 'sparcom models' to see how to add it")
        return
    from sparcom.zoo.catalog import load_model

    loaded = load_model(str(real))
    profiler = Profiler(loaded, ProfileSettings(scope="instruction", template="raw", batch_size=args.batch_size))
    report(f"{args.real} [instruction]", measure(profiler, rows, args.batch_size, args.repeats))


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
