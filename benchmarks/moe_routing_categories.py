"""Do instruction categories route differently in a MoE, beyond sampling noise? A permutation test over instructions.

Usage: python benchmarks/moe_routing_categories.py RUN [--permutations B] [--seed S]

RUN is a profile run of a MoE made with ``--group-by instruction``. Per category c and layer j, the routing
distribution is r_c,j(e) = (routed-token count of expert e over c's instructions) / Σ_e (same) — pooled over tokens,
as the paper pools. The statistic is the mean over layers and category pairs of the Jensen–Shannon divergence (natural
log) between r_c,j and r_c',j. Its null: category labels permuted over instructions (each category keeps its number
of instructions), recomputed B times; p = (1 + #{null ≥ observed}) / (1 + B). Per pair the same, with the pair's
own statistic. Sampling noise alone makes the observed value land inside the null.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS divergence along the last axis (natural log); 0·log 0 = 0."""
    m = (p + q) / 2

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1)), 0.0).sum(-1)
    return (kl(p, m) + kl(q, m)) / 2


def category_distributions(group_counts: np.ndarray, labels: np.ndarray, categories: list[str]) -> np.ndarray:
    """[C, L, E] routing distributions pooled over each category's instructions from [G, L, E] counts."""
    pooled = np.stack([group_counts[labels == c].sum(0) for c in range(len(categories))]).astype(np.float64)
    return pooled / pooled.sum(-1, keepdims=True)


def statistics(dist: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean JS over layers and pairs, [C, C] per-pair mean JS over layers)."""
    c = dist.shape[0]
    pair = np.zeros((c, c))
    for a in range(c):
        for b in range(a + 1, c):
            pair[a, b] = pair[b, a] = float(js_divergence(dist[a], dist[b]).mean())
    return float(pair[np.triu_indices(c, 1)].mean()), pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from safetensors.numpy import load_file

    manifest = json.loads((args.run / "manifest.json").read_text())
    counts = load_file(str(args.run / "counts.safetensors"))
    groups = manifest["groups"]
    categories = sorted(set(groups["categories"]), key=groups["categories"].index)
    labels = np.array([categories.index(c) for c in groups["categories"]])
    layers = sorted(int(k.rsplit("/", 1)[1]) for k in counts if k.startswith("groups/expert/"))
    group_counts = np.stack([counts[f"groups/expert/{j}"] for j in layers], 1).astype(np.int64)  # [G, L, E]
    observed, pair = statistics(category_distributions(group_counts, labels, categories))
    rng = np.random.default_rng(args.seed)
    null, pair_null = [], []
    for _ in range(args.permutations):
        value, p = statistics(category_distributions(group_counts, rng.permutation(labels), categories))
        null.append(value)
        pair_null.append(p)
    null, pair_null = np.array(null), np.array(pair_null)
    result = {"instructions": len(labels), "layers": len(layers), "observed_mean_js": observed,
              "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)),
              "p_value": float((1 + (null >= observed).sum()) / (1 + len(null))), "permutations": len(null),
              "pairs": {f"{categories[a]}-{categories[b]}": {
                  "observed": pair[a, b], "null_mean": float(pair_null[:, a, b].mean()),
                  "p_value": float((1 + (pair_null[:, a, b] >= pair[a, b]).sum()) / (1 + len(null)))}
                  for a in range(len(categories)) for b in range(a + 1, len(categories))}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
