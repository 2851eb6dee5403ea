"""An independent reference for Mixture-of-Experts counts (DESIGN §1, §3).

It shares nothing with the engine but the row format and the dense oracle's prompt rendering: it runs the whole
model (LM head included) on one example at a time, without padding. Plain forward hooks store, at every MoE layer,
the router's input hidden states and its output — the expert indices it hands to the experts — and afterwards
each expert's gate is re-run on all tokens routed to it the way the family's eager loop computes it (the whole
gate_up projection, then the family's gating rule); the counted tokens with A > 0 are counted. Dense layers and
shared experts are counted from their stored activation tensors, as in tests/oracle.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from oracle import example_text, token_counted
from torch.nn import functional as F

ROUTERS = {"granitemoe": "block_sparse_moe.router", "granitemoeshared": "block_sparse_moe.router",
           "phimoe": "mlp.router", "gpt_oss": "mlp.router"}
EXPERTS = {"granitemoe": "block_sparse_moe.experts", "granitemoeshared": "block_sparse_moe.experts"}
SHARED = {"qwen2_moe": "mlp.shared_expert.act_fn", "qwen3_next": "mlp.shared_expert.act_fn",
          "granitemoeshared": "shared_mlp.activation", "hunyuan_v1_moe": "mlp.shared_mlp.act_fn",
          **{t: "mlp.shared_experts.act_fn" for t in ("deepseek_v2", "deepseek_v3", "glm4_moe", "dots1",
                                                      "ernie4_5_moe", "exaone_moe")}}


def _find(root, dotted):
    if dotted is None:
        return None
    for part in dotted.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def expert_gate_activation(model_type: str, experts, rows: torch.Tensor, expert: int) -> torch.Tensor:
    """A of expert ``expert`` on ``rows``, as the family's eager experts loop computes it."""
    if model_type == "gpt_oss":
        gate_up = rows @ experts.gate_up_proj[expert] + experts.gate_up_proj_bias[expert]
        gate = gate_up[:, ::2].clamp(min=None, max=experts.limit)
        return gate * torch.sigmoid(gate * experts.alpha)
    gate, _ = F.linear(rows, experts.gate_up_proj[expert]).chunk(2, dim=-1)
    return experts.act_fn(gate)


def moe_layers(model) -> list[int]:
    model_type = model.config.model_type
    return [j for j, layer in enumerate(model.model.layers)
            if _find(layer, EXPERTS.get(model_type, "mlp.experts")) is not None]


def _rows(data: Path):
    return [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]


def _encode(row, tokenizer, scope, chat, system_prompt):
    text, roles, prompt_len = example_text(row, tokenizer, chat, system_prompt,
                                           with_response=scope in ("response", "all"))
    enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
    return enc["input_ids"], np.array(token_counted(enc["offset_mapping"], roles, prompt_len, scope))


def _add(counts, key, value):
    counts[key] = counts[key] + value if key in counts else value


def _add_sums(sums, key, values):
    """Σ A and Σ |A| (float64) of ``values`` [n, ...] into ``sums`` (when given)."""
    if sums is None:
        return
    values = np.asarray(values, dtype=np.float64)
    for name, part in ((f"sums/{key}", values), (f"abs_sums/{key}", np.abs(values))):
        sums[name] = sums.get(name, 0.0) + part.sum(axis=0)


def reference_moe_counts(model, tokenizer, data: Path, scope: str, chat: bool = True, system_prompt=None,
                         sums=None):
    """{key: np.int64 array}: tokens, instructions, neuron, shared_neuron, expert and expert_neuron counts.

    ``sums`` (a dict) receives the float64 sums of A and |A| over the same tokens (expert neurons: counted tokens
    routed to the expert), keyed sums/{kind}/{cat}/{layer} and abs_sums/{kind}/{cat}/{layer}."""
    model_type = model.config.model_type
    stored: dict[tuple[str, int], object] = {}
    handles = []
    routed_layers = set(moe_layers(model))
    for j, layer in enumerate(model.model.layers):
        if j in routed_layers:
            router = _find(layer, ROUTERS.get(model_type, "mlp.gate"))
            handles.append(router.register_forward_hook(
                lambda mod, args, out, j=j: stored.__setitem__(
                    ("router", j), (args[0].reshape(-1, args[0].shape[-1]).detach().clone(), out[-1].clone()))))
            shared = _find(layer, SHARED.get(model_type))
            if shared is not None:
                handles.append(shared.register_forward_hook(
                    lambda mod, args, out, j=j: stored.__setitem__(("shared", j), out.detach().clone())))
        else:
            handles.append(layer.mlp.act_fn.register_forward_hook(
                lambda mod, args, out, j=j: stored.__setitem__(("dense", j), out.detach().clone())))
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((), dtype=np.int64))
    try:
        for row in _rows(data):
            ids, mask = _encode(row, tokenizer, scope, chat, system_prompt)
            stored.clear()
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
            cat = row["category"]
            counts[f"tokens/{cat}"] = counts[f"tokens/{cat}"] + int(mask.sum())
            counts[f"instructions/{cat}"] = counts[f"instructions/{cat}"] + 1
            for (kind, j), value in stored.items():
                if kind in ("dense", "shared"):
                    full = value.reshape(-1, value.shape[-1]).numpy()
                    key = f"{'neuron' if kind == 'dense' else 'shared_neuron'}/{cat}/{j}"
                    _add(counts, key, (full[mask] > 0).sum(axis=0).astype(np.int64))
                    _add_sums(sums, key, full[mask].astype(np.float32))
                    continue
                x, index = value
                experts = _find(model.model.layers[j], EXPERTS.get(model_type, "mlp.experts"))
                num_experts = experts.gate_up_proj.shape[0]
                index = index.numpy()
                _add(counts, f"expert/{cat}/{j}",
                     np.bincount(index[mask].reshape(-1), minlength=num_experts).astype(np.int64))
                per_expert, values = [], []
                for e in range(num_experts):
                    routed = np.nonzero((index == e).any(axis=1))[0]  # every token routed to e, counted or not
                    with torch.no_grad():
                        activation = expert_gate_activation(model_type, experts, x[routed], e).float().numpy()
                    per_expert.append((activation[mask[routed]] > 0).sum(axis=0).astype(np.int64))
                    values.append(activation[mask[routed]])
                _add(counts, f"expert_neuron/{cat}/{j}", np.stack(per_expert))
                if sums is not None:
                    for e, rows in enumerate(values):
                        padded = np.zeros((rows.shape[0], num_experts, rows.shape[1]), dtype=np.float32)
                        padded[:, e] = rows
                        _add_sums(sums, f"expert_neuron/{cat}/{j}", padded)
    finally:
        for handle in handles:
            handle.remove()
    return dict(counts)


def router_logit_topk_counts(model, tokenizer, data: Path, scope: str, chat: bool = True) -> dict[str, np.ndarray]:
    """expert/{cat}/{layer} as a plain top-k of the logits from ``output_router_logits=True`` would give them."""
    layers = moe_layers(model)
    top_k = model.config.num_experts_per_tok
    counts: dict[str, np.ndarray] = {}
    for row in _rows(data):
        ids, mask = _encode(row, tokenizer, scope, chat, None)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_router_logits=True)
        assert len(out.router_logits) == len(layers)
        for j, logits in zip(layers, out.router_logits, strict=True):
            chosen = logits.reshape(len(ids), -1).topk(top_k, dim=-1).indices.numpy()
            _add(counts, f"expert/{row['category']}/{j}",
                 np.bincount(chosen[mask].reshape(-1), minlength=logits.shape[-1]).astype(np.int64))
    return counts
