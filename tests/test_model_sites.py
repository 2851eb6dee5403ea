"""One site map per model: declared by the family table for every family, and refused at load when it does not fit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from causal_tiny import one_thread  # noqa: F401
from moe_tiny import MOE_FAMILIES, tiny_moe_model
from tiny import family_configs, tiny_model, tiny_tokenizer

from sparcom.errors import SparcomError
from sparcom.models import families
from sparcom.models.families import FAMILIES
from sparcom.models.families import MOE_FAMILIES as MOE_ENTRIES
from sparcom.models.loading import load_model
from sparcom.models.sites import ExpertsCall, ShadowAttribute, model_sites

DENSE = sorted(family_configs(100))


def build(model_type: str):
    return tiny_model(model_type) if model_type in DENSE else tiny_moe_model(model_type)


@pytest.mark.parametrize("model_type", DENSE + MOE_FAMILIES)
def test_every_family_declares_every_site(model_type):
    model = build(model_type)
    sites = model_sites(model)
    assert sites.layers == len(sites.dense) + len(sites.moe)
    assert set(sites.dense).isdisjoint(sites.moe)
    for site in sites.dense.values():
        ids = torch.tensor([[3, 4, 5, 6]])
        captured = []
        handle = site.module.register_forward_hook(lambda m, a, out, captured=captured: captured.append(out.shape[-1]))
        with torch.no_grad():
            model(ids)
        handle.remove()
        assert captured == [site.width]  # the declared width is the activation's last axis
    for site in sites.moe.values():
        seen = []
        handle = site.router.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out))
        with torch.no_grad():
            model(torch.tensor([[3, 4, 5, 6]]))
        handle.remove()
        assert len(seen) == 1 and len(seen[0]) == 3, "the router returns (router_logits, top_k_weights, top_k_index)"
        index = seen[0][2]
        assert index.shape[-1] == site.top_k == 2
        assert int(index.max()) < site.num_experts


def test_every_moe_family_names_its_router():
    assert all(f.router for f in MOE_ENTRIES)
    routers = {f.name: f.router for f in MOE_ENTRIES}
    assert routers["granitemoe"] == routers["granitemoeshared"] == "block_sparse_moe.router"
    assert routers["gpt_oss"] == routers["phimoe"] == "mlp.router"
    assert routers["mixtral"] == "mlp.gate"


@pytest.mark.parametrize("model_type", ["llama", "qwen2_moe", "mixtral"])
def test_profiled_counts_have_exactly_the_site_shapes(model_type, dataset, tmp_path):
    from sparcom import ProfileSettings, profile, wrap_model
    from sparcom.kinds import component_keys

    model = build(model_type)
    run = profile(wrap_model(model, tiny_tokenizer()), dataset, tmp_path / "run", ProfileSettings(per_category=1),
                  progress=False)
    shapes = model_sites(model).shapes()
    for key in component_keys(run.counts):
        assert tuple(run.counts[str(key)].shape) == shapes[key.kind][key.layer]
    assert {(k.kind, k.layer) for k in component_keys(run.counts)} == {
        (kind, layer) for kind, layers in shapes.items() for layer in layers}


def test_a_wrong_router_path_is_refused_at_load_naming_the_path(tmp_path, monkeypatch):
    folder = tmp_path / "mixtral"
    tiny_moe_model("mixtral").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    wrong = dataclasses.replace(families.family_for("mixtral"), router="mlp.router")
    monkeypatch.setitem(families._BY_MODEL_TYPE, "mixtral", wrong)
    with pytest.raises(SparcomError) as caught:
        load_model(str(folder), dtype="float32")
    message = str(caught.value)
    assert "'mlp.router'" in message and "layer 0" in message and "families.py" in message
    assert "\n" not in message


def test_a_wrong_activation_path_is_refused_in_the_cli(tmp_path, dataset):
    """Through the console script, with the family table edited in the subprocess: one line, exit code 2."""
    folder = tmp_path / "llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    script = (
        "import dataclasses, sys\n"
        "from sparcom.models import families\n"
        "families._BY_MODEL_TYPE['llama'] = dataclasses.replace(families._BY_MODEL_TYPE['llama'], activation='mlp.act')\n"
        "from sparcom.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "profile", str(folder), "--data", str(dataset), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'mlp.act'" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_experts_call_parses_positional_and_keyword_forms():
    hidden, index, weights = torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)
    for args, kwargs in [((hidden, index, weights), {}), ((hidden,), {"top_k_index": index, "top_k_weights": weights}),
                         ((), {"hidden_states": hidden, "top_k_index": index, "top_k_weights": weights})]:
        call = ExpertsCall.parse(args, kwargs)
        assert call.hidden_states is hidden and call.top_k_index is index and call.top_k_weights is weights
        new = torch.full((3, 2), 0.5)
        args2, kwargs2 = call.with_weights(new)
        assert ExpertsCall.parse(args2, kwargs2).top_k_weights is new
    with pytest.raises(SparcomError, match="experts"):
        ExpertsCall.parse((hidden,), {})


def test_shadow_attribute_restores_exactly():
    class Box:
        def forward(self):
            return "class"

    box = Box()
    handle = ShadowAttribute(box, "forward", lambda: "shadow")
    assert box.forward() == "shadow"
    handle.remove()
    assert box.forward() == "class" and "forward" not in box.__dict__
    box.forward = lambda: "instance"
    handle = ShadowAttribute(box, "forward", lambda: "shadow")
    handle.remove()
    assert box.forward() == "instance"


def test_family_table_has_one_entry_per_model_type():
    types = [t for f in FAMILIES for t in f.model_types]
    assert len(types) == len(set(types)) == 33
