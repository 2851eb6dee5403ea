"""Counts below the category (--group-by source|instruction): exact against the oracle, exact sums, merge, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from causal_tiny import one_thread, tiny_moe  # noqa: F401
from moe_oracle import reference_moe_counts
from oracle import reference_counts
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, compare, load_run, merge_runs, profile, wrap_model
from sparcom.analysis.frequencies import kind_frequencies
from sparcom.analysis.groups import load_groups, pool
from sparcom.errors import SparcomError
from sparcom.kinds import GROUP_TOKENS_KEY, KINDS, component_keys, group_key

CATEGORIES = ["cls", "code", "qa", "gen", "math", "sum"]


@pytest.fixture(scope="module")
def dense():
    return wrap_model(tiny_model("llama", seed=1), tiny_tokenizer())


@pytest.fixture(scope="module")
def moe():
    """Qwen2-MoE: MoE, dense and MoE layers, with a shared expert: every kind of counter."""
    return wrap_model(tiny_moe("qwen2_moe", seed=3), tiny_tokenizer())


def rows(dataset):
    return [json.loads(line) for line in dataset.read_text().splitlines()]


def per_row_reference(model, dataset, tmp_path, scope, reference):
    """The oracle's counts of every row alone: {row id: {kind/layer: counts}} plus its token count."""
    result = {}
    for row in rows(dataset):
        single = tmp_path / f"{row['id']}.jsonl"
        single.write_text(json.dumps(row) + "\n")
        counts = reference(model, tiny_tokenizer(), single, scope)
        result[row["id"]] = ({f"{k.kind}/{k.layer}": v for k in component_keys(counts) for v in [counts[str(k)]]},
                             int(counts[f"tokens/{row['category']}"]))
    return result


def assert_groups_equal_reference(run, reference):
    groups = run.manifest["groups"]
    assert groups["labels"] == [r for r in reference]
    for g, label in enumerate(groups["labels"]):
        expected, tokens = reference[label]
        assert int(run.counts[GROUP_TOKENS_KEY][g]) == tokens, label
        for key, value in expected.items():
            kind, layer = key.split("/")
            np.testing.assert_array_equal(run.counts[group_key(kind, int(layer))][g], value, err_msg=f"{label} {key}")


def assert_category_counts_are_group_sums(run):
    groups = run.manifest["groups"]
    categories = np.array(groups["categories"])
    for key in component_keys(run.counts):
        members = categories == key.category
        summed = run.counts[group_key(key.kind, key.layer)][members].astype(np.int64).sum(axis=0)
        np.testing.assert_array_equal(summed, run.counts[str(key)], err_msg=str(key))
    for category in set(groups["categories"]):
        assert int(run.counts[GROUP_TOKENS_KEY][categories == category].sum()) == int(run.counts[f"tokens/{category}"])


@pytest.mark.parametrize("scope", ["instruction", "all"])
def test_dense_instruction_counts_equal_the_oracle_row_by_row(dense, dataset, tmp_path, scope):
    run = profile(dense, dataset, tmp_path / "run", ProfileSettings(scope=scope, batch_size=4,
                                                                    group_by="instruction"), progress=False)
    reference = per_row_reference(dense.model, dataset, tmp_path, scope,
                                  lambda m, t, d, s: reference_counts(m, t, d, s, chat=True))
    assert_groups_equal_reference(run, reference)
    assert_category_counts_are_group_sums(run)


@pytest.mark.parametrize("expert_neurons", ["auto", "recompute"])
def test_moe_instruction_counts_equal_the_oracle_row_by_row(moe, dataset, tmp_path, expert_neurons):
    run = profile(moe, dataset, tmp_path / "run", ProfileSettings(batch_size=3, group_by="instruction",
                                                                  expert_neurons=expert_neurons), progress=False)
    reference = per_row_reference(moe.model, dataset, tmp_path, "instruction",
                                  lambda m, t, d, s: reference_moe_counts(m, t, d, s))
    assert_groups_equal_reference(run, reference)
    assert_category_counts_are_group_sums(run)
    assert {k.split("/")[1] for k in run.counts if k.startswith("groups/") and k != GROUP_TOKENS_KEY} == set(KINDS)


@pytest.mark.parametrize("implementation", ["eager", "batched_mm", "grouped_mm"])
def test_every_experts_implementation_counts_groups_exactly(dataset, tmp_path, implementation):
    model = wrap_model(tiny_moe("mixtral", seed=4, implementation=implementation), tiny_tokenizer())
    run = profile(model, dataset, tmp_path / "run", ProfileSettings(batch_size=4, group_by="instruction"),
                  progress=False)
    assert_category_counts_are_group_sums(run)
    reference = per_row_reference(model.model, dataset, tmp_path, "instruction",
                                  lambda m, t, d, s: reference_moe_counts(m, t, d, s))
    assert_groups_equal_reference(run, reference)


def test_grouping_does_not_change_the_category_counts(moe, dataset, tmp_path):
    plain = profile(moe, dataset, tmp_path / "plain", ProfileSettings(batch_size=3, bootstrap=3), progress=False)
    for group_by in ("source", "instruction"):
        grouped = profile(moe, dataset, tmp_path / group_by, ProfileSettings(batch_size=3, bootstrap=3,
                                                                             group_by=group_by), progress=False)
        for key, value in plain.counts.items():
            np.testing.assert_array_equal(grouped.counts[key], value, err_msg=f"{group_by} {key}")


