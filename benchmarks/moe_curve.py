"""Quality curve of MoEfied SmolLM2: held-out NLL vs the share of MLP neurons active per token.

Usage: python benchmarks/moe_curve.py [--cache-dir DIR] [--per-group N] [--ks 2,4,8] [--constructions old,new,…]
       [--saved NAME=FOLDER …] [--json PATH]

For each construction — ``old`` (16 experts of 96 neurons, no shared expert, no refit: the first built-in's
partition), ``new`` (a 512-neuron shared expert and 64 experts of 16, exact slices), ``new+refit`` (the same with the
down-projection refit), ``fine`` and ``fine+refit`` (a 640-neuron shared expert and 224 experts of 4 neurons), and
``built-in`` (whatever :class:`MoefySettings` defaults to, i.e. ``smollm2-135m-moe``) — the MoE is assembled in memory for each k and scored
on held-out HexaInst responses (teacher-forced NLL, nats per response token, pooled over the first N rows of every
category and source; the same formatting as profiling), twice:

- ``router``: the model as built (GraniteMoE(Shared) forward, routing by its fitted router);
- ``oracle``: each layer's router replaced by one that picks the k experts with the largest true output norm
  ||down_e h_e(x)|| — what the partition allows at best, so router − oracle is what the router loses and
  oracle − dense what the partition loses.

Active share = (shared neurons + k × expert width) / MLP width. The refit is fitted for the construction's own k; at other
k it is applied as fitted. Calibration text: ``sparcom-sft`` (never HexaInst); every layer is split in order on the
MoE's own inputs, for the old partition too.

``--saved NAME=FOLDER`` scores a MoE folder as saved (e.g. the cached built-in) without building anything — the cheap
way to put a built model on the curve; ``--ks`` re-targets it (:func:`sparcom.zoo.moe_assembly.retarget`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moe_quality import subset  # a sibling script, not a package


class OracleRouter(nn.Module):
    """Routes each token to the k experts whose true output (down_e h_e(x)) has the largest norm; weight 1/k."""

    def __init__(self, experts: nn.Module, top_k: int):
        super().__init__()
        self.experts, self.top_k = experts, top_k

    def forward(self, hidden: torch.Tensor):
        gate_up = torch.einsum("th,ewh->tew", hidden, self.experts.gate_up_proj)
        gate, up = gate_up.chunk(2, dim=-1)
        h = self.experts.act_fn(gate) * up  # [T, E, I_e]
        norms = torch.einsum("tew,ehw->teh", h, self.experts.down_proj).norm(dim=-1)  # [T, E]
        index = norms.topk(self.top_k, dim=1).indices
        return norms, torch.full(index.shape, 1.0 / self.top_k, dtype=hidden.dtype), index


def with_oracle(moe: nn.Module) -> nn.Module:
    import copy

    oracle = copy.deepcopy(moe)
    for layer in oracle.model.layers:
        layer.block_sparse_moe.router = OracleRouter(layer.block_sparse_moe.experts, oracle.config.num_experts_per_tok)
    return oracle.eval()


def scorer(tokenizer, rows, batch_size: int):
    from sparcom.causal.nll import encode_scored
    from sparcom.causal.scoring import ScoringPlan
    from sparcom.data.batching import length_batches
    from sparcom.data.formatting import pad_token_id, resolve_template

    examples = encode_scored(rows, tokenizer, resolve_template(tokenizer, "auto"))
    plan = ScoringPlan.build(examples, length_batches([len(e) for e in examples], batch_size), pad_token_id(tokenizer))

    def score(model) -> float:
        with torch.no_grad():
            sums = plan.run(model, None)
        return float(sums.sum() / plan.counts.sum())
    return score, int(plan.counts.sum())


def point(name: str, k: int, experts: int, shared: int, width: int, model: nn.Module, score, oracle: bool) -> dict:
    """One curve point: the NLL of ``model`` with its router (and with the oracle router)."""
    result = {"construction": name, "k": k, "experts": experts, "shared": shared,
              "active_share": (shared + k * ((width - shared) // experts)) / width, "router": score(model)}
    if oracle:
        result["oracle"] = score(with_oracle(model))
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def built_points(name: str, dense, tokenizer, score, ks, oracle: bool) -> list[dict]:
    """Build construction ``name`` in memory (the builder's own code) and score it at every k of its sweep."""
    from sparcom.data.tuning_data import build_tuning_rows
    from sparcom.zoo.moe_assembly import assemble
    from sparcom.zoo.moefy import MoefySettings, calibration_examples, sequential_splits

    built = MoefySettings()
    coarse = MoefySettings(num_experts=64, top_k=16, shared_neurons=512)
    fine = MoefySettings(num_experts=224, top_k=32, shared_neurons=640)
    constructions = {"old": MoefySettings(num_experts=16, top_k=4, shared_neurons=0, refit=0),
                     "new": dataclasses.replace(coarse, refit=0), "new+refit": coarse,
                     "fine": dataclasses.replace(fine, refit=0), "fine+refit": fine, "built-in": built}
    sweeps = {"old": (2, 4, 8, 12), "new": (4, 8, 16, 32), "new+refit": (16,), "fine": (16, 32, 64),
              "fine+refit": (32,), "built-in": (built.top_k,)}
    settings = constructions[name]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    started = time.perf_counter()
    examples = calibration_examples(build_tuning_rows(), tokenizer, settings.calibration_tokens)
    splits = sequential_splits(dense, examples, settings, pad)
    build = time.perf_counter() - started
    width = dense.config.intermediate_size
    return [dict(point(name, k, settings.num_experts, settings.shared_neurons, width, assemble(dense, splits, k),
                       score, oracle), build_seconds=build) for k in (ks or sweeps[name])]


def saved_points(spec: str, width: int, score, ks, oracle: bool) -> list[dict]:
    """Score a saved MoE folder (``NAME=FOLDER``) at its own k and, re-targeted, at every k of ``ks``."""
    from transformers import AutoModelForCausalLM

    from sparcom.zoo.moe_assembly import retarget

    name, folder = spec.split("=", 1)
    moe = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    config = moe.config
    shared = int(getattr(config, "shared_intermediate_size", 0) or 0)
    own = int(config.num_experts_per_tok)
    return [point(name, k, int(config.num_local_experts), shared, width, moe if k == own else retarget(moe, k),
                  score, oracle) for k in (ks or (own,))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--per-group", type=int, default=2, help="HexaInst rows per category and source")
    parser.add_argument("--ks", default="", help="k values for every construction (default: a sweep each)")
    parser.add_argument("--constructions", default="old,new,new+refit,fine,fine+refit", help="'' for none")
    parser.add_argument("--saved", action="append", default=[], metavar="NAME=FOLDER",
                        help="also score a saved MoE folder (at --ks, re-targeted, or its own k); repeatable")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from sparcom.data.hexainst import load_hexainst
    from sparcom.zoo.catalog import resolve
    from sparcom.zoo.derived import load_dense_folder

    dense, tokenizer = load_dense_folder(resolve("smollm2-135m-instruct", args.cache_dir))
    score, tokens = scorer(tokenizer, subset(load_hexainst(), args.per_group), args.batch_size)
    width = dense.config.intermediate_size
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{tokens} scored tokens; load {load}; threads {torch.get_num_threads()}", file=sys.stderr, flush=True)
    results = {"dense": score(dense), "points": [], "load_before": load, "scored_tokens": tokens}
    print(f"dense NLL {results['dense']:.4f}", file=sys.stderr, flush=True)
    ks = tuple(int(k) for k in args.ks.split(",")) if args.ks else ()
    for spec in args.saved:
        results["points"] += saved_points(spec, width, score, ks, not args.no_oracle)
    for name in filter(None, args.constructions.split(",")):
        results["points"] += built_points(name, dense, tokenizer, score, ks, not args.no_oracle)
    results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    dense_nll = results["dense"]
    print("| construction | shared | experts × width | k | active share | NLL (router) | Δ% | NLL (oracle) | Δ% |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in results["points"]:
        ew = (width - p["shared"]) // p["experts"]
        oracle = (f"{p['oracle']:.3f} | {100 * (p['oracle'] / dense_nll - 1):+.1f}" if "oracle" in p else "– | –")
        print(f"| {p['construction']} | {p['shared']} | {p['experts']} × {ew} | {p['k']} | {p['active_share']:.3f} | "
              f"{p['router']:.3f} | {100 * (p['router'] / dense_nll - 1):+.1f} | {oracle} |")
    print(f"\ndense {dense_nll:.4f} nats/token on {tokens} tokens; load {results['load_before']} → "
          f"{results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
