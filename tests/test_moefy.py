"""MoEfication of a tiny dense Llama: exact slices, exact 1/k weights, k = E equals dense (shared expert included),
routers beat chance, balanced clustering, the shared expert holds the neurons of largest mean contribution, the
down-projection refit solves its ridge problem and passes its held-out check, the saved folder profiles exactly
against the MoE oracle, and builds are deterministic."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from moe_oracle import reference_moe_counts
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, profile
from sparcom.api import build_moe
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.loading import load_model
from sparcom.zoo.builtin import MANIFEST
from sparcom.zoo.derived import DENSE_TOLERANCE, SPLIT_FILE
from sparcom.zoo.moe_assembly import retarget
from sparcom.zoo.moe_recovery import refit_down
from sparcom.zoo.moe_split import balanced_clusters, routed_share, top_k_overlap, within_share
from sparcom.zoo.moefy import MoefySettings, calibration_examples, mlp_inputs, moefy

#: The construction without a shared expert or refit (exact slices throughout; a GraniteMoE model).
SETTINGS = MoefySettings(num_experts=8, top_k=2, shared_neurons=0, refit=0, calibration_tokens=3000, iterations=20)
#: With a shared expert of 32 of the 64 neurons (a GraniteMoeShared model), exact slices; and with the refit.
SHARED = dataclasses.replace(SETTINGS, shared_neurons=32)
REFIT = dataclasses.replace(SHARED, refit=0.3)
INSTRUCTIONS = [
    "Explain why the sky looks blue on a clear day.", "List three uses of a paper clip.",
    "Translate 'good morning' into French.", "Write a haiku about autumn leaves.",
    "What is 17 plus 25? Show the sum.", "Summarize: the river flooded the town twice this year.",
    "Is a tomato a fruit? Answer yes or no.", "def square(x):\n    return x * x\n# explain this",
]


def calibration_rows() -> list[InstructionRow]:
    """Varied rows (not HexaInst): the tiny test rows plus recombined instructions."""
    rows = [InstructionRow(f"c-{i}", c, "ai", "tests", ins, inp, out, "CC0-1.0") for i, (c, ins, inp, out)
            in enumerate(ROWS)]
    for i, (a, b) in enumerate(itertools.permutations(INSTRUCTIONS, 2)):
        rows.append(InstructionRow(f"m-{i}", ("cls", "code", "qa", "gen", "math", "sum")[i % 6], "ai", "tests",
                                   a, b if i % 3 else "", f"{b} {a}", "CC0-1.0"))
    return rows


def dense_llama(tied: bool = False, seed: int = 0):
    return tiny_model("llama", seed=seed, intermediate_size=64, num_hidden_layers=3, tie_word_embeddings=tied)


@pytest.fixture(scope="module")
def built():
    dense = dense_llama()
    return dense, moefy(dense, tiny_tokenizer(), calibration_rows(), SETTINGS)


def probe_ids():
    tokenizer = tiny_tokenizer()
    return torch.tensor([tokenizer("Write a short poem about the sea. What is 12 times 7? Fix the bug.")["input_ids"]])


# --------------------------------------------------------------------------------------------- the statistics


def test_top_k_overlap_and_routed_share_match_direct_formulas():
    rng = np.random.default_rng(0)
    predicted, actual = rng.normal(size=(7, 5)), rng.random(size=(7, 5))
    for k in (1, 2, 4):
        overlap, share = [], []
        for t in range(7):
            mine = set(sorted(range(5), key=lambda e: -predicted[t, e])[:k])
            best = set(sorted(range(5), key=lambda e: -actual[t, e])[:k])
            overlap.append(len(mine & best) / k)
            share.append(sum(actual[t, e] for e in mine) / sum(actual[t]))
        got = top_k_overlap(torch.tensor(predicted), torch.tensor(actual), k)
        assert got == pytest.approx(sum(overlap) / 7)
        assert routed_share(torch.tensor(predicted), torch.tensor(actual), k) == pytest.approx(sum(share) / 7)


def test_within_share_matches_direct_formula():
    rng = np.random.default_rng(1)
    features = rng.random(size=(20, 6))
    gram = features.T @ features
    labels = [0, 1, 2, 0, 1, 2]
    inside = sum(gram[i, j] for i in range(6) for j in range(6) if labels[i] == labels[j])
    assert within_share(torch.tensor(gram), torch.tensor(labels), 3) == pytest.approx(inside / gram.sum())


# --------------------------------------------------------------------------------------------- clustering


def test_balanced_clusters_recover_planted_groups_and_are_deterministic():
    """Items of 4 hidden groups fire together; a permuted block structure must be found exactly."""
    rng = np.random.default_rng(2)
    groups, size, tokens = 4, 6, 400
    truth = rng.permutation(np.repeat(np.arange(groups), size))
    on = rng.random(size=(tokens, groups)) < 0.3  # which groups fire on each token
    features = (on[:, truth] & (rng.random(size=(tokens, groups * size)) < 0.9)).astype(np.float64)
    gram = torch.tensor(features.T @ features)
    labels = balanced_clusters(gram, groups, seed=3)
    assert torch.equal(labels, balanced_clusters(gram, groups, seed=3))
    assert np.bincount(labels.numpy(), minlength=groups).tolist() == [size] * groups
    found = {frozenset(np.flatnonzero(labels.numpy() == g)) for g in range(groups)}
    assert found == {frozenset(np.flatnonzero(truth == g)) for g in range(groups)}
    first = [int(np.flatnonzero(labels.numpy() == g)[0]) for g in range(groups)]
    assert first == sorted(first) and first[0] == 0  # canonical numbering


# --------------------------------------------------------------------------------------------- the MoE itself


def test_experts_are_exact_slices_of_the_dense_mlp(built):
    dense, result = built
    k = SETTINGS.top_k
    for layer, moe_layer, split in zip(dense.model.layers, result.model.model.layers, result.splits, strict=True):
        members = split.members
        assert members.shape == (8, 8)
        assert sorted(members.reshape(-1).tolist()) == list(range(64))  # a partition into equal experts
        experts = moe_layer.block_sparse_moe.experts
        for e, m in enumerate(torch.from_numpy(members)):
            assert torch.equal(experts.gate_up_proj[e], torch.cat([layer.mlp.gate_proj.weight[m],
                                                                   layer.mlp.up_proj.weight[m]]))
            assert torch.equal(experts.down_proj[e], layer.mlp.down_proj.weight[:, m] * k)


def test_non_mlp_parts_are_bit_identical_and_routing_weights_are_exactly_one_over_k(built):
    dense, result = built
    ids = probe_ids()
    seen: dict[str, torch.Tensor] = {}
    hooks = [dense.model.layers[0].mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("dense", a[0])),
             result.model.model.layers[0].block_sparse_moe.register_forward_pre_hook(
                 lambda m, a: seen.__setitem__("moe", a[0]))]
    with torch.no_grad():
        dense(ids)
        result.model(ids)
    for hook in hooks:
        hook.remove()
    assert torch.equal(seen["dense"], seen["moe"])
    x = seen["moe"].reshape(-1, seen["moe"].shape[-1])
    router = result.model.model.layers[0].block_sparse_moe.router
    with torch.no_grad():
        _, weights, index = router(x)
    assert torch.equal(weights, torch.full_like(weights, 1 / SETTINGS.top_k))
    fitted = x @ torch.from_numpy(result.splits[0].router).T  # the unscaled router ranks the same experts
    assert torch.equal(index.sort(1).values, fitted.topk(SETTINGS.top_k, dim=1).indices.sort(1).values)


@pytest.mark.parametrize(("tied", "settings"), [(False, SETTINGS), (True, SETTINGS), (False, SHARED), (True, SHARED)])
def test_all_experts_routed_equals_the_dense_model(tied, settings):
    dense = dense_llama(tied=tied, seed=4)
    result = moefy(dense, tiny_tokenizer(), calibration_rows(), settings)
    every = retarget(result.model, settings.num_experts)
    ids = probe_ids()
    with torch.no_grad():
        reference, logits = dense(ids).logits, every(ids).logits
        partial = result.model(ids).logits
    relative = float((reference - logits).abs().max() / reference.abs().max())
    assert relative <= DENSE_TOLERANCE, relative
    assert float((reference - partial).abs().max() / reference.abs().max()) > 100 * DENSE_TOLERANCE  # k < E differs
    if tied:
        assert result.model.lm_head.weight.data_ptr() == result.model.model.embed_tokens.weight.data_ptr()


def test_router_picks_the_largest_experts_better_than_chance(built):
    """On its training tokens (the MLP inputs of the MoE itself: layers are split in order on the MoE's own inputs),
    the router's top-k overlaps the k largest expert outputs far more than a random map."""
    dense, result = built
    tokenizer = tiny_tokenizer()
    examples = calibration_examples(calibration_rows(), tokenizer, SETTINGS.calibration_tokens)
    inputs = mlp_inputs(result.model, examples, pad_id=tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(5)
    for layer, split, x in zip(dense.model.layers, result.splits, inputs, strict=True):
        h = layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)
        norms = torch.stack([(h[:, m] @ layer.mlp.down_proj.weight[:, m].T).norm(dim=1)
                             for m in torch.from_numpy(split.members)], 1).detach()
        router = top_k_overlap(x @ torch.from_numpy(split.router).T, norms, SETTINGS.top_k)
        chance = top_k_overlap(x @ torch.randn(8, x.shape[1], generator=generator).T, norms, SETTINGS.top_k)
        assert router >= chance + 0.25, (router, chance)
        assert router == pytest.approx(split.stats["router_overlap"])


@pytest.fixture(scope="module")
def built_shared():
    dense = dense_llama(seed=7)
    tokenizer = tiny_tokenizer()
    return dense, {name: moefy(dense, tokenizer, calibration_rows(), settings)
                   for name, settings in (("exact", SHARED), ("refit", REFIT))}


def test_shared_expert_holds_the_neurons_of_largest_mean_contribution_and_the_experts_partition_the_rest(
        built_shared):
    dense, results = built_shared
    result = results["exact"]
    tokenizer = tiny_tokenizer()
    examples = calibration_examples(calibration_rows(), tokenizer, SHARED.calibration_tokens)
    inputs = mlp_inputs(result.model, examples, pad_id=tokenizer.pad_token_id)  # what each layer was split on
    k = SHARED.top_k
    for layer, moe_layer, split, x in zip(dense.model.layers, result.model.model.layers, result.splits, inputs,
                                          strict=True):
        mlp = layer.mlp
        with torch.no_grad():
            h = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        mean_contribution = [float(h[:, i].abs().mean() * mlp.down_proj.weight[:, i].detach().norm()) for i in range(64)]
        expected = sorted(sorted(range(64), key=lambda i: -mean_contribution[i])[:32])
        assert split.shared.tolist() == expected
        assert sorted([*split.shared.tolist(), *split.members.reshape(-1).tolist()]) == list(range(64))
        shared = torch.from_numpy(split.shared)
        assert torch.equal(moe_layer.shared_mlp.input_linear.weight,
                           torch.cat([mlp.gate_proj.weight[shared], mlp.up_proj.weight[shared]]))
        assert torch.equal(moe_layer.shared_mlp.output_linear.weight, mlp.down_proj.weight[:, shared])
        experts = moe_layer.block_sparse_moe.experts
        assert split.members.shape == (8, 4) and split.down is None
        for e, m in enumerate(torch.from_numpy(split.members)):
            assert torch.equal(experts.gate_up_proj[e], torch.cat([mlp.gate_proj.weight[m], mlp.up_proj.weight[m]]))
            assert torch.equal(experts.down_proj[e], mlp.down_proj.weight[:, m] * k)


def test_refit_changes_only_down_columns_and_keeps_them_only_where_held_out_rows_improve(built_shared):
    dense, results = built_shared
    result = results["refit"]
    k = REFIT.top_k
    kept = 0
    for layer, moe_layer, split in zip(dense.model.layers, result.model.model.layers, result.splits, strict=True):
        mlp, experts, stats = layer.mlp, moe_layer.block_sparse_moe.experts, split.stats
        down = split.down if split.down is not None else mlp.down_proj.weight
        assert (split.down is not None) == (stats["refit_heldout_error_after"] < stats["refit_heldout_error_before"])
        kept += split.down is not None
        for e, m in enumerate(torch.from_numpy(split.members)):
            assert torch.equal(experts.gate_up_proj[e], torch.cat([mlp.gate_proj.weight[m], mlp.up_proj.weight[m]]))
            assert torch.equal(experts.down_proj[e], down[:, m] * k)
        assert torch.equal(moe_layer.shared_mlp.output_linear.weight, down[:, torch.from_numpy(split.shared)])
    assert kept >= 1  # the tiny model's layers lose enough to routing for the refit to help somewhere


def test_refit_solves_its_ridge_problem_and_is_refused_when_held_out_rows_get_worse():
    rng = np.random.default_rng(8)
    h, down = rng.normal(size=(60, 6)), rng.normal(size=(3, 6))
    mask = rng.random(size=(60, 6)) < 0.6
    held = np.arange(60) >= 48
    refit, stats = refit_down(torch.tensor(h), torch.tensor(mask), torch.tensor(down), torch.tensor(held), 0.5)
    used, target = (h * mask)[~held], h[~held] @ down.T
    lam = 0.5 * np.mean(np.diag(used.T @ used))
    # min ||used Dᵀ − target||² + λ||D − down||²  ==  least squares on the stacked system
    stacked = np.linalg.lstsq(np.vstack([used, np.sqrt(lam) * np.eye(6)]),
                              np.vstack([target, np.sqrt(lam) * down.T]), rcond=None)[0].T
    error = {name: np.sum(((h * mask)[held] @ d.T - h[held] @ down.T) ** 2) / np.sum((h[held] @ down.T) ** 2)
             for name, d in (("before", down), ("after", stacked))}
    assert stats["refit_heldout_error_before"] == pytest.approx(error["before"])
    assert stats["refit_heldout_error_after"] == pytest.approx(error["after"])
    assert error["after"] < error["before"] and refit is not None
    np.testing.assert_allclose(refit.numpy(), stacked, rtol=1e-5, atol=1e-6)
    # Held-out rows that lose nothing to routing: the exact down is perfect there, any refit is worse — refused.
    mask[held] = True
    refit, stats = refit_down(torch.tensor(h), torch.tensor(mask), torch.tensor(down), torch.tensor(held), 0.5)
    assert refit is None and stats["refit_kept"] == 0 and stats["refit_heldout_error_before"] == 0
    with pytest.raises(SparcomError, match="hold out"):
        refit_down(torch.tensor(h), torch.tensor(mask), torch.tensor(down), torch.zeros(60, dtype=torch.bool), 0.5)


def test_unsupported_models_and_settings_are_refused():
    with pytest.raises(SparcomError, match="Llama-architecture"):
        moefy(tiny_model("qwen2"), tiny_tokenizer(), calibration_rows(), SETTINGS)
    with pytest.raises(SparcomError, match="equal experts"):
        moefy(dense_llama(), tiny_tokenizer(), calibration_rows(), MoefySettings(num_experts=6, top_k=2,
                                                                                 shared_neurons=0))
    with pytest.raises(SparcomError, match="outside the shared expert"):  # 64 - 16 = 48 neurons: not 5 experts
        MoefySettings(num_experts=5, top_k=2, shared_neurons=16).check(64)
    with pytest.raises(SparcomError, match="multiple of 4"):  # experts of 6 neurons: transformers cannot run them
        MoefySettings(num_experts=8, top_k=2, shared_neurons=16).check(64)
    with pytest.raises(SparcomError, match="below the MLP width"):
        MoefySettings(num_experts=8, top_k=2, shared_neurons=64).check(64)
    with pytest.raises(SparcomError, match="shared-expert choice"):
        MoefySettings(shared_by="random").check()
    with pytest.raises(SparcomError, match="--top-k"):
        MoefySettings(num_experts=8, top_k=9).check()


# --------------------------------------------------------------------------------------------- the saved folder


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense")
    dense_llama(seed=6).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    rows = tmp_path_factory.mktemp("calibration") / "rows.jsonl"
    rows.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in calibration_rows()))
    return folder, rows


