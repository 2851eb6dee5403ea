"""Tiny models, masks and selection directories for the causal-check tests (built offline from configs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import build_scaled, tiny_tokenizer
from transformers import AutoConfig

from sparcom.artifacts.selection import write_selection
from sparcom.models.loading import tokenizer_fingerprint


def tiny_moe(model_type: str, seed: int = 0, implementation: str | None = None) -> torch.nn.Module:
    """A tiny random Mixtral (2 MoE layers) or Qwen2-MoE (MoE, dense, MoE; shared expert), 8 experts, top-2."""
    common = dict(vocab_size=len(tiny_tokenizer()), max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=False, hidden_size=32, num_attention_heads=4,
                  num_key_value_heads=2, num_experts_per_tok=2)
    configs = {
        "mixtral": dict(common, num_hidden_layers=2, intermediate_size=24, num_local_experts=8),
        "qwen2_moe": dict(common, num_hidden_layers=3, intermediate_size=40, moe_intermediate_size=16,
                          shared_expert_intermediate_size=24, num_experts=8, mlp_only_layers=[1]),
        "phimoe": dict(common, num_hidden_layers=2, intermediate_size=16, num_local_experts=8),
    }
    return build_scaled(AutoConfig.for_model(model_type, **configs[model_type]), seed, implementation)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
        assert after[name].view(torch.uint8).equal(tensor.view(torch.uint8)), name  # bit for bit (also -0.0, NaN)


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def shadowed_forwards(model: torch.nn.Module) -> int:
    return sum("forward" in m.__dict__ for m in model.modules())


def random_masks(sites, categories, seed: int = 0, fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Masks keyed like the counts for every kind the model has, about ``fraction`` selected, at least 1 each."""
    rng = np.random.default_rng(seed)
    masks = {}
    for category in categories:
        for kind, layers in (("neuron", sites.dense), ("shared_neuron", sites.shared), ("expert", sites.moe),
                             ("expert_neuron", sites.moe)):
            for layer in layers:
                shape = sites.shape(kind, layer)
                mask = rng.random(shape) < fraction
                mask.reshape(-1)[rng.integers(mask.size)] = True
                if kind == "expert":
                    mask[:] = False
                    mask[rng.choice(shape[0], 2, replace=False)] = True
                masks[f"{kind}/{category}/{layer}"] = mask
    return masks


#: A hand-made selection has no profile run behind it, so a check of it names what needs none: zero ablation
#: against random sets matched on shape (the defaults, mean and frequency, read the run); tests whose oracle zeroes
#: the set by hand name them too.
ZERO_SHAPE = {"interventions": ("zero",), "controls": ("shape",)}
ZERO_SHAPE_FLAGS = ("--intervention", "zero", "--control", "shape")


def write_selection_dir(path: Path, masks, loaded, categories, template: str = "chat", **manifest) -> Path:
    """A hand-made selection directory for ``loaded`` (a LoadedModel), as 'sparcom identify' writes it."""
    path.mkdir(parents=True, exist_ok=True)
    fingerprint = {"model.name_or_path": loaded.info.get("name_or_path"),
                   "model.architecture": type(loaded.model).__name__,
                   "model.fingerprint": loaded.info.get("fingerprint"),
                   "tokenizer_hash": tokenizer_fingerprint(loaded.tokenizer), "scope": "instruction",
                   "template": template, "template_policy": "auto", "system_prompt": None, "dtype": "float32",
                   **manifest}
    kinds = sorted({k.split("/")[0] for k in masks})
    write_selection(path, masks, {"rule": "percentile", "epsilon": 0.1, "parameters": {}, "description": "hand-made",
                                  "categories": list(categories), "kinds": kinds, "source_run": str(path / "run"),
                                  "manifest": fingerprint})
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and immune to a busy machine's thread contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def experts_io(site, model: torch.nn.Module, ids: torch.Tensor) -> dict:
    """The (hidden_states, top_k_index, top_k_weights) one experts module receives during a forward, and its
    output."""
    seen: dict = {}

    def pre(module, args, kwargs):
        seen["args"] = tuple(a.detach().clone() for a in args)

    def post(module, args, output):
        seen["output"] = output.detach().clone()

    handles = [site.experts.register_forward_pre_hook(pre, with_kwargs=True), site.experts.register_forward_hook(post)]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return seen


def manual_experts(experts, hidden, index, weights, replaced=None) -> torch.Tensor:
    """Σ_k w_k · down_e(A ⊙ up) from the weights (Mixtral layout), with A of each (expert, neuron) in ``replaced``
    set to its value (0 for a zero ablation, the mean for a mean ablation)."""
    replaced = replaced or {}
    out = torch.zeros_like(hidden)
    width = experts.down_proj.shape[2]
    for t in range(hidden.shape[0]):
        for slot in range(index.shape[1]):
            e = int(index[t, slot])
            gate, up = torch.nn.functional.linear(hidden[t], experts.gate_up_proj[e]).split(width)
            a = experts.act_fn(gate)
            for (pe, pi), value in replaced.items():
                if pe == e:
                    a[pi] = float(value)
            out[t] += weights[t, slot] * torch.nn.functional.linear(a * up, experts.down_proj[e])
    return out


def tiny_study(root: Path, rules: dict[str, tuple[str, float]]) -> dict:
    """A tiny Llama saved in ``root``, its dataset, a profile run and one selection folder per entry of ``rules``
    (folder name → (rule, ε)): what the causal tests of controls and dose–response run on."""
    from tiny import tiny_model, write_dataset

    from sparcom import ProfileSettings, SelectionRule, identify, profile
    from sparcom.models.loading import load_model

    data = write_dataset(root / "rows.jsonl")
    folder = root / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model = load_model(str(folder), dtype="float32")
    run = profile(model, data, root / "run", ProfileSettings(batch_size=4), progress=False)
    for name, (rule, epsilon) in rules.items():
        identify(run, SelectionRule(rule, epsilon), sweep=False, out=root / name, plots=False)
    return {"root": root, "data": data, "folder": folder, "model": model, "run": run}
