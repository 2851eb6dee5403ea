"""Batching, padding, determinism, merge, resume and bootstrap of profile runs."""

import json

import numpy as np
import pytest
import torch
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, frequencies, load_run, merge_runs, profile, wrap_model
from sparcom.artifacts.run import CHECKPOINT_FILE, COUNTS_FILE, MANIFEST_FILE, load_checkpoint
from sparcom.errors import SparcomError


@pytest.fixture(scope="module")
def loaded():
    return wrap_model(tiny_model("llama", seed=1), tiny_tokenizer())


def neuron_keys(counts):
    return sorted(k for k in counts if k.startswith("neuron/"))


def disagreement(a, b) -> tuple[int, int]:
    """(differing counted events, total counted events) between two runs' neuron counts."""
    diff = sum(int(np.abs(a[k] - b[k]).sum()) for k in neuron_keys(a))
    total = sum(int(a[k].sum()) for k in neuron_keys(a))
    return diff, total


@pytest.mark.parametrize("scope", ["instruction", "all"])
def test_batch_size_and_padding_side_agree(loaded, dataset, tmp_path, scope):
    runs = {}
    for batch_size in (1, 8):
        for side in ("left", "right"):
            settings = ProfileSettings(scope=scope, batch_size=batch_size, padding_side=side)
            runs[(batch_size, side)] = profile(loaded, dataset, tmp_path / f"{batch_size}{side}", settings,
                                               progress=False)
    reference = runs[(1, "right")]
    for key, run in runs.items():
        for cat in reference.categories:
            assert int(run.counts[f"tokens/{cat}"]) == int(reference.counts[f"tokens/{cat}"]), key
        diff, total = disagreement(run.counts, reference.counts)
        assert total > 0
        assert diff / total < 1e-4, (key, diff, total)
    assert runs[(8, "left")].manifest["padding"]["waste"] > 0
    assert runs[(1, "left")].manifest["padding"]["waste"] == 0


def test_token_budget_limits_batches(loaded, dataset, tmp_path):
    run = profile(loaded, dataset, tmp_path / "budget", ProfileSettings(batch_size=8, token_budget=64),
                  progress=False)
    whole = profile(loaded, dataset, tmp_path / "whole", ProfileSettings(batch_size=8), progress=False)
    assert run.manifest["batching_plan"]["batches"] > whole.manifest["batching_plan"]["batches"]
    diff, total = disagreement(run.counts, whole.counts)
    assert diff / total < 1e-4


def test_same_run_twice_gives_identical_files(loaded, dataset, tmp_path):
    for name in ("a", "b"):
        profile(loaded, dataset, tmp_path / name, ProfileSettings(batch_size=4), progress=False)
    assert (tmp_path / "a" / COUNTS_FILE).read_bytes() == (tmp_path / "b" / COUNTS_FILE).read_bytes()
    manifests = [json.loads((tmp_path / n / MANIFEST_FILE).read_text()) for n in ("a", "b")]
    for manifest in manifests:
        manifest.pop("wall_time_seconds")
        manifest.pop("tokens_per_second")
        manifest["dataset"].pop("path")
    assert manifests[0] == manifests[1]


def test_artifact_keys_and_frequencies(loaded, dataset, tmp_path):
    run = profile(loaded, dataset, tmp_path / "run", ProfileSettings(batch_size=4), progress=False)
    categories = ["cls", "code", "qa", "gen", "math", "sum"]
    assert run.categories == categories
    expected = {f"tokens/{c}" for c in categories} | {f"instructions/{c}" for c in categories} | {
        f"neuron/{c}/{j}" for c in categories for j in (0, 1)}
    assert set(run.counts) == expected
    assert all(t.dtype == np.int64 for t in run.counts.values())
    loaded_run = load_run(tmp_path / "run")
    freqs = frequencies(loaded_run, "neuron")
    tokens = loaded_run.tokens("code")
    np.testing.assert_array_equal(freqs.per_layer("code")[1], loaded_run.count("neuron", "code", 1) / tokens)
    assert [a.shape for a in freqs.per_layer("qa").values()] == [(48,), (48,)]
    assert int(run.counts["instructions/code"]) == sum(r[0] == "code" for r in ROWS)
    manifest = loaded_run.manifest
    assert manifest["complete"] is True
    assert manifest["model"]["sizes"]["mlp_neurons"] == [48, 48]
    assert manifest["counted_tokens"]["code"] == tokens
    for field in ("tokenizer_hash", "dataset", "scope", "template", "template_policy", "system_prompt", "dtype",
                  "device", "batching_plan", "padding", "software", "wall_time_seconds", "instructions"):
        assert field in manifest, field