def test_source_groups_are_the_halves_of_each_category(dense, dataset, tmp_path):
    run = profile(dense, dataset, tmp_path / "run", ProfileSettings(batch_size=4, group_by="source"), progress=False)
    groups = run.manifest["groups"]
    expected = list(dict.fromkeys(f"{r['category']}/{r['source']}" for r in rows(dataset)))
    assert groups["labels"] == expected
    assert [f"{c}/{s}" for c, s in zip(groups["categories"], groups["sources"], strict=True)] == expected
    assert_category_counts_are_group_sums(run)
    loaded = load_run(run.path)
    for kind in ("neuron",):
        grouped = load_groups(loaded.counts, loaded.manifest["groups"], kind, loaded.categories)
        pooled = pool(grouped)
        direct = kind_frequencies(loaded.counts, loaded.categories, kind)
        assert pooled.categories == direct.categories
        np.testing.assert_array_equal(pooled.counts, direct.counts)
        np.testing.assert_array_equal(pooled.tokens, direct.tokens)


def test_group_counts_are_stored_compactly(dense, dataset, tmp_path):
    from safetensors.numpy import load_file

    profile(dense, dataset, tmp_path / "run", ProfileSettings(group_by="instruction"), progress=False)
    stored = load_file(str(tmp_path / "run" / "counts.safetensors"))
    assert stored[group_key("neuron", 0)].dtype == np.uint8  # tiny rows: fewer than 256 counted tokens each
    assert stored[GROUP_TOKENS_KEY].dtype == np.int64 and stored["neuron/cls/0"].dtype == np.int64


def halves_of(dataset, tmp_path):
    lines = dataset.read_text().splitlines(keepends=True)
    halves = []
    for i in (0, 1):
        halves.append(tmp_path / f"h{i}.jsonl")
        halves[-1].write_text("".join(lines[i::2]))
    return halves


def test_merge_of_two_halves_equals_the_whole(dense, tmp_path):
    whole_data = write_dataset(tmp_path / "all.jsonl")
    halves = halves_of(whole_data, tmp_path)
    settings = ProfileSettings(batch_size=4, group_by="instruction")
    whole = profile(dense, whole_data, tmp_path / "whole", settings, progress=False)
    parts = [profile(dense, h, tmp_path / f"part{i}", settings, progress=False) for i, h in enumerate(halves)]
    merged = merge_runs([p.path for p in parts], tmp_path / "merged")
    order = [merged.manifest["groups"]["labels"].index(label) for label in whole.manifest["groups"]["labels"]]
    assert sorted(order) == list(range(len(order)))
    for key, value in whole.counts.items():
        got = merged.counts[key][order] if key.startswith("groups/") else merged.counts[key]
        np.testing.assert_array_equal(got, value, err_msg=key)
    assert_category_counts_are_group_sums(merged)


def test_source_groups_of_two_shards_add(dense, tmp_path):
    whole_data = write_dataset(tmp_path / "all.jsonl")
    halves = halves_of(whole_data, tmp_path)
    settings = ProfileSettings(batch_size=4, group_by="source")
    whole = profile(dense, whole_data, tmp_path / "whole", settings, progress=False)
    merged = merge_runs([profile(dense, h, tmp_path / f"p{i}", settings, progress=False).path
                         for i, h in enumerate(halves)], tmp_path / "merged")
    order = [merged.manifest["groups"]["labels"].index(label) for label in whole.manifest["groups"]["labels"]]
    for key in (GROUP_TOKENS_KEY, group_key("neuron", 1)):
        np.testing.assert_array_equal(merged.counts[key][order], whole.counts[key], err_msg=key)


def test_killed_run_resumes_to_the_uninterrupted_groups(moe, dataset, tmp_path):
    settings = ProfileSettings(batch_size=2, checkpoint_every=2, group_by="instruction")
    uninterrupted = profile(moe, dataset, tmp_path / "whole", settings, progress=False)

    def kill(done: int) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(moe, dataset, tmp_path / "killed", settings, progress=False, on_batch_end=kill)
    resumed = profile(moe, dataset, tmp_path / "killed", settings, progress=False, resume=True)
    assert set(resumed.counts) == set(uninterrupted.counts)
    for key, value in uninterrupted.counts.items():
        np.testing.assert_array_equal(resumed.counts[key], value, err_msg=key)


def test_mixing_groupings_is_refused_where_it_would_mislead(dense, dataset, tmp_path):
    first, second = halves_of(dataset, tmp_path)
    a = profile(dense, first, tmp_path / "a", ProfileSettings(group_by="instruction"), progress=False)
    b = profile(dense, second, tmp_path / "b", ProfileSettings(), progress=False)
    with pytest.raises(SparcomError, match="group_by differs"):
        merge_runs([a.path, b.path], tmp_path / "m")
    with pytest.raises(SparcomError, match="group_by differs"):
        compare(a, b)
    assert compare(a, b, force=True).overridden


def test_group_by_is_checked(dense, dataset, tmp_path):
    with pytest.raises(SparcomError, match="--group-by must be one of"):
        profile(dense, dataset, tmp_path / "x", ProfileSettings(group_by="row"), progress=False)


def test_groups_stay_on_their_layer_devices(dense, dataset, tmp_path):
    run = profile(dense, dataset, tmp_path / "run", ProfileSettings(group_by="instruction"), progress=False)
    assert run.manifest["group_by"] == "instruction"
    assert len(run.manifest["groups"]["labels"]) == len(ROWS)
    assert all(isinstance(v, np.ndarray) for v in run.counts.values())
    assert torch.get_num_threads() == 1  # the tests' one-thread fixture is active (tiny models run fastest)
