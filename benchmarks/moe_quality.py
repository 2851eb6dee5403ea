"""Quality of the MoEfied SmolLM2 (``smollm2-135m-moe``) against the dense model it was made from (per-layer detail;
the quality curve over constructions and k is ``moe_curve.py``).

Usage: python benchmarks/moe_quality.py [--cache-dir DIR] [--per-group N] [--share-tokens T] [--json PATH]

Measured on HexaInst (never used to build the MoE; its calibration text is ``sparcom-sft``):

1. Teacher-forced NLL of the reference responses (nats per response token, pooled; :mod:`sparcom.causal.nll`,
   the same formatting as profiling) for the dense model and the MoE routing to k = 4, 8 and 16 of its 16 experts,
   on the first N rows of each category and source.
2. Per layer, on the dense model's own MLP inputs (so every layer is judged on the same hidden states): the share
   Σ_{chosen} ||y_e|| / Σ_e ||y_e|| of the experts' output norms that the router's top-k carries (random choice:
   k/16; "best": the k largest norms), the overlap of the router's top-4 with the best 4, and the relative error
   ||Σ_{chosen} y_e − y|| / ||y|| of the routed MLP output against the dense one (median over tokens); for
   reference, the same error when each token keeps its own k · 96 neurons of largest contribution |h_i| ||down_i||
   (no expert structure: what grouping the neurons into experts costs on top).
3. Why GraniteMoE: for the fitted router logits of a few layers, the experts chosen and the weights given by the
   GraniteMoE router and by the Mixtral router (softmax over all experts, top-k of the probabilities, renormalised)
   at several logit scales τ: how often the chosen set differs from the exact top-k, and max |k·w − 1|.

The MoE is built into ``--cache-dir`` when it is not there yet (its build time is then measured in this run);
the build's own timings are read from its manifest either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def subset(rows, per_group: int):
    """The first ``per_group`` rows of every (category, source) pair, in file order."""
    seen: dict[tuple[str, str], int] = {}
    chosen = []
    for row in rows:
        key = (row.category, row.source)
        if seen.get(key, 0) < per_group:
            seen[key] = seen.get(key, 0) + 1
            chosen.append(row)
    return chosen


def nll_table(models: dict, tokenizer, rows, batch_size: int) -> dict:
    from sparcom.causal.nll import category_means, encode_scored
    from sparcom.causal.scoring import example_nll
    from sparcom.data.batching import length_batches
    from sparcom.data.formatting import pad_token_id, resolve_template

    examples = encode_scored(rows, tokenizer, resolve_template(tokenizer, "auto"))
    plan = length_batches([len(e) for e in examples], batch_size)
    categories = sorted({e.category for e in examples}, key=[r.category for r in rows].index)
    table = {}
    for name, model in models.items():
        started = time.perf_counter()
        sums, counts = example_nll(model, examples, plan, pad_token_id(tokenizer))
        table[name] = {"nll": float(sums.sum() / counts.sum()), "tokens": int(counts.sum()),
                       "categories": {c: v["nll"] for c, v in category_means(examples, sums, counts, categories).items()},
                       "seconds": time.perf_counter() - started}
        print(f"  NLL {name}: {table[name]['nll']:.4f} ({table[name]['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return table


def layer_shares(dense, moe, split_record: dict, inputs: list[torch.Tensor]) -> list[dict]:
    from sparcom.models.sites import model_sites
    from sparcom.zoo.moe_split import expert_norms, neuron_outputs, routed_share, top_k_overlap
    from sparcom.zoo.moefy import mlp_blocks

    routers = {j: site.router for j, site in model_sites(moe).moe.items()}
    rows = []
    with torch.no_grad():
        for j, (x, mlp) in enumerate(zip(inputs, mlp_blocks(dense), strict=True)):
            members = np.array(split_record["layers"][j]["members"])
            h, _ = neuron_outputs(mlp, x)
            norms = expert_norms(mlp, h, members)
            logits = x @ routers[j].weight.T
            y = mlp.down_proj(h)
            parts = torch.stack([h[:, m] @ mlp.down_proj.weight[:, m].T for m in torch.from_numpy(members)], 1)
            record = {"layer": j, "tokens": int(x.shape[0]), "best_share_4": routed_share(norms, norms, 4),
                      "overlap_4": top_k_overlap(logits, norms, 4)}
            width = members.shape[1]
            contribution = h.abs() * mlp.down_proj.weight.norm(dim=0)
            for k in (4, 8):
                chosen = torch.zeros_like(norms, dtype=torch.bool).scatter_(1, logits.topk(k, dim=1).indices, True)
                routed = (parts * chosen[..., None]).sum(1)
                record[f"share_{k}"] = routed_share(logits, norms, k)
                record[f"relerr_{k}"] = float(((routed - y).norm(dim=1) / y.norm(dim=1)).median())
                # Reference point without expert structure: each token keeps its own k·I_e largest contributions.
                keep = torch.zeros_like(h).scatter_(1, contribution.topk(k * width, dim=1).indices, 1.0)
                record[f"neuron_bound_{k}"] = float(((mlp.down_proj(h * keep) - y).norm(dim=1) / y.norm(dim=1)).median())
            rows.append(record)
    return rows


def routing_choice(moe, split_record: dict, inputs: list[torch.Tensor], layers: list[int], k: int) -> list[dict]:
    """GraniteMoE vs Mixtral router at logit scales τ, with the fitted router (module docstring, 3)."""
    from transformers import GraniteMoeConfig, MixtralConfig
    from transformers.models.granitemoe.modeling_granitemoe import GraniteMoeTopKRouter
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    from sparcom.models.sites import model_sites

    experts = moe.config.num_local_experts
    hidden = moe.config.hidden_size
    results = []
    for j in layers:
        saved = model_sites(moe).moe[j].router.weight.detach()
        fitted = saved / split_record["layers"][j]["router_scale"]  # exact: the scale is a power of two
        x = inputs[j]
        exact = (x @ fitted.T).topk(k, dim=1).indices.sort(dim=1).values
        for log2_tau in (0, -8, -16, -24, -40):
            weight = fitted * 2.0**log2_tau
            for family, router in (
                ("granitemoe", GraniteMoeTopKRouter(GraniteMoeConfig(hidden_size=hidden, num_local_experts=experts,
                                                                     num_experts_per_tok=k))),
                ("mixtral", MixtralTopKRouter(MixtralConfig(hidden_size=hidden, num_local_experts=experts,
                                                            num_experts_per_tok=k))),
            ):
                with torch.no_grad():
                    router.weight.copy_(weight)
                    _, w, index = router(x)
                changed = float((index.sort(dim=1).values != exact).any(dim=1).double().mean())
                results.append({"layer": j, "log2_tau": log2_tau, "family": family, "changed_choice": changed,
                                "max_weight_error": float((w * k - 1).abs().max())})
    return results


def coactivation_choice(dense, tokenizer, held: list[torch.Tensor], layers: list[int], batch_size: int) -> list[dict]:
    """Experts from contribution magnitudes (default) vs from co-firing, on a few layers: the share of each held-out
    token's expert output norm carried by its best 4 experts, and by the fitted router's 4."""
    from sparcom.data.tuning_data import build_tuning_rows
    from sparcom.zoo.moe_split import expert_norms, neuron_outputs, routed_share
    from sparcom.zoo.moefy import MoefySettings, calibration_examples, mlp_blocks, mlp_inputs, split_layer

    settings = MoefySettings()
    examples = calibration_examples(build_tuning_rows(), tokenizer, settings.calibration_tokens)
    calibration = mlp_inputs(dense, examples, batch_size, tokenizer.pad_token_id or 0)
    results = []
    with torch.no_grad():
        for j in layers:
            mlp = mlp_blocks(dense)[j]
            h, _ = neuron_outputs(mlp, held[j])
            for coactivation in ("magnitude", "firing"):
                split = split_layer(mlp, calibration[j], torch.zeros(calibration[j].shape[0], dtype=torch.bool),
                                    MoefySettings(num_experts=16, top_k=4, shared_neurons=0, refit=0,
                                                  coactivation=coactivation), settings.seed + j)
                norms = expert_norms(mlp, h, split.members)
                results.append({"layer": j, "coactivation": coactivation, "best_share_4": routed_share(norms, norms, 4),
                                "router_share_4": routed_share(held[j] @ torch.from_numpy(split.router).T, norms, 4)})
    return results


def dense_equivalence(dense, moe_all, tokenizer, rows) -> tuple[float, float]:
    """Largest |Δlogit| / max|logit| on ``rows``: dense vs the MoE with every expert routed, and — for scale —
    dense vs itself, each row once alone and once right-padded beside a longer row (ordinary float32 noise)."""
    from sparcom.data.formatting import encode_row, resolve_template

    template = resolve_template(tokenizer, "auto")
    encoded = [encode_row(row, i, tokenizer, template, with_response=True).input_ids for i, row in enumerate(rows)]
    longest = max(encoded, key=len)
    worst, noise = 0.0, 0.0
    with torch.no_grad():
        for ids in encoded:
            alone = torch.tensor([ids])
            a, b = dense(alone).logits, moe_all(alone).logits
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
            pair = torch.full((2, len(longest)), tokenizer.pad_token_id or 0)
            pair[0, :len(ids)], pair[1] = alone[0], torch.tensor(longest)
            mask = (torch.arange(len(longest)) < torch.tensor([[len(ids)], [len(longest)]])).long()
            padded = dense(input_ids=pair, attention_mask=mask).logits[0, :len(ids)]
            noise = max(noise, float((a[0] - padded).abs().max() / a.abs().max()))
    return worst, noise


def markdown(result: dict) -> str:
    lines = ["| model | mean NLL (nats/token) | Δ vs dense | " + " | ".join(result["categories"]) + " |",
             "|---|---:|---:|" + "---:|" * len(result["categories"])]
    dense = result["nll"]["dense"]["nll"]
    for name, row in result["nll"].items():
        cats = " | ".join(f"{row['categories'][c]:.3f}" for c in result["categories"])
        lines.append(f"| {name} | {row['nll']:.4f} | {row['nll'] - dense:+.4f} | {cats} |")
    keys = ("share_4", "best_share_4", "share_8", "overlap_4", "relerr_4", "relerr_8", "neuron_bound_4",
            "neuron_bound_8")
    lines += ["", "| layer | share top-4 (router) | share top-4 (best) | share top-8 (router) | overlap top-4 | "
                  "rel. error k=4 | rel. error k=8 | top-384 neurons | top-768 neurons |",
              "|---:|" + "---:|" * len(keys)]
    for r in result["layers"]:
        lines.append(f"| {r['layer']} | " + " | ".join(f"{r[key]:.3f}" for key in keys) + " |")
    mean = {key: statistics.fmean(r[key] for r in result["layers"]) for key in keys}
    lines.append("| mean | " + " | ".join(f"{mean[key]:.3f}" for key in keys) + " |")
    lines += ["", "| layer | log2 τ | router | chosen set ≠ exact top-4 | max abs(4·w − 1) |", "|---:|---:|---|---:|---:|"]
    for r in result["routing_choice"]:
        lines.append(f"| {r['layer']} | {r['log2_tau']} | {r['family']} | {r['changed_choice']:.4f} | "
                     f"{r['max_weight_error']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="sparcom model cache (default: a fresh one)")
    parser.add_argument("--hexainst", type=Path, default=None, help="HexaInst JSONL (default: built in memory)")
    parser.add_argument("--per-group", type=int, default=8, help="rows per category and source for the NLL")
    parser.add_argument("--share-tokens", type=int, default=8192, help="HexaInst tokens for the per-layer shares")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--coactivation-layers", default="", help="e.g. 3,15,25: also compare co-firing experts")
    parser.add_argument("--only-coactivation", action="store_true", help="skip everything else")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparcom.data.hexainst import load_hexainst
    from sparcom.zoo.builtin import MANIFEST
    from sparcom.zoo.catalog import resolve
    from sparcom.zoo.derived import SPLIT_FILE
    from sparcom.zoo.moe_assembly import retarget
    from sparcom.zoo.moefy import calibration_examples, mlp_inputs

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sparcom-moe-bench-"))
    dense_path = resolve("smollm2-135m-instruct", cache)
    started = time.perf_counter()
    moe_path = resolve("smollm2-135m-moe", cache)
    resolve_seconds = time.perf_counter() - started
    manifest = json.loads((moe_path / MANIFEST).read_text())
    split_record = json.loads((moe_path / SPLIT_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(dense_path)
    dense = AutoModelForCausalLM.from_pretrained(dense_path, dtype=torch.float32).eval()
    moe = AutoModelForCausalLM.from_pretrained(moe_path, dtype=torch.float32).eval()
    experts = moe.config.num_local_experts
    models = {"dense": dense, f"MoE k={moe.config.num_experts_per_tok}/{experts}": moe}
    for k in (8, experts):
        models[f"MoE k={k}/{experts}"] = retarget(moe, k)

    hexainst = load_hexainst(args.hexainst)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if args.only_coactivation:
        inputs = mlp_inputs(dense, calibration_examples(hexainst, tokenizer, args.share_tokens), args.batch_size, pad)
        layers = [int(j) for j in args.coactivation_layers.split(",") if j]
        for r in coactivation_choice(dense, tokenizer, inputs, layers, args.batch_size):
            print(f"| {r['layer']} | {r['coactivation']} | {r['best_share_4']:.3f} | {r['router_share_4']:.3f} |")
        return
    rows = subset(hexainst, args.per_group)
    print(f"NLL on {len(rows)} HexaInst rows; load {Path('/proc/loadavg').read_text().split()[:3]}", file=sys.stderr)
    nll = nll_table(models, tokenizer, rows, args.batch_size)
    equivalence, noise = dense_equivalence(dense, models[f"MoE k={experts}/{experts}"], tokenizer, rows[:12])
    held = calibration_examples(hexainst, tokenizer, args.share_tokens)
    inputs = mlp_inputs(dense, held, args.batch_size, pad)
    layers = layer_shares(dense, moe, split_record, inputs)
    choice = routing_choice(moe, split_record, inputs, [0, len(inputs) // 2, len(inputs) - 1], 4)
    result = {
        "rows": len(rows), "categories": list(nll["dense"]["categories"]), "nll": nll,
        "all_experts_max_relative_logit_diff": equivalence, "dense_padding_max_relative_logit_diff": noise,
        "share_tokens": int(inputs[0].shape[0]),
        "layers": layers, "routing_choice": choice, "build_seconds": manifest["build_seconds"],
        "build_threads": manifest["threads"], "resolve_seconds_this_run": resolve_seconds,
        "checks": manifest["checks"], "load_after": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(markdown(result))
    print(f"\nk = E vs dense: max |Δlogit| / max|logit| = {equivalence:.3g} on {min(12, len(rows))} rows (dense alone "
          f"vs padded in a batch: {noise:.3g}); "
          f"build: {manifest['build_seconds']} ({manifest['threads']} threads); resolve this run "
          f"{resolve_seconds:.0f} s; load after {result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
