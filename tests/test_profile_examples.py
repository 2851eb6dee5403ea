"""The examples pass against an oracle: plain hooks keep full activations, one example at a time, top-K by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from causal_tiny import one_thread, tiny_moe, write_selection_dir  # noqa: F401
from oracle import activation_modules, example_text, token_counted
from tiny import tiny_model, tiny_tokenizer

from sparcom.analysis.ranking import Component
from sparcom.api import record_examples
from sparcom.errors import SparcomError
from sparcom.examples.files import load_examples
from sparcom.examples.recording import write_examples
from sparcom.profile.runner import wrap_model

CATEGORIES = ["cls", "code", "qa", "gen", "math", "sum"]


def oracle_values(model, tokenizer, data: Path, layer: int, index: int, scope="instruction", module=None):
    """Per row: the activations of one neuron on every token and which tokens are counted (full activations)."""
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    stored = []
    module = module if module is not None else activation_modules(model)[layer]
    handle = module.register_forward_hook(lambda m, a, out: stored.append(out.detach().clone()))
    result = []
    try:
        for row in rows:
            text, roles, prompt_len = example_text(row, tokenizer, True, None, with_response=False)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            counted = np.array(token_counted(enc["offset_mapping"], roles, prompt_len, scope))
            stored.clear()
            with torch.no_grad():
                model(input_ids=torch.tensor([enc["input_ids"]]))
            full = stored[0].reshape(-1, stored[0].shape[-1]).numpy()
            result.append((row["id"], full[:, index], counted, enc["input_ids"]))
    finally:
        handle.remove()
    return result


def oracle_top(per_row, k):
    """Top-k rows by their largest counted value, written plainly."""
    best = []
    for row_id, values, counted, _ in per_row:
        if not counted.any():
            continue
        position = max((t for t in range(len(values)) if counted[t]), key=lambda t: values[t])
        best.append((float(values[position]), row_id, position))
    best.sort(key=lambda item: -item[0])
    return best[:k]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    from tiny import write_dataset

    model, tokenizer = tiny_model("llama", seed=3), tiny_tokenizer()
    loaded = wrap_model(model, tokenizer, "tiny-llama")
    masks = {f"neuron/{c}/{j}": np.zeros(48, dtype=bool) for c in CATEGORIES for j in range(2)}
    selection = write_selection_dir(root / "selection", masks, loaded, CATEGORIES)
    return {"root": root, "loaded": loaded, "selection": selection, "data": write_dataset(root / "rows.jsonl")}


@pytest.mark.parametrize("batch_size", [1, 5])
def test_neuron_top_k_matches_oracle(llama, batch_size):
    components = [Component("neuron", 0, 3), Component("neuron", 1, 17), Component("neuron", 1, 40)]
    result = record_examples(llama["loaded"], llama["selection"], llama["data"], components, top_k=4, window=3,
                             batch_size=batch_size)
    tokenizer = llama["loaded"].tokenizer
    for component, events in zip(result.components, result.events, strict=True):
        per_row = oracle_values(llama["loaded"].model, tokenizer, llama["data"], component.layer, component.index)
        expected = oracle_top(per_row, 4)
        assert [(e["row"], e["position"]) for e in events] == [(r, p) for _, r, p in expected]
        np.testing.assert_allclose([e["value"] for e in events], [v for v, _, _ in expected], rtol=1e-4, atol=1e-5)
        rows = {json.loads(line)["id"]: json.loads(line)["category"] for line in llama["data"].read_text().splitlines()}
        stats = result.extra[component.key]["per_category"]
        for category in set(rows.values()):
            chosen = [v[c] for r, v, c, _ in per_row if rows[r] == category]
            flat = np.concatenate(chosen) if chosen else np.zeros(0)
            assert stats[category]["tokens"] == flat.size
            assert stats[category]["positive"] == int((flat > 0).sum())
            assert stats[category]["mean"] == pytest.approx(float(flat.mean()), rel=1e-5, abs=1e-6)
        for category in set(rows.values()):
            own = [item for item in per_row if rows[item[0]] == category]
            shown = result.extra[component.key]["events_by_category"][category]
            assert [(e["row"], e["position"]) for e in shown] == [(r, q) for _, r, q in oracle_top(own, 4)]
        by_id = {r: (v, c, ids) for r, v, c, ids in per_row}
        for event in events:
            values, counted, ids = by_id[event["row"]]
            start = max(0, event["position"] - 3)
            stop = min(len(values), event["position"] + 4)
            assert event["start"] == start
            assert event["tokens"] == [tokenizer.decode([i]) for i in ids[start:stop]]
            for t, shown in zip(range(start, stop), event["values"], strict=True):
                if counted[t]:
                    assert shown == pytest.approx(values[t], abs=1e-3)
                else:
                    assert shown is None


def test_write_and_load(llama, tmp_path):
    result = record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/0/1"], top_k=2)
    out = write_examples(result, tmp_path / "ex")
    document = load_examples(out)
    assert list(document.components) == ["neuron/0/1"]
    entry = document.components["neuron/0/1"]
    assert len(entry.events) == 2
    shown = entry.events + [e for events in entry.events_by_category.values() for e in events]
    assert set(document.rows) == {e.row for e in shown}
    assert {e.row for e in entry.events} <= {e.row for events in entry.events_by_category.values() for e in events}
    with pytest.raises(SparcomError, match="output directory exists"):
        write_examples(result, out)
    (out / "examples.json").write_text("{broken")
    with pytest.raises(SparcomError, match="malformed JSON"):
        load_examples(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_record_examples_checks_out_before_recording(llama, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SparcomError, match="output directory exists"):
        record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/5/0"], out=tmp_path / "taken")
    with pytest.raises(SparcomError, match="not a sparcom examples output"):
        record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/0/0"], out=tmp_path / "taken",
                        overwrite=True)
    result = record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/0/0"], top_k=1,
                             out=tmp_path / "ex")
    written = load_examples(tmp_path / "ex").components[result.components[0].key]
    assert written.events[0].value == result.events[0][0]["value"]


def test_bad_components(llama):
    with pytest.raises(SparcomError, match="outside"):
        record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/0/48"])
    with pytest.raises(SparcomError, match="no neuron site at layer 5"):
        record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/5/0"])
    with pytest.raises(SparcomError, match="kind/layer/index"):
        record_examples(llama["loaded"], llama["selection"], llama["data"], ["neuron/x"])


def test_default_components_from_source_run(tmp_path, dataset):
    """Without a component list, the cards' components come from the selection and its source run."""
    from sparcom import ProfileSettings, frequencies, identify, profile

    loaded = wrap_model(tiny_model("llama", seed=4), tiny_tokenizer(), "tiny")
    run = profile(loaded, dataset, tmp_path / "run", ProfileSettings(batch_size=4), progress=False)
    identify(run, out=tmp_path / "identify", plots=False)
    result = record_examples(loaded, tmp_path / "identify", dataset, top_k=2, per_category=2)
    keys = [c.key for c in result.components]
    assert keys and len(keys) == len(set(keys))
    p = frequencies(run, "neuron")
    for c in result.components:
        extra = result.extra[c.key]
        for category, value in extra["p"].items():
            assert value == pytest.approx(p.per_layer(category)[c.layer][c.index])
        assert extra["selected_for"]


