"""Per-layer comparison of MoE partitions and router targets at a fixed active share (held-out HexaInst MLP inputs).

Usage: python benchmarks/moe_partitions.py [--cache-dir DIR] [--layers 3,15,27]
       [--configs 512:64:16,640:224:32] [--targets]

Cheaper than ``moe_curve.py`` (no end-to-end NLL): the dense SmolLM2 runs once on the calibration rows (``sparcom-sft``,
8,192 tokens, as the builder takes them) and once on held-out HexaInst rows (the first of every category and source);
for each configuration ``shared:experts:k`` a layer is split by the builder's own :func:`split_layer` on the dense
calibration inputs (not in order on the MoE's own inputs as the builder does), and the relative error
Σ||routed − dense||² / Σ||dense||² of the layer's MLP output is measured on the held-out inputs three ways: the fitted
router with exact slices (``router``), with the down-projection refit (``refit``), and an oracle router picking the k
experts of largest true output norm with exact slices (``oracle``).

``--targets``: for the first configuration only, routers fitted by the same ridge regression to other targets than
each expert's output norm — the norm centred per token, the norm's share of the token's total, the oracle's top-k
choice as a 0/1 indicator (distilling the oracle), log norm, squared norm — with two ridge penalties.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moe_quality import subset  # a sibling script, not a package


def layer_errors(mlp, x_cal, held, x_test, settings, seed: int) -> dict[str, float]:
    from sparcom.zoo.moe_recovery import relative_error
    from sparcom.zoo.moe_split import expert_norms, neuron_outputs
    from sparcom.zoo.moefy import routed_output, split_layer

    split = split_layer(mlp, x_cal, held, settings, seed)
    h, _ = neuron_outputs(mlp, x_test)
    target = h @ mlp.down_proj.weight.T
    k = settings.top_k
    errors = {"router": relative_error(routed_output(mlp, x_test, dataclasses.replace(split, down=None), k), target),
              "refit": relative_error(routed_output(mlp, x_test, split, k), target)}
    chosen = torch.from_numpy(split.members)[expert_norms(mlp, h, split.members).topk(k, 1).indices]
    mask = torch.zeros_like(h, dtype=torch.bool).scatter_(1, chosen.reshape(len(x_test), -1), True)
    mask[:, split.shared] = True
    errors["oracle"] = relative_error((h * mask) @ mlp.down_proj.weight.T, target)
    return errors


def target_errors(mlp, x_cal, held, x_test, settings, seed: int) -> dict[str, float]:
    from sparcom.zoo.moe_recovery import relative_error
    from sparcom.zoo.moe_split import expert_norms, fit_router, neuron_outputs
    from sparcom.zoo.moefy import routed_output, split_layer

    split = split_layer(mlp, x_cal, held, dataclasses.replace(settings, refit=0), seed)
    norms = expert_norms(mlp, neuron_outputs(mlp, x_cal)[0], split.members)
    k = settings.top_k
    targets = {"norm": norms, "centred": norms - norms.mean(1, keepdim=True), "share": norms / norms.sum(1, keepdim=True),
               "oracle top-k": torch.zeros_like(norms).scatter_(1, norms.topk(k, 1).indices, 1.0),
               "log": norms.clamp_min(1e-6).log(), "squared": norms**2}
    h, _ = neuron_outputs(mlp, x_test)
    dense = h @ mlp.down_proj.weight.T
    errors = {}
    for name, target in targets.items():
        for ridge in (1e-3, 1e-2):
            router = fit_router(x_cal, target, ridge).astype(np.float32)
            routed = routed_output(mlp, x_test, dataclasses.replace(split, router=router), k)
            errors[f"{name} λ={ridge:g}"] = relative_error(routed, dense)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--layers", default="3,15,27")
    parser.add_argument("--configs", default="512:64:16,512:128:32,512:256:64,640:112:16,640:224:32,384:144:48,"
                                             "256:320:128")
    parser.add_argument("--targets", action="store_true")
    args = parser.parse_args()
    from sparcom.data.hexainst import load_hexainst
    from sparcom.data.tuning_data import build_tuning_rows
    from sparcom.zoo.catalog import resolve
    from sparcom.zoo.derived import load_dense_folder
    from sparcom.zoo.moefy import HELD_OUT_EVERY, MoefySettings, calibration_examples, mlp_blocks, mlp_inputs

    dense, tokenizer = load_dense_folder(resolve("smollm2-135m-instruct", args.cache_dir))
    calibration = calibration_examples(build_tuning_rows(), tokenizer, MoefySettings().calibration_tokens)
    test = calibration_examples(subset(load_hexainst(), 1), tokenizer, 10**6)
    held = torch.cat([torch.full((len(e),), i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1)
                      for i, e in enumerate(calibration)])
    layers = [int(j) for j in args.layers.split(",")]
    x_cal, x_test = mlp_inputs(dense, calibration), mlp_inputs(dense, test)
    blocks = mlp_blocks(dense)
    width = dense.config.intermediate_size
    print("| shared | experts × width | k | active share | " + " | ".join(
        f"L{j} router / refit / oracle" for j in layers) + " |")
    print("|---:|---:|---:|---:|" + "---|" * len(layers))
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    for shared, experts, k in configs:
        settings = MoefySettings(num_experts=experts, top_k=k, shared_neurons=shared)
        cells = []
        for j in layers:
            e = layer_errors(blocks[j], x_cal[j], held, x_test[j], settings, settings.seed + j)
            cells.append(f"{e['router']:.3f} / {e['refit']:.3f} / {e['oracle']:.3f}")
        print(f"| {shared} | {experts} × {(width - shared) // experts} | {k} | {(shared + k * (width - shared) // experts) / width:.2f} | "
              + " | ".join(cells) + " |", flush=True)
    if args.targets:
        shared, experts, k = configs[0]
        settings = MoefySettings(num_experts=experts, top_k=k, shared_neurons=shared)
        for j in layers:
            errors = target_errors(blocks[j], x_cal[j], held, x_test[j], settings, settings.seed + j)
            print(f"layer {j}: " + ", ".join(f"{name} {value:.4f}" for name, value in errors.items()), flush=True)


if __name__ == "__main__":
    main()
