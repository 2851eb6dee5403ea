"""MoE profile runs: padding never counted, batch shapes agree, manifest, merge, resume, bootstrap, settings."""

import json

import numpy as np
import pytest
import torch
from moe_tiny import tiny_moe_model
from tiny import ROWS, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, frequencies, load_run, merge_runs, profile, wrap_model
from sparcom.artifacts.run import CHECKPOINT_FILE, load_checkpoint
from sparcom.errors import SparcomError


@pytest.fixture(scope="module")
def loaded():
    """DeepSeek-V2 shaped: layer 0 dense, layers 1–2 routed experts plus a shared expert."""
    return wrap_model(tiny_moe_model("deepseek_v2", seed=1), tiny_tokenizer())


def counted_keys(counts, prefixes=("neuron/", "shared_neuron/", "expert/", "expert_neuron/")):
    return sorted(k for k in counts if k.startswith(prefixes))


def test_padding_is_never_counted_and_batch_shapes_agree(loaded, dataset, tmp_path):
    runs = {}
    for batch_size, side in ((1, "right"), (8, "left"), (8, "right")):
        settings = ProfileSettings(scope="prompt", batch_size=batch_size, padding_side=side)
        runs[(batch_size, side)] = profile(loaded, dataset, tmp_path / f"{batch_size}{side}", settings,
                                           progress=False)
    assert runs[(8, "left")].manifest["padding"]["waste"] > 0
    for run in runs.values():
        for cat in run.categories:
            for layer in run.layers("expert"):
                routed = run.counts[f"expert/{cat}/{layer}"]
                # Every counted token goes to exactly top-k experts; a counted padding row would add more.
                assert int(routed.sum()) == 2 * run.tokens(cat)
                assert (run.counts[f"expert_neuron/{cat}/{layer}"] <= routed[:, None]).all()
    reference = runs[(1, "right")]
    for key, run in runs.items():
        assert set(run.counts) == set(reference.counts)
        for name in counted_keys(reference.counts, ("expert/",)):
            assert np.array_equal(run.counts[name], reference.counts[name]), (key, name)
        names = counted_keys(reference.counts)
        diff = sum(int(np.abs(run.counts[k] - reference.counts[k]).sum()) for k in names)
        total = sum(int(reference.counts[k].sum()) for k in names)
        assert diff / total < 1e-4, (key, diff, total)


def test_manifest_describes_experts_and_layers(loaded, dataset, tmp_path):
    run = profile(loaded, dataset, tmp_path / "run", ProfileSettings(batch_size=4), progress=False)
    sizes = run.manifest["model"]["sizes"]
    assert sizes["layers"] == 3
    assert sizes["mlp_neurons"] == [40, None, None]
    assert sizes["moe"] == {"num_experts": 8, "top_k": 2, "moe_layers": [1, 2], "dense_layers": [0],
                            "expert_neurons": [None, 16, 16], "shared_neurons": [None, 16, 16]}
    assert run.manifest["moe_counting"] == {"expert_neurons": True, "expert_neuron_method": "auto"}
    assert run.layers("neuron") == [0]
    assert run.layers("expert") == run.layers("expert_neuron") == run.layers("shared_neuron") == [1, 2]
    code = frequencies(run, "expert_neuron").per_layer("code")[1]
    assert code.shape == (8, 16) and code.max() <= 1.0
    loaded_run = load_run(tmp_path / "run")
    assert frequencies(loaded_run, "expert").per_layer("qa")[2].sum() == pytest.approx(2.0)  # top-2: p sums to k


def test_same_run_twice_gives_identical_counts(loaded, dataset, tmp_path):
    first = profile(loaded, dataset, tmp_path / "a", ProfileSettings(batch_size=4), progress=False)
    second = profile(loaded, dataset, tmp_path / "b", ProfileSettings(batch_size=4), progress=False)
    assert set(first.counts) == set(second.counts)
    for key, value in first.counts.items():
        assert np.array_equal(second.counts[key], value), key