def moe_oracle_values(model, data: Path, component: Component):
    """Routing weight (expert) or recomputed activation (expert neuron) per token, from full router outputs."""
    tokenizer = tiny_tokenizer()
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    layer = model.model.layers[component.layer]
    experts = layer.mlp.experts
    seen = []
    handle = experts.register_forward_pre_hook(lambda m, args: seen.append([a.detach().clone() for a in args[:3]]))
    result = []
    try:
        for row in rows:
            text, roles, prompt_len = example_text(row, tokenizer, True, None, with_response=False)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            counted = np.array(token_counted(enc["offset_mapping"], roles, prompt_len, "instruction"))
            seen.clear()
            with torch.no_grad():
                model(input_ids=torch.tensor([enc["input_ids"]]))
            x, index, weights = seen[0]
            values = np.full(len(enc["input_ids"]), np.nan)
            for t in range(len(values)):
                slots = [s for s in range(index.shape[1]) if int(index[t, s]) == (
                    component.index if component.kind == "expert" else component.expert)]
                if not slots:
                    continue
                if component.kind == "expert":
                    values[t] = float(sum(weights[t, s] for s in slots))
                else:
                    gate_up = experts.gate_up_proj[component.expert].detach()
                    gate = (x[t] @ gate_up.T)[: experts.intermediate_dim]  # gate_up is [2I, H]: gate, then up
                    values[t] = float(experts.act_fn(gate)[component.index])
            result.append((row["id"], values, counted, enc["input_ids"]))
    finally:
        handle.remove()
    return result


