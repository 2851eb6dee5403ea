"""Synthetic profile runs for the analysis tests (no model is loaded): counts written straight to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sparcom.artifacts.run import FORMAT_VERSION, ProfileRun
from sparcom.data.schema import CATEGORIES


def manifest(categories=CATEGORIES, **overrides) -> dict:
    data = {
        "format_version": FORMAT_VERSION, "complete": True, "categories": list(categories),
        "model": {"name_or_path": "synthetic/tiny", "architecture": "TinyForCausalLM", "fingerprint": "abc123",
                  "sizes": {"layers": 3, "mlp_neurons": [40, 40, 40]}},
        "tokenizer_hash": "tok1", "scope": "instruction", "template": "chat", "template_policy": "auto",
        "system_prompt": None, "dtype": "float32", "bootstrap": {"replicates": 0, "seed": 0},
    }
    for key, value in overrides.items():
        target = data
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return data


def _draw(counts, rng, lengths, weights, shape, key, bias_index) -> None:
    """Per-instruction active counts (so replicate counters agree with the totals); three favourites per key."""
    flat = rng.uniform(0.05, 0.6, size=int(np.prod(shape)))
    flat[(bias_index * 3 + np.arange(3)) % flat.size] = 0.95
    per_instruction = rng.binomial(lengths[:, None], flat[None, :])
    counts[key] = torch.tensor(per_instruction.sum(0).reshape(shape), dtype=torch.int64)
    if weights is not None:
        boot = weights @ per_instruction
        counts["bootstrap/" + key] = torch.tensor(boot.reshape((len(weights), *shape)), dtype=torch.int64)


def synthetic_counts(seed: int = 0, categories=CATEGORIES, layers: int = 3, width: int = 40, moe: bool = False,
                     experts: int = 4, expert_width: int = 6, replicates: int = 0, instructions: int = 10,
                     ) -> dict[str, torch.Tensor]:
    """Random but consistent counts; each category has its own favourite neurons so sets differ."""
    rng = np.random.default_rng(seed)
    counts: dict[str, torch.Tensor] = {}
    for c_index, category in enumerate(categories):
        lengths = rng.integers(5, 30, size=instructions)
        tokens = int(lengths.sum())
        counts[f"tokens/{category}"] = torch.tensor(tokens, dtype=torch.int64)
        counts[f"instructions/{category}"] = torch.tensor(instructions, dtype=torch.int64)
        weights = rng.poisson(1.0, size=(replicates, instructions)) if replicates else None
        if replicates:
            counts[f"bootstrap/tokens/{category}"] = torch.tensor(weights @ lengths, dtype=torch.int64)
            counts[f"bootstrap/instructions/{category}"] = torch.tensor(weights.sum(1), dtype=torch.int64)

        for layer in range(layers):
            _draw(counts, rng, lengths, weights, (width,), f"neuron/{category}/{layer}", c_index + layer)
            if moe:
                _draw(counts, rng, lengths, weights, (experts,), f"expert/{category}/{layer}", c_index)
                _draw(counts, rng, lengths, weights, (experts, expert_width), f"expert_neuron/{category}/{layer}",
                      c_index + layer)
    return counts


def write_run(path: Path, counts: dict[str, torch.Tensor], manifest_data: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in counts.items()}, str(path / "counts.safetensors"))
    data = manifest_data or manifest([k.split("/")[1] for k in counts if k.startswith("tokens/")])
    (path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def make_run(counts: dict[str, torch.Tensor], categories=None) -> ProfileRun:
    cats = categories or [k.split("/")[1] for k in counts if k.startswith("tokens/")]
    return ProfileRun(Path("/synthetic/run"), counts, manifest(cats))