@pytest.mark.parametrize(("settings", "family"), [
    (SETTINGS, "granitemoe"), (REFIT, "granitemoeshared"),
    (dataclasses.replace(REFIT, distill_epochs=1, distill_tokens=6000, distill_lr=3e-3), "granitemoeshared")])
def test_saved_folder_profiles_exactly_against_the_moe_oracle(dense_folder, dataset, tmp_path, settings, family):
    from transformers import AutoModelForCausalLM

    folder, rows = dense_folder
    out = build_moe(folder, tmp_path / "moe", settings, calibration=rows, progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["family"] == family and manifest["checks"]["non_mlp_bit_identical"]
    assert manifest["checks"]["all_experts_relative_logit_diff"] <= DENSE_TOLERANCE
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", SPLIT_FILE}
    recovered = settings.refit > 0 or settings.distill_epochs > 0  # k = E is then not the dense model by design
    assert ("refit_all_experts_relative_logit_diff" in manifest["checks"]) == recovered
    distillation = json.loads((out / SPLIT_FILE).read_text())["distillation"]
    assert bool(distillation) == (settings.distill_epochs > 0)
    assert not distillation or ("distillation" in manifest["build_seconds"] and distillation["distill_kept"] == 1)
    plain = AutoModelForCausalLM.from_pretrained(out)  # no sparcom code involved
    assert plain.config.model_type == family and plain.config.num_experts_per_tok == 2
    for scope in ("instruction", "all"):
        run = profile(load_model(str(out)), dataset, tmp_path / scope, ProfileSettings(scope=scope, batch_size=3),
                      progress=False)
        reference = reference_moe_counts(plain, tiny_tokenizer(), dataset, scope)
        engine = {k: v for k, v in run.counts.items() if not k.startswith("bootstrap/")}
        assert set(engine) == set(reference)
        assert any(k.startswith("expert_neuron/") for k in reference)
        assert any(k.startswith("shared_neuron/") for k in reference) == (family == "granitemoeshared")
        for key, value in reference.items():
            np.testing.assert_array_equal(np.asarray(engine[key]), value, err_msg=key)


def test_two_builds_write_the_same_bytes_and_hexainst_is_refused(dense_folder, tmp_path):
    folder, rows = dense_folder
    first = build_moe(folder, tmp_path / "a", REFIT, calibration=rows, progress=False)
    second = build_moe(folder, tmp_path / "b", REFIT, calibration=rows, progress=False)
    files = [json.loads((path / MANIFEST).read_text())["files"] for path in (first, second)]
    assert files[0] == files[1]
    with pytest.raises(SparcomError, match="exists"):
        build_moe(folder, first, SETTINGS, calibration=rows, progress=False)
    hexainst_like = write_dataset(tmp_path / "hexa.jsonl", [("qa", "What is the capital?", "", "Paris.")])
    lines = [json.loads(line) for line in hexainst_like.read_text().splitlines()]
    lines[0]["id"] = "hexainst-qa-ai-001"
    hexainst_like.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(SparcomError, match="HexaInst"):
        build_moe(folder, tmp_path / "c", SETTINGS, calibration=hexainst_like, progress=False)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*.partial"))


def test_calibration_takes_categories_in_turn_within_budget():
    from sparcom.data.formatting import encode_row

    tokenizer = tiny_tokenizer()
    rows = [r for r in calibration_rows() if r.category in ("code", "math")]
    rows.sort(key=lambda r: r.category)  # every code row first, then every math row
    ids = {encode_row(r, 0, tokenizer, "chat", with_response=True).input_ids: r.category for r in rows}
    budget = 1500
    examples = calibration_examples(rows, tokenizer, budget)
    assert 0 < sum(len(e) for e in examples) <= budget
    categories = [ids[e] for e in examples]
    assert categories[:4] == ["code", "math", "code", "math"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices gain nothing from threads, and on a busy machine spinning threads make them 10× slower: the
    builds here run on one thread (the real built-in's on :data:`~sparcom.zoo.derived.BUILD_THREADS`)."""
    from sparcom.zoo import derived

    before, pinned = torch.get_num_threads(), derived.BUILD_THREADS
    torch.set_num_threads(1)
    derived.BUILD_THREADS = 1
    yield
    torch.set_num_threads(before)
    derived.BUILD_THREADS = pinned


def test_the_build_runs_on_its_pinned_threads_whatever_the_callers(dense_folder, tmp_path, monkeypatch):
    """The MoEfication's rounding depends on the thread count (SmolLM2's MoE built on 1 and on 2 threads differs),
    so the build always runs on BUILD_THREADS, records it, and gives the caller's count back."""
    from sparcom.zoo import derived

    folder, rows = dense_folder
    seen = []
    real = derived.moefy

    def watched(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(derived, "moefy", watched)
    monkeypatch.setattr(derived, "BUILD_THREADS", 2)
    out = build_moe(folder, tmp_path / "pinned", SETTINGS, calibration=rows, progress=False)
    assert seen == [2] and torch.get_num_threads() == 1  # the module runs on one thread; restored after
    assert json.loads((out / MANIFEST).read_text())["threads"] == 2


# --------------------------------------------------------------------------------------------- derived built-ins


@pytest.fixture
def tiny_derived(dense_folder, monkeypatch):
    """A derived built-in whose parent is the tiny dense folder (no GGUF involved)."""
    from sparcom.zoo import derived

    folder, rows = dense_folder
    entry = derived.DerivedModel("tiny-moe", "tiny-dense", "instruct", "test entry", SETTINGS, str(rows))
    monkeypatch.setitem(derived.DERIVED, entry.name, entry)
    weights = {"model.safetensors": derived.file_sha256(folder / "model.safetensors")}
    monkeypatch.setattr(derived, "_parent_record", lambda model, cache_dir, verify: {
        "name": model.parent, "folder": folder, "weights": weights})
    return entry


def test_derived_builtin_is_built_once_verified_and_rebuilt_when_damaged(tiny_derived, tmp_path, monkeypatch, capsys):
    from sparcom.zoo import catalog, derived

    assert catalog.is_builtin("tiny-moe") and "tiny-moe" in catalog.builtin_names()
    path = catalog.resolve("tiny-moe", tmp_path)  # the one entry point for every built-in name
    assert path == tmp_path / "tiny-moe" and "building tiny-moe" in capsys.readouterr().err
    assert derived.check_derived("tiny-moe", path, "full") == ""
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["parent"]["name"] == "tiny-dense" and manifest["settings"] == SETTINGS.to_dict()
    original = manifest["files"]["model.safetensors"]["sha256"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a valid cache was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(derived, "write_moe_folder", no_rebuild)
        assert derived.resolve_derived("tiny-moe", tmp_path, progress=False) == path

    weights = path / "model.safetensors"
    with weights.open("r+b") as handle:  # flip bytes in the tensor data, keeping the size
        handle.seek(weights.stat().st_size // 2)
        chunk = handle.read(16)
        handle.seek(-16, 1)
        handle.write(bytes(b ^ 0xFF for b in chunk))
    assert derived.check_derived("tiny-moe", path, "quick") == ""
    assert "does not match its recorded sha256" in derived.check_derived("tiny-moe", path, "full")
    assert derived.resolve_derived("tiny-moe", tmp_path, progress=False) == path
    assert "rebuilding" in capsys.readouterr().err
    assert derived.file_sha256(weights) == original  # the rebuild is deterministic

    assert "different tiny-dense" in derived.check_derived("tiny-moe", path, "quick", {"model.safetensors": "0" * 64})
    monkeypatch.setitem(derived.DERIVED, "tiny-moe", derived.DerivedModel(
        "tiny-moe", "tiny-dense", "instruct", "test entry", MoefySettings(num_experts=4, top_k=2), "x"))
    assert derived.check_derived("tiny-moe", path, "quick") == "built with other settings"
    status = {s.name: s for s in catalog.statuses(tmp_path)}["tiny-moe"]
    assert not status.cached and status.path == path


# ------------------------------------------------------------------------------------- the distillation recovery

#: The shared construction with two epochs of distillation over twice the calibration budget.
DISTILL = dataclasses.replace(SHARED, distill_epochs=2, distill_tokens=6000, distill_lr=3e-3, distill_batch=4)


def direct_kl(dense, moe, examples) -> float:
    """KL(dense ‖ MoE) per token, one unpadded row at a time with torch's kl_div (an implementation independent of
    the recovery's padded batches)."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([list(example)])
            teacher = torch.log_softmax(dense(ids).logits[0].double(), -1)
            student = torch.log_softmax(moe(ids).logits[0].double(), -1)
            total += float(torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="sum"))
            tokens += len(example)
    return total / tokens


@pytest.fixture(scope="module")
def distilled():
    dense = dense_llama()
    tokenizer = tiny_tokenizer()
    return dense, moefy(dense, tokenizer, calibration_rows(), SHARED), moefy(dense, tokenizer, calibration_rows(),
                                                                               DISTILL)


def test_distillation_trains_only_the_down_projections_and_lowers_the_held_out_kl(distilled):
    from sparcom.zoo.moe_distill import down_parameters

    dense, plain, result = distilled
    stats = result.recovery
    assert stats["distill_kept"] == 1 and stats["distill_heldout_kl_after"] < stats["distill_heldout_kl_before"]
    assert stats["distill_steps"] == 2 * -(-len(held_and_train(result)[1]) // 4)
    trained = {id(p) for p in down_parameters(result.model)}
    names = {name for name, p in result.model.named_parameters() if id(p) in trained}
    assert names and all(n.endswith(("experts.down_proj", "shared_mlp.output_linear.weight")) for n in names)
    before, after = plain.model.state_dict(), result.model.state_dict()
    for name in before:  # everything else bit for bit, the trained ones all moved
        assert torch.equal(before[name], after[name]) == (name not in names), name
    held, _ = held_and_train(result)
    assert direct_kl(dense, result.model, held) == pytest.approx(stats["distill_heldout_kl_after"], rel=1e-4)
    assert direct_kl(dense, plain.model, held) == pytest.approx(stats["distill_heldout_kl_before"], rel=1e-4)
    assert all(p.requires_grad for p in result.model.parameters())  # gradients as they were


def held_and_train(result) -> tuple[list, list]:
    """The recovery's held-out and training rows, as the builder chose them."""
    from sparcom.zoo.moefy import HELD_OUT_EVERY

    settings = result.settings
    examples = calibration_examples(calibration_rows(), tiny_tokenizer(), settings.distill_tokens)
    return ([e for i, e in enumerate(examples) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1],
            [e for i, e in enumerate(examples) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1])


def test_distillation_is_deterministic_and_refused_when_held_out_rows_get_worse(distilled):
    dense, plain, result = distilled
    again = moefy(dense, tiny_tokenizer(), calibration_rows(), DISTILL)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert again.recovery["distill_heldout_kl_after"] == result.recovery["distill_heldout_kl_after"]
    # A learning rate far too large makes held-out rows worse: the trained weights are not kept.
    wild = moefy(dense, tiny_tokenizer(), calibration_rows(), dataclasses.replace(DISTILL, distill_lr=50.0))
    assert wild.recovery["distill_kept"] == 0
    assert wild.recovery["distill_heldout_kl_after"] > wild.recovery["distill_heldout_kl_before"]
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, wild.model.state_dict()[name]), name


def test_distillation_settings_are_checked():
    with pytest.raises(SparcomError, match="--distill-epochs"):
        dataclasses.replace(DISTILL, distill_epochs=-1).check()
    with pytest.raises(SparcomError, match="--distill-tokens"):
        dataclasses.replace(DISTILL, distill_tokens=1000).check()


def test_two_distilled_builds_write_the_same_bytes(dense_folder, tmp_path):
    """The distillation's record holds no timing (those go into the manifest's build seconds), so two builds in one
    process write the same files, the split record included."""
    folder, rows = dense_folder
    settings = dataclasses.replace(REFIT, distill_epochs=1, distill_tokens=6000, distill_lr=3e-3)
    first = build_moe(folder, tmp_path / "a", settings, calibration=rows, progress=False)
    second = build_moe(folder, tmp_path / "b", settings, calibration=rows, progress=False)
    files = [json.loads((path / MANIFEST).read_text())["files"] for path in (first, second)]
    assert files[0] == files[1] and SPLIT_FILE in files[0]
    assert "distillation" in json.loads((first / MANIFEST).read_text())["build_seconds"]
