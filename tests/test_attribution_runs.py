"""Attribution runs: the stored sums against an independent per-row oracle, shards and resumes against one pass
(byte for byte), merging, and the command line's errors."""

from __future__ import annotations

import numpy as np
import pytest
from causal_tiny import one_thread  # noqa: F401
from test_attribution_estimate import analytic_effects
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

import sparcom
from sparcom.artifacts.attribution import EFFECTS_FILE, SCALE_BITS, load_attribution
from sparcom.attribution.runner import Attributor
from sparcom.causal.nll import encode_scored
from sparcom.data.schema import read_rows
from sparcom.errors import SparcomError
from sparcom.kinds import count_key
from sparcom.profile.runner import wrap_model


@pytest.fixture(scope="module")
def loaded():
    return wrap_model(tiny_model("llama"), tiny_tokenizer(), "tiny-llama")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "rows.jsonl")


@pytest.fixture(scope="module")
def whole(loaded, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    return sparcom.attribute(loaded, data, out, batch_size=3, group_by="instruction", template="chat",
                             progress=False)


def test_category_sums_equal_the_per_row_oracle(whole, data):
    """Each category's stored sum is Σ over its rows of the analytic Σ_t grad · (0 − A) of each unpadded row."""
    model = tiny_model("llama")
    rows = read_rows(data)
    examples = encode_scored(rows, tiny_tokenizer(), "chat")
    for category in sorted({r.category for r in rows}):
        expected = {0: 0.0, 1: 0.0}
        tokens = 0
        for example in examples:
            if example.category == category:
                for layer, values in analytic_effects(model, example).items():
                    expected[layer] = expected[layer] + values
                tokens += example.tokens
        assert int(whole.sums[f"tokens/{category}"]) == tokens
        for layer in (0, 1):
            stored = whole.value(count_key("neuron", category, layer))
            assert np.abs(stored - expected[layer]).max() <= 1e-4 * np.abs(expected[layer]).max() + 1e-5
    effects = whole.effects("neuron")
    assert effects.per_token.shape == (6, 96)
    code = effects.categories.index("code")
    assert np.allclose(effects.per_token[code] * effects.tokens[code],
                       np.concatenate([whole.value(count_key("neuron", "code", j)) for j in (0, 1)]))


def test_group_rows_add_up_to_the_category_sums_exactly(whole):
    groups = whole.manifest["groups"]
    for layer in (0, 1):
        per_row = whole.sums[f"groups/neuron/{layer}"]
        for category in whole.categories:
            members = [i for i, c in enumerate(groups["categories"]) if c == category]
            assert np.array_equal(per_row[members].sum(0), whole.sums[count_key("neuron", category, layer)])
    assert whole.sums["groups/tokens"].sum() == sum(int(whole.sums[f"tokens/{c}"]) for c in whole.categories)
    assert whole.manifest["scale_bits"] == SCALE_BITS


@pytest.mark.parametrize("group_by", ["category", "instruction"])
def test_merged_shards_are_the_whole_run_byte_for_byte(loaded, data, tmp_path, group_by):
    common = dict(batch_size=2, group_by=group_by, template="chat", progress=False)
    whole = sparcom.attribute(loaded, data, tmp_path / "whole", **common)
    shards = [sparcom.attribute(loaded, data, tmp_path / f"shard{k}", shard=f"{k}/3", **common) for k in range(3)]
    assert all(s.manifest["shard"]["count"] == 3 for s in shards)
    merged = sparcom.merge_runs([s.path for s in shards], tmp_path / "merged")
    assert (merged.path / EFFECTS_FILE).read_bytes() == (whole.path / EFFECTS_FILE).read_bytes()
    assert merged.manifest["instruction_ids"].keys() == whole.manifest["instruction_ids"].keys()
    assert merged.manifest["scored_tokens"] == whole.manifest["scored_tokens"]
    with pytest.raises(SparcomError, match="disjoint rows"):
        sparcom.merge_runs([shards[0].path, shards[0].path], tmp_path / "twice")


def test_a_stopped_run_resumes_to_the_same_bytes(loaded, data, tmp_path, monkeypatch):
    common = dict(batch_size=2, checkpoint_every=2, template="chat", progress=False)
    whole = sparcom.attribute(loaded, data, tmp_path / "whole", **common)
    original = Attributor.add_batch
    calls = []

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return original(self, *args)

    monkeypatch.setattr(Attributor, "add_batch", failing)
    with pytest.raises(RuntimeError, match="killed"):
        sparcom.attribute(loaded, data, tmp_path / "stopped", **common)
    assert (tmp_path / "stopped" / "checkpoint.safetensors").is_file()
    monkeypatch.setattr(Attributor, "add_batch", original)
    with pytest.raises(SparcomError, match="--resume"):
        sparcom.attribute(loaded, data, tmp_path / "stopped", **common)
    resumed = sparcom.attribute(loaded, data, tmp_path / "stopped", resume=True, **common)
    assert (resumed.path / EFFECTS_FILE).read_bytes() == (whole.path / EFFECTS_FILE).read_bytes()
    assert not (tmp_path / "stopped" / "checkpoint.safetensors").exists()
    with pytest.raises(SparcomError, match="other settings"):
        sparcom.attribute(loaded, data, tmp_path / "stopped", resume=True, **{**common, "batch_size": 3})


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(loaded, data, tmp_path, monkeypatch):
    def failing(self, *args):
        raise RuntimeError("killed")

    monkeypatch.setattr(Attributor, "add_batch", failing)
    with pytest.raises(RuntimeError):
        sparcom.attribute(loaded, data, tmp_path / "never", template="chat", progress=False)
    assert not (tmp_path / "never").exists()


def test_an_edited_effects_file_is_refused(whole, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(whole.path, copy)
    blob = bytearray((copy / EFFECTS_FILE).read_bytes())
    blob[-1] ^= 1
    (copy / EFFECTS_FILE).write_bytes(bytes(blob))
    with pytest.raises(SparcomError, match="edited or damaged"):
        load_attribution(copy)


def test_the_mean_replacement_needs_its_values(loaded, data, tmp_path):
    with pytest.raises(SparcomError, match="mean activation"):
        sparcom.attribute(loaded, data, tmp_path / "mean", replacement="mean", progress=False)


def test_cli_writes_a_run_and_refuses_bad_input_with_one_line(cli, tmp_path, data):
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    done = cli("attribute", folder, "--data", data, "--out", tmp_path / "run", "--quiet", "--per-category", "1")
    assert done.returncode == 0, done.stderr
    assert "CODE" in done.stdout
    assert load_attribution(tmp_path / "run").manifest["instruction_ids"]["code"] == ["t-002"]
    cases = [
        (("attribute", folder, "--data", tmp_path / "missing.jsonl", "--out", tmp_path / "a"), "missing.jsonl"),
        (("attribute", folder, "--data", data, "--out", tmp_path / "b", "--replacement", "mean"), "mean activation"),
        (("attribute", folder, "--data", data, "--out", tmp_path / "c", "--shard", "3/2"), "--shard"),
        (("attribute", folder, "--data", data, "--out", tmp_path / "run"), "--resume"),
        (("attribute", folder, "--data", data, "--out", tmp_path / "d", "--batch-size", "0"), "--batch-size"),
    ]
    for args, fragment in cases:
        failed = cli(*args)
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert failed.returncode == 2, (args, failed.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, failed.stderr)
    assert not any((tmp_path / name).exists() for name in "abcd")
    for k in (0, 1):
        assert cli("attribute", folder, "--data", data, "--out", tmp_path / f"s{k}", "--quiet", "--shard",
                   f"{k}/2").returncode == 0
    merged = cli("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert merged.returncode == 0, merged.stderr
    assert "SUM" in merged.stdout and load_attribution(tmp_path / "merged").manifest["merged_from"]
    mixed = cli("merge", tmp_path / "s0", tmp_path / "run", "--out", tmp_path / "mixed")
    assert mixed.returncode == 2 and "disjoint rows" in mixed.stderr


def test_rows_without_a_reference_response_are_refused(loaded, tmp_path):
    rows = [(c, i, t, "") if n == 1 else (c, i, t, o) for n, (c, i, t, o) in enumerate(ROWS)]
    with pytest.raises(SparcomError, match="output"):
        sparcom.attribute(loaded, write_dataset(tmp_path / "rows.jsonl", rows), tmp_path / "out", progress=False)


def test_mean_replacement_with_zero_means_is_the_zero_replacement(loaded, data, whole, tmp_path):
    means = {("neuron", j): np.zeros(48) for j in (0, 1)}
    run = sparcom.attribute(loaded, data, tmp_path / "mean", batch_size=3, group_by="instruction", template="chat",
                            replacement="mean", means=means, progress=False)
    assert run.manifest["replacement"] == "mean"
    assert (run.path / EFFECTS_FILE).read_bytes() == (whole.path / EFFECTS_FILE).read_bytes()
    with pytest.raises(SparcomError, match="needs 48 mean activations"):
        sparcom.attribute(loaded, data, tmp_path / "short", replacement="mean", means={("neuron", 0): np.zeros(48)},
                          progress=False)


def test_the_means_of_a_profile_run_are_the_mean_replacement(loaded, data, tmp_path, cli):
    """--means-run RUN: each neuron's mean over every counted token of the run (its exact sums), as if given."""
    run = sparcom.profile(loaded, data, tmp_path / "profile", sparcom.ProfileSettings(batch_size=3), progress=False)
    tokens = sum(run.tokens(c) for c in run.categories)
    given = {("neuron", j): sum(run.sums[f"sums/neuron/{c}/{j}"] for c in run.categories) / tokens for j in (0, 1)}
    direct = sparcom.attribute(loaded, data, tmp_path / "given", batch_size=3, replacement="mean", means=given,
                               progress=False)
    read = sparcom.attribute(loaded, data, tmp_path / "read", batch_size=3, replacement="mean",
                             means_run=str(run.path), progress=False)
    assert (read.path / EFFECTS_FILE).read_bytes() == (direct.path / EFFECTS_FILE).read_bytes()
    assert read.manifest["means_run"] == str(run.path.resolve()) and "means_run" not in direct.manifest
    folder = tmp_path / "tiny-llama"
    loaded.model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    done = cli("attribute", folder, "--data", data, "--out", tmp_path / "cli", "--batch-size", 3, "--replacement",
               "mean", "--means-run", run.path, "--quiet", "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / EFFECTS_FILE).read_bytes() == (direct.path / EFFECTS_FILE).read_bytes()
    refused = cli("attribute", folder, "--data", data, "--out", tmp_path / "zero", "--means-run", run.path)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error: --means-run gives the values")
    assert not (tmp_path / "zero").exists()


def test_a_moe_run_holds_neurons_shared_neurons_experts_and_expert_neurons(data, tmp_path):
    from causal_tiny import tiny_moe
    from test_attribution_estimate import analytic_expert_effects, analytic_expert_neuron_effects

    model = tiny_moe("qwen2_moe")
    loaded = wrap_model(model, tiny_tokenizer(), "tiny-qwen2-moe")
    run = sparcom.attribute(loaded, data, tmp_path / "moe", batch_size=4, template="chat", progress=False,
                            group_by="instruction")
    assert run.manifest["kinds"] == ["expert", "expert_neuron", "neuron", "shared_neuron"]
    assert run.effects("expert").layout.layers == (0, 2) and run.effects("neuron").layout.layers == (1,)
    assert run.effects("expert_neuron").layout.shapes == ((8, 16), (8, 16))  # the counts' [E, I] per layer
    examples = [e for e in encode_scored(read_rows(data), tiny_tokenizer(), "chat") if e.category == "math"]
    for layer in (0, 2):
        expected = sum(analytic_expert_effects(model, e)[layer] for e in examples)
        stored = run.value(count_key("expert", "math", layer))
        assert np.abs(stored - expected).max() <= 1e-4 * np.abs(expected).max() + 1e-5
        expected = sum(analytic_expert_neuron_effects(model, e)[layer] for e in examples)
        stored = run.value(count_key("expert_neuron", "math", layer))
        assert stored.shape == expected.shape == (8, 16)
        assert np.abs(stored - expected).max() <= 1e-4 * np.abs(expected).max() + 1e-5


@pytest.mark.slow
def test_two_ranks_write_the_single_process_bytes(data, tmp_path):
    """Under torchrun (two gloo ranks launched as torchrun would) the ranks share the batches round by round and
    rank 0 writes the bytes of one process."""
    import torch
    from dist_jobs import launch

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    settings = dict(batch_size=1, checkpoint_every=2, group_by="instruction", template="chat")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = sparcom.attribute(str(folder), data, tmp_path / "single", progress=False, **settings)
    finally:
        torch.set_num_threads(previous)
    outcomes = launch(2, {"call": "attribute", "model": str(folder), "data": str(data),
                          "out": str(tmp_path / "dist"), "settings": settings}, tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    assert outcomes[0]["world_size"] == 2
    assert (tmp_path / "dist" / EFFECTS_FILE).read_bytes() == (single.path / EFFECTS_FILE).read_bytes()
    assert not (tmp_path / "dist" / "checkpoint.safetensors").exists()


def test_the_attribution_rule_selects_expert_neurons_from_their_estimates(data, tmp_path):
    from causal_tiny import tiny_moe
    from test_attribution_rule import direct_rule

    loaded = wrap_model(tiny_moe("mixtral"), tiny_tokenizer(), "tiny-mixtral")
    run = sparcom.profile(loaded, data, tmp_path / "profile", group_by="instruction", template="chat",
                          progress=False)
    attribution = sparcom.attribute(loaded, data, tmp_path / "attribution", group_by="instruction", template="chat",
                                    batch_size=4, progress=False)
    result = sparcom.identify(run, rule="attribution", epsilon=0.05, attribution=str(attribution.path),
                              kinds=["expert_neuron"], plots=False, validity=False)  # a list, as users write it
    effects = attribution.effects("expert_neuron", list(run.categories))
    expected = direct_rule(effects.per_token, 0.05)
    assert expected.sum() > 0 and np.array_equal(result.kinds["expert_neuron"].mask, expected)