def test_merge_of_two_halves_equals_whole(loaded, tmp_path):
    whole = write_dataset(tmp_path / "whole.jsonl")
    lines = whole.read_text().splitlines(keepends=True)
    (tmp_path / "first.jsonl").write_text("".join(lines[0::2]))
    (tmp_path / "second.jsonl").write_text("".join(lines[1::2]))
    settings = ProfileSettings(batch_size=1)
    run_whole = profile(loaded, whole, tmp_path / "w", settings, progress=False)
    profile(loaded, tmp_path / "first.jsonl", tmp_path / "h1", settings, progress=False)
    profile(loaded, tmp_path / "second.jsonl", tmp_path / "h2", settings, progress=False)
    merged = merge_runs([tmp_path / "h1", tmp_path / "h2"], tmp_path / "merged")
    assert set(merged.counts) == set(run_whole.counts)
    for key, value in run_whole.counts.items():
        assert np.array_equal(merged.counts[key], value), key
    # Expert counts only vs expert neurons too: not the same measurement, so not merged.
    profile(loaded, tmp_path / "second.jsonl", tmp_path / "off", ProfileSettings(batch_size=1, expert_neurons="off"),
            progress=False)
    with pytest.raises(SparcomError, match=r"moe_counting\.expert_neurons differs"):
        merge_runs([tmp_path / "h1", tmp_path / "off"], tmp_path / "refused")


class Killed(Exception):
    pass


def test_killed_run_resumes_to_uninterrupted_counts(loaded, dataset, tmp_path):
    settings = ProfileSettings(batch_size=1, checkpoint_every=2, bootstrap=3)
    uninterrupted = profile(loaded, dataset, tmp_path / "full", settings, progress=False)

    def kill_after_five(done: int) -> None:
        if done == 5:
            raise Killed

    with pytest.raises(Killed):
        profile(loaded, dataset, tmp_path / "killed", settings, progress=False, on_batch_end=kill_after_five)
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE)[1]["batches_done"] == 4
    seen = []
    resumed = profile(loaded, dataset, tmp_path / "killed", settings, progress=False, resume=True,
                      on_batch_end=seen.append)
    assert seen[0] == 5
    assert set(resumed.counts) == set(uninterrupted.counts)
    for key, value in uninterrupted.counts.items():
        assert np.array_equal(resumed.counts[key], value), key
    assert not (tmp_path / "killed" / CHECKPOINT_FILE).exists()
    with pytest.raises(SparcomError, match="other settings"):
        profile(loaded, dataset, tmp_path / "killed", ProfileSettings(batch_size=1, checkpoint_every=2, bootstrap=3,
                                                                      expert_neurons="off"),
                progress=False, resume=True)


def test_bootstrap_replicates_are_weighted_counts(dataset, tmp_path):
    """Each replicate of expert and expert-neuron counts is the Poisson-weighted sum of per-instruction counts."""
    from sparcom.profile.runner import replicate_weights

    loaded = wrap_model(tiny_moe_model("mixtral", seed=2), tiny_tokenizer())
    rows = [json.loads(line) for line in dataset.read_text().splitlines()][:6]
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = profile(loaded, subset, tmp_path / "boot", ProfileSettings(batch_size=3, bootstrap=4, bootstrap_seed=7),
                  progress=False)
    expected: dict[str, np.ndarray] = {}
    for index, row in enumerate(rows):
        single = tmp_path / f"single{index}.jsonl"
        single.write_text(json.dumps(row) + "\n")
        one = profile(loaded, single, tmp_path / f"one{index}", ProfileSettings(batch_size=1), progress=False)
        weights = replicate_weights(row["id"], 4, 7).to(torch.int64).numpy()
        for key in counted_keys(one.counts, ("expert/", "expert_neuron/")):
            value = one.counts[key]
            contribution = weights.reshape(-1, *([1] * value.ndim)) * value[None]
            expected[key] = expected.get(key, 0) + contribution
    assert expected
    for key, value in expected.items():
        boot = run.counts[f"bootstrap/{key}"]
        assert boot.shape == value.shape
        assert int(np.abs(boot - value).sum()) <= max(1, int(value.sum()) // 10_000), key


def test_expert_neurons_setting(loaded, dataset, tmp_path):
    with pytest.raises(SparcomError, match="--expert-neurons"):
        ProfileSettings(expert_neurons="sometimes").check()
    off = profile(loaded, dataset, tmp_path / "off", ProfileSettings(batch_size=4, expert_neurons="off"),
                  progress=False)
    assert not any(k.startswith("expert_neuron/") for k in off.counts)
    assert "expert_neuron_sources" not in off.manifest
    full = profile(loaded, dataset, tmp_path / "full", ProfileSettings(batch_size=4), progress=False)
    for key in counted_keys(off.counts):
        assert np.array_equal(off.counts[key], full.counts[key]), key
    assert int(off.counts["instructions/code"]) == sum(r[0] == "code" for r in ROWS)