def test_merge_of_two_halves_equals_whole(loaded, tmp_path):
    whole = write_dataset(tmp_path / "whole.jsonl")
    first = write_dataset(tmp_path / "first.jsonl", ROWS)
    lines = whole.read_text().splitlines(keepends=True)
    first.write_text("".join(lines[0::2]))
    second = tmp_path / "second.jsonl"
    second.write_text("".join(lines[1::2]))
    settings = ProfileSettings(batch_size=1)
    run_whole = profile(loaded, whole, tmp_path / "w", settings, progress=False)
    profile(loaded, first, tmp_path / "h1", settings, progress=False)
    profile(loaded, second, tmp_path / "h2", settings, progress=False)
    merged = merge_runs([tmp_path / "h1", tmp_path / "h2"], tmp_path / "merged")
    assert set(merged.counts) == set(run_whole.counts)
    for key, value in run_whole.counts.items():
        assert np.array_equal(merged.counts[key], value), key
    assert set(merged.sums) == set(run_whole.sums)  # the activation sums add like the counts (float64)
    for key, value in run_whole.sums.items():
        np.testing.assert_allclose(merged.sums[key], value, rtol=1e-12, atol=1e-12, err_msg=key)
    assert load_run(tmp_path / "merged").sums.keys() == merged.sums.keys()

    def all_ids(run):
        return sorted(i for ids in run.manifest["instruction_ids"].values() for i in ids)

    assert all_ids(merged) == all_ids(run_whole)


def test_merge_refuses_incompatible_runs(loaded, dataset, tmp_path):
    profile(loaded, dataset, tmp_path / "a", ProfileSettings(), progress=False)
    profile(loaded, dataset, tmp_path / "b", ProfileSettings(scope="prompt"), progress=False)
    with pytest.raises(SparcomError, match="instruction"):  # same rows counted twice
        merge_runs([tmp_path / "a", tmp_path / "a"], tmp_path / "m1")
    other = tmp_path / "other.jsonl"
    other.write_text(dataset.read_text().replace('"id": "t-', '"id": "u-'))
    profile(loaded, other, tmp_path / "c", ProfileSettings(scope="prompt"), progress=False)
    with pytest.raises(SparcomError, match="scope differs"):
        merge_runs([tmp_path / "a", tmp_path / "c"], tmp_path / "m2")
    different_model = wrap_model(tiny_model("llama", seed=9), tiny_tokenizer())
    profile(different_model, other, tmp_path / "d", ProfileSettings(), progress=False)
    with pytest.raises(SparcomError, match="fingerprint differs"):
        merge_runs([tmp_path / "a", tmp_path / "d"], tmp_path / "m3")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


class Killed(Exception):
    pass


def test_killed_run_resumes_to_uninterrupted_counts(loaded, dataset, tmp_path):
    settings = ProfileSettings(batch_size=1, checkpoint_every=2)
    uninterrupted = profile(loaded, dataset, tmp_path / "full", settings, progress=False)

    def kill_after_five(done: int) -> None:
        if done == 5:
            raise Killed

    with pytest.raises(Killed):
        profile(loaded, dataset, tmp_path / "killed", settings, progress=False, on_batch_end=kill_after_five)
    _, progress = load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE)
    assert progress["batches_done"] == 4  # the last checkpoint before the kill
    assert json.loads((tmp_path / "killed" / MANIFEST_FILE).read_text())["complete"] is False
    with pytest.raises(SparcomError, match="not complete"):
        load_run(tmp_path / "killed")
    with pytest.raises(SparcomError, match="exists"):
        profile(loaded, dataset, tmp_path / "killed", settings, progress=False)
    seen = []
    resumed = profile(loaded, dataset, tmp_path / "killed", settings, progress=False, resume=True,
                      on_batch_end=seen.append)
    assert seen[0] == 5  # batches 1–4 were not recomputed
    for key, value in uninterrupted.counts.items():
        assert np.array_equal(resumed.counts[key], value), key
    assert resumed.sums.keys() == uninterrupted.sums.keys()
    for key, value in uninterrupted.sums.items():  # the same batches added in the same order: bit for bit
        assert np.array_equal(resumed.sums[key], value), key
    assert not (tmp_path / "killed" / CHECKPOINT_FILE).exists()
    # Resuming a finished run returns it unchanged; resuming with other settings is refused.
    again = profile(loaded, dataset, tmp_path / "killed", settings, progress=False, resume=True)
    assert np.array_equal(again.counts["neuron/code/0"], uninterrupted.counts["neuron/code/0"])
    with pytest.raises(SparcomError, match="other settings"):
        profile(loaded, dataset, tmp_path / "killed", ProfileSettings(scope="all", batch_size=1), progress=False,
                resume=True)


