"""Cost of one causal-check condition against one bare forward over the same rows.

Usage: python benchmarks/ablation_cost.py [--data data/hexainst.jsonl] [--per-category 8] [--repeats 3]
                                          [--max-scored-tokens N] [--model smollm2-135m-instruct|llama-shaped]
                                          [--interventions zero,mean,resample]

One *condition* is one ablated NLL pass over the scored rows, as the check runs it: the batches of a
:class:`~sparcom.causal.scoring.ScoringPlan` (built once), a random set of 1 % of the MLP neurons deactivated
(:func:`sparcom.causal.interventions.ablate`), the LM head only at the scored positions, the loss per row. The
*bare forward* is the same model on the same prebuilt batches with the LM head at the same positions, no hooks and
no loss. Both run interleaved ``--repeats`` times (machine noise hits both alike); reported: seconds of each
(mean per pass, interleaved batch by batch), their ratio bare / condition (target ≥ 0.9), and for comparison the condition as it ran before the plan
existed (tokenising nothing, but building the padded batches again for every condition). Also measured: tokens per
second of the bare forward at twice the batch size — if it is not clearly faster, stacking two conditions into one
batch cannot make a condition cheaper on this machine. The last lines project the check's total cost:
1 + A · (1 + R) conditions for A ablated categories and R random sets. Each intervention of ``--interventions``
(:data:`sparcom.causal.plan.INTERVENTIONS`) is timed the same way: ``mean`` with per-neuron means (their values do not
change the cost), ``resample`` with its donor forward before each batch (donors of another category,
:mod:`sparcom.causal.resample`). The machine's load average is printed (other
jobs share the cores: read the ratios, not the absolute times); the process CPU time of each is printed too, which
a busy machine inflates much less than the wall time (with one thread it is the wall time of an idle core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sparcom.causal.interventions import InterventionReference, ablate
from sparcom.causal.nll import encode_scored
from sparcom.causal.plan import INTERVENTIONS
from sparcom.causal.resample import DonorPlan
from sparcom.causal.scoring import ScoringPlan, batch_nll, build_batch
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.formatting import pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows
from sparcom.models.logits import logits_at
from sparcom.models.sites import model_sites
from sparcom.random_sets import random_like

CATEGORIES = ("cls", "code", "qa", "gen", "math", "sum")
WORDS = ["the", "model", "reads", "an", "instruction", "and", "writes", "a", "careful", "answer", "about", "code",
         "math", "facts", "stories", "summaries", "of", "long", "news", "articles", "for", "curious", "readers"]


def synthetic_rows(per_category: int) -> list[InstructionRow]:
    """Rows of varied prompt and answer length over six categories (deterministic)."""
    rows = []
    for i in range(per_category * len(CATEGORIES)):
        prompt = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20 + (i * 37) % 120))
        answer = " ".join(WORDS[(3 * i + k) % len(WORDS)] for k in range(5 + (i * 53) % 90))
        rows.append(InstructionRow(f"b{i}", CATEGORIES[i % 6], "ai", "bench", prompt, "", answer, "CC0-1.0"))
    return rows


def load(name: str):
    """The real built-in model (converted once) or a random Llama with SmolLM2-135M's shape, and a tokenizer."""
    if name == "llama-shaped":
        from tiny import tiny_tokenizer
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = tiny_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                             tie_word_embeddings=True)
        torch.manual_seed(0)
        return LlamaForCausalLM(config).eval(), tokenizer
    from sparcom.zoo.builtin import resolve_builtin
    from sparcom.zoo.catalog import load_model

    loaded = load_model(str(resolve_builtin(name)))
    return loaded.model, loaded.tokenizer


