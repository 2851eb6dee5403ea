"""An independent reference for the counts: store full activations with plain hooks, then count.

It shares nothing with the engine but the row format: it renders prompts itself, labels tokens from a
character-level role map, runs the whole model on one example at a time (no padding, LM head included),
keeps every activation tensor, and counts (and sums: Σ A, Σ |A| in float64) afterwards with numpy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ACTIVATION_PATHS = {
    "gpt2": ("transformer.h", "mlp.act"),
    "gpt_neox": ("gpt_neox.layers", "mlp.act"),
    "opt": ("model.decoder.layers", "activation_fn"),
    "phi3": ("model.layers", "mlp.activation_fn"),
}


def _follow(root, dotted):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def activation_modules(model):
    layers_path, act_path = ACTIVATION_PATHS.get(model.config.model_type, ("model.layers", "mlp.act_fn"))
    return [_follow(layer, act_path) for layer in _follow(model, layers_path)]


def example_text(row, tokenizer, chat: bool, system_prompt, with_response: bool):
    """Text of one example and a per-character role map: 'I' the instruction's own text, 'U' the rest of the user
    text (the input), 'P' other prompt, 'R' response, 'O' other."""
    user = row["instruction"].strip() + ("\n\n" + row["input"].strip() if row["input"].strip() else "")
    if chat:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        sep = ""
    else:
        prompt = (system_prompt.strip() + "\n\n" + user) if system_prompt else user
        sep = "\n\n"
    roles = ["P"] * len(prompt)
    at = prompt.rfind(user)
    for k in range(at, at + len(user)):
        roles[k] = "I" if k < at + len(row["instruction"].strip()) else "U"
    text = prompt
    if with_response:
        text = prompt + sep + row["output"]
        roles += ["O"] * len(sep) + ["R"] * len(row["output"])
    return text, roles, len(prompt)


def token_counted(offsets, roles, prompt_len, scope):
    counted = []
    for start, end in offsets:
        chars = set(roles[start:end])
        if scope == "instruction":
            counted.append("U" in chars or "I" in chars)
        elif scope == "instruction-only":
            counted.append("I" in chars)
        elif scope == "response":
            counted.append("R" in chars)
        elif scope == "prompt":
            counted.append(start < prompt_len or "U" in chars or "I" in chars or (start == end and start <= prompt_len))
        else:
            counted.append(True)
    return counted


def reference_counts(model, tokenizer, data: Path, scope: str, chat: bool, system_prompt=None, sums=None):
    """{key: np.int64 array} with the DESIGN §3 keys neuron/{cat}/{layer}, tokens/{cat}, instructions/{cat}.

    ``sums`` (a dict) receives sums/neuron/{cat}/{layer} and abs_sums/neuron/{cat}/{layer}: Σ A and Σ |A| over the
    counted tokens, float64 (summed in row order, one token at a time after the float64 conversion)."""
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    stored: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda mod, a, out: stored.append(out.detach().clone()))
               for m in activation_modules(model)]
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((), dtype=np.int64))
    try:
        for row in rows:
            text, roles, prompt_len = example_text(row, tokenizer, chat, system_prompt,
                                                   with_response=scope in ("response", "all"))
            enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
            mask = np.array(token_counted(enc["offset_mapping"], roles, prompt_len, scope))
            stored.clear()
            with torch.no_grad():
                model(input_ids=torch.tensor([enc["input_ids"]]))
            cat = row["category"]
            counts[f"tokens/{cat}"] = counts[f"tokens/{cat}"] + int(mask.sum())
            counts[f"instructions/{cat}"] = counts[f"instructions/{cat}"] + 1
            for layer, act in enumerate(stored):
                # [T, I] (OPT flattens the batch); float32 holds every bfloat16 value exactly, so the signs stay
                full = act.reshape(-1, act.shape[-1]).float().numpy()
                active = (full[mask] > 0).sum(axis=0).astype(np.int64)
                key = f"neuron/{cat}/{layer}"
                counts[key] = counts[key] + active if key in counts else active
                if sums is not None:
                    values = full[mask].astype(np.float64)
                    for name, part in ((f"sums/{key}", values), (f"abs_sums/{key}", np.abs(values))):
                        sums[name] = sums.get(name, np.zeros(values.shape[1])) + part.sum(axis=0)
    finally:
        for h in handles:
            h.remove()
    return dict(counts)