def test_resume_with_other_settings_is_refused(loaded, dataset, tmp_path):
    settings = ProfileSettings(batch_size=1, checkpoint_every=1)

    def kill(done: int) -> None:
        if done == 2:
            raise Killed

    with pytest.raises(Killed):
        profile(loaded, dataset, tmp_path / "r", settings, progress=False, on_batch_end=kill)
    with pytest.raises(SparcomError, match="other settings"):
        profile(loaded, dataset, tmp_path / "r", ProfileSettings(batch_size=2, checkpoint_every=1), progress=False,
                resume=True)


def test_overwrite_replaces_a_run(loaded, dataset, tmp_path):
    profile(loaded, dataset, tmp_path / "o", ProfileSettings(scope="prompt"), progress=False)
    run = profile(loaded, dataset, tmp_path / "o", ProfileSettings(), progress=False, overwrite=True)
    assert load_run(tmp_path / "o").manifest["scope"] == "instruction" == run.manifest["scope"]


def test_bootstrap_replicates_are_weighted_counts(loaded, dataset, tmp_path):
    """Each replicate equals a direct weighted sum of per-instruction counts (Poisson weights by row id)."""
    from sparcom.profile.runner import replicate_weights

    settings = ProfileSettings(batch_size=3, bootstrap=5, bootstrap_seed=7)
    run = profile(loaded, dataset, tmp_path / "boot", settings, progress=False)
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    expected_neuron = {}
    expected_tokens = {}
    for index, row in enumerate(rows):
        single = tmp_path / f"single{index}.jsonl"
        single.write_text(json.dumps(row) + "\n")
        one = profile(loaded, single, tmp_path / f"one{index}", ProfileSettings(batch_size=1), progress=False)
        weights = replicate_weights(row["id"], 5, 7).to(torch.int64).numpy()
        cat = row["category"]
        for layer in (0, 1):
            contribution = weights[:, None] * one.counts[f"neuron/{cat}/{layer}"][None, :]
            key = f"{cat}/{layer}"
            expected_neuron[key] = expected_neuron.get(key, 0) + contribution
        expected_tokens[cat] = expected_tokens.get(cat, 0) + weights * one.counts[f"tokens/{cat}"]
    for key, value in expected_neuron.items():
        diff = int(np.abs(run.counts[f"bootstrap/neuron/{key}"] - value).sum())
        assert diff <= max(1, int(value.sum()) // 10_000), key
    for cat, value in expected_tokens.items():
        assert np.array_equal(run.counts[f"bootstrap/tokens/{cat}"], value), cat


def test_device_map_auto_through_the_loader(tmp_path, dataset):
    """With accelerate's device map the counters follow each layer's device and equal a plain run."""
    from sparcom.models.loading import load_model

    folder = tmp_path / "model"
    tiny_model("qwen2", seed=5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    mapped = load_model(str(folder), device_map="auto")
    plain = load_model(str(folder))
    settings = ProfileSettings(batch_size=1)
    run_mapped = profile(mapped, dataset, tmp_path / "mapped", settings, progress=False)
    run_plain = profile(plain, dataset, tmp_path / "plain", settings, progress=False)
    assert run_mapped.manifest["device_map"] == "auto"
    assert run_mapped.manifest["layer_devices"] == ["cpu"]
    for key, value in run_plain.counts.items():
        assert np.array_equal(run_mapped.counts[key], value), key


def test_runs_without_activation_sums_stay_readable_and_merge_without_them(loaded, tmp_path):
    """A run written before sparcom recorded activation sums (no sums file, no sha256 in its manifest) loads with
    ``sums`` None; merged with a run that has them, the merged run has none (a partial sum would be wrong)."""
    whole = write_dataset(tmp_path / "whole.jsonl")
    lines = whole.read_text().splitlines(keepends=True)
    (tmp_path / "first.jsonl").write_text("".join(lines[0::2]))
    (tmp_path / "second.jsonl").write_text("".join(lines[1::2]))
    for name in ("first", "second"):
        profile(loaded, tmp_path / f"{name}.jsonl", tmp_path / name, ProfileSettings(), progress=False)
    old = tmp_path / "first"
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    del manifest["sums_sha256"]
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    (old / "sums.safetensors").unlink()
    assert load_run(old).sums is None and load_run(tmp_path / "second").sums is not None
    merged = merge_runs([old, tmp_path / "second"], tmp_path / "merged")
    assert merged.sums is None and not (tmp_path / "merged" / "sums.safetensors").exists()
    (tmp_path / "second" / "sums.safetensors").write_bytes(b"damaged")
    with pytest.raises(SparcomError, match=r"sums\.safetensors: the file differs"):
        load_run(tmp_path / "second")