def one_percent(model) -> ComponentSet:
    """A random set of 1 % of every layer's MLP neurons (the size of the paper's default selection)."""
    sites = model_sites(model)
    components = {"neuron": {layer: np.arange(max(1, site.width // 100)) for layer, site in sites.dense.items()}}
    shaped = ComponentSet.from_indices(components, sites, "one-percent")
    return random_like(shaped, 0, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or 'llama-shaped'")
    parser.add_argument("--data", type=Path, default=None, help="HexaInst rows (default: synthetic rows)")
    parser.add_argument("--per-category", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-scored-tokens", type=int, default=None)
    parser.add_argument("--random-sets", type=int, default=20, help="R for the projected total")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--interventions", default="zero,mean,resample", help="comma-separated INTERVENTIONS names")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    if args.data:
        rows, _ = first_rows_per_category(read_rows(args.data, require_output=True), args.per_category)
    else:
        rows = synthetic_rows(args.per_category)
    template = resolve_template(tokenizer, "auto")
    examples = encode_scored(rows, tokenizer, template, max_scored=args.max_scored_tokens)
    plan = length_batches([len(e) for e in examples], args.batch_size)
    pad = pad_token_id(tokenizer)
    scoring = ScoringPlan.build(examples, plan, pad)
    double = ScoringPlan.build(examples, length_batches([len(e) for e in examples], 2 * args.batch_size), pad)
    ablation = one_percent(model)
    sites = model_sites(model)

    interventions = args.interventions.split(",")
    rng = np.random.default_rng(0)
    reference = InterventionReference(
        {("neuron", layer): rng.normal(size=site.width) for layer, site in sites.dense.items()},
        DonorPlan.draw(examples, 0, pad))
    cpu: dict[str, float] = {"bare": 0.0, "condition": 0.0, "rebuilt": 0.0, "bare_double": 0.0,
                             **{f"intervention {name}": 0.0 for name in interventions}}

    def timed(work, name: str) -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        cpu[name] += time.process_time() - start_cpu
        return time.perf_counter() - start

    def bare(batch) -> None:
        logits_at(model, batch.input_ids, batch.attention, batch.keep)

    def condition(batch) -> None:
        with ablate(model, ablation, sites=sites):
            batch_nll(model, batch)

    def intervened(name: str, batch) -> None:
        with INTERVENTIONS[name](model, ablation, sites=sites, reference=reference) as stats:
            if stats.before_batch is not None:
                stats.before_batch(list(batch.rows), batch)
            batch_nll(model, batch)

    def rebuilt(batch) -> None:
        fresh = build_batch(examples, batch.rows, pad)
        with ablate(model, ablation, sites=sites):
            batch_nll(model, fresh)

    # Interleaved batch by batch, so that another job's burst hits all three alike.
    times: dict[str, float] = dict.fromkeys(cpu, 0.0)
    with torch.no_grad():
        bare(scoring.batches[0])  # warm-up
        for _ in range(args.repeats):
            for batch in scoring.batches:
                times["bare"] += timed(lambda b=batch: bare(b), "bare")
                times["condition"] += timed(lambda b=batch: condition(b), "condition")
                times["rebuilt"] += timed(lambda b=batch: rebuilt(b), "rebuilt")
                for name in interventions:
                    key = f"intervention {name}"
                    times[key] += timed(lambda b=batch, n=name: intervened(n, b), key)
            for batch in double.batches:
                times["bare_double"] += timed(lambda b=batch: bare(b), "bare_double")
    median = {k: v / args.repeats for k, v in times.items()}
    cpu = {k: v / args.repeats for k, v in cpu.items()}
    tokens = scoring.tokens
    print(f"model {args.model}; {len(rows)} rows ({args.per_category} per category), {tokens:,} forward tokens, "
          f"{int(scoring.counts.sum()):,} scored; batch size {args.batch_size}; threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"bare forward (LM head at scored positions)  {median['bare']:7.2f} s  {tokens / median['bare']:8.0f} tok/s"
          f"  CPU {cpu['bare']:7.2f} s")
    print(f"one condition (1% neurons ablated, loss)    {median['condition']:7.2f} s  "
          f"ratio bare/condition {median['bare'] / median['condition']:.3f}  CPU {cpu['condition']:7.2f} s  "
          f"CPU ratio {cpu['bare'] / cpu['condition']:.3f}")
    print(f"condition rebuilding its batches            {median['rebuilt']:7.2f} s  "
          f"ratio bare/condition {median['bare'] / median['rebuilt']:.3f}  CPU {cpu['rebuilt']:7.2f} s  "
          f"CPU ratio {cpu['bare'] / cpu['rebuilt']:.3f}")
    print(f"bare forward at batch size {2 * args.batch_size:<3}             {median['bare_double']:7.2f} s  "
          f"{tokens / median['bare_double']:8.0f} tok/s (×{median['bare'] / median['bare_double']:.2f} of batch "
          f"{args.batch_size})")
    for name in interventions:
        key = f"intervention {name}"
        print(f"one condition under {name:<9} (1% neurons) {median[key]:7.2f} s  cost / bare "
              f"{median[key] / median['bare']:.2f}  CPU {cpu[key]:7.2f} s  CPU cost / bare {cpu[key] / cpu['bare']:.2f}")
    for r in (args.random_sets, 119):
        passes = 1 + len(CATEGORIES) * (1 + r)
        print(f"projected check, 6 categories × (1 + {r}) + 1 = {passes} conditions: "
              f"{passes * median['condition'] / 60:.1f} min at this load; {passes * cpu['condition'] / 60:.1f} "
              f"CPU-min (≈ wall minutes on an idle core at {torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