def test_moe_components_match_oracle(tmp_path, dataset):
    model = tiny_moe("mixtral", seed=2)
    loaded = wrap_model(model, tiny_tokenizer(), "tiny-mixtral")
    masks = {f"expert/{c}/{j}": np.zeros(8, dtype=bool) for c in CATEGORIES for j in range(2)}
    selection = write_selection_dir(tmp_path / "sel", masks, loaded, CATEGORIES)
    experts = model.model.layers[0].mlp.experts
    assert experts.gate_up_proj.shape[1:] == (2 * experts.intermediate_dim, model.config.hidden_size)
    components = [Component("expert", 0, 2), Component("expert", 1, 5), Component("expert_neuron", 0, 7, 3)]
    result = record_examples(loaded, selection, dataset, components, top_k=3, window=2, batch_size=4)
    for component, events in zip(result.components, result.events, strict=True):
        per_row = moe_oracle_values(model, dataset, component)
        ranked = [(r, np.where(c & ~np.isnan(v), v, -np.inf), ids) for r, v, c, ids in per_row]
        best = []
        for row_id, values, _ in ranked:
            if np.isfinite(values).any():
                best.append((float(values.max()), row_id, int(np.argmax(values))))
        best.sort(key=lambda item: -item[0])
        assert [e["row"] for e in events] == [r for _, r, _ in best[:3]], component.key
        np.testing.assert_allclose([e["value"] for e in events], [v for v, _, _ in best[:3]], rtol=1e-4, atol=1e-5)


def test_shared_expert_neurons_match_oracle(tmp_path, dataset):
    model = tiny_moe("qwen2_moe", seed=3)
    loaded = wrap_model(model, tiny_tokenizer(), "tiny-qwen2-moe")
    masks = {f"expert/{c}/{j}": np.zeros(8, dtype=bool) for c in CATEGORIES for j in (0, 2)}
    selection = write_selection_dir(tmp_path / "sel", masks, loaded, CATEGORIES)
    components = [Component("shared_neuron", 0, 5), Component("neuron", 1, 11)]
    result = record_examples(loaded, selection, dataset, components, top_k=3, window=2, batch_size=4)
    modules = [model.model.layers[0].mlp.shared_expert.act_fn, model.model.layers[1].mlp.act_fn]
    for component, events, module in zip(result.components, result.events, modules, strict=True):
        per_row = oracle_values(model, tiny_tokenizer(), dataset, component.layer, component.index, module=module)
        expected = oracle_top(per_row, 3)
        assert [(e["row"], e["position"]) for e in events] == [(r, q) for _, r, q in expected], component.key
        np.testing.assert_allclose([e["value"] for e in events], [v for v, _, _ in expected], rtol=1e-4, atol=1e-5)
