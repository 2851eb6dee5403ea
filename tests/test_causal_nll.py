"""Teacher-forced NLL of the reference responses equals a direct computation from the full model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from causal_tiny import one_thread, tiny_moe  # noqa: F401
from tiny import ROWS, tiny_model, tiny_tokenizer

from sparcom.causal.interventions import ablate
from sparcom.causal.nll import category_means, encode_scored
from sparcom.causal.scoring import example_nll
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites


def rows() -> list[InstructionRow]:
    return [InstructionRow(f"t-{i:03d}", c, "ai", "tests", ins, text, out, "CC0-1.0")
            for i, (c, ins, text, out) in enumerate(ROWS)]


def direct_nll(model, example) -> tuple[float, int]:
    """Σ −log p(x_t | x_<t) over the response tokens, from one unpadded forward pass."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    total, count = 0.0, 0
    for t in range(1, len(example)):
        if example.scored[t]:
            total -= float(logprobs[t - 1, example.input_ids[t]])
            count += 1
    return total, count


@pytest.fixture(scope="module", params=["llama", "mixtral"])
def model(request):
    return tiny_model("llama") if request.param == "llama" else tiny_moe("mixtral")


@pytest.mark.parametrize("template", ["chat", "raw"])
def test_scored_tokens_are_the_reference_response(template):
    tokenizer = tiny_tokenizer()
    for example, source in zip(encode_scored(rows(), tokenizer, template), rows(), strict=True):
        scored = [t for t, s in zip(example.input_ids, example.scored, strict=True) if s]
        assert tokenizer.decode(scored).strip().endswith(source.output.strip()[-5:])
        assert example.scored[-1] and not example.scored[0]
        assert example.tokens == sum(example.scored)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_nll_equals_a_direct_computation(model, batch_size):
    examples = encode_scored(rows(), tiny_tokenizer(), "chat")
    plan = length_batches([len(e) for e in examples], batch_size)
    assert sorted(i for batch in plan for i in batch) == list(range(len(examples)))
    sums, counts = example_nll(model, examples, plan, pad_id=0)
    for i, example in enumerate(examples):
        total, count = direct_nll(model, example)
        assert counts[i] == count == example.tokens
        assert sums[i] == pytest.approx(total, rel=1e-5, abs=1e-4)
    means = category_means(examples, sums, counts, ["cls", "math"])
    cls = [i for i, e in enumerate(examples) if e.category == "cls"]
    assert means["cls"]["nll"] == pytest.approx(sums[cls].sum() / counts[cls].sum())
    assert means["cls"]["instructions"] == 2 and means["cls"]["tokens"] == int(counts[cls].sum())


def test_nll_under_ablation(model):
    examples = encode_scored(rows(), tiny_tokenizer(), "chat")
    plan = length_batches([len(e) for e in examples], 4)
    clean, _ = example_nll(model, examples, plan, pad_id=0)
    sites = model_sites(model)
    with ablate(model, ComponentSet({}, {})):
        same, _ = example_nll(model, examples, plan, pad_id=0)
    assert np.array_equal(same, clean)  # identical batches: bit-identical
    layer = min([*sites.dense, *sites.moe])
    kind, shape = ("neuron", sites.shape("neuron", layer)) if layer in sites.dense else \
        ("expert_neuron", sites.shape("expert_neuron", layer))
    everything = np.argwhere(np.ones(shape, dtype=bool))
    with ablate(model, ComponentSet({kind: {layer: everything[:, 0] if len(shape) == 1 else everything}},
                                {kind: {layer: shape}})):
        changed, _ = example_nll(model, examples, plan, pad_id=0)
    assert np.abs(changed - clean).max() > 1e-3
    again, _ = example_nll(model, examples, plan, pad_id=0)
    assert np.array_equal(again, clean)


def test_rows_too_long_or_without_output_are_refused():
    tokenizer = tiny_tokenizer()
    with pytest.raises(SparcomError, match="exceed the model's limit"):
        encode_scored(rows(), tokenizer, "chat", max_length=10)
    empty = InstructionRow("e", "qa", "ai", "tests", "Say nothing.", "", "", "CC0-1.0")
    with pytest.raises(SparcomError, match="no tokens to score"):
        encode_scored([empty], tokenizer, "chat")
