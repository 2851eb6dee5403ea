"""Batch size and padding side do not change the counts of absolute-position families.

With rotary positions a constant shift of every position id cancels in attention, so a RoPE model cannot tell
whether left-padded rows got their positions from the padding mask or from a plain arange. Learned absolute
position embeddings (GPT-2, OPT) can: these runs are what would catch a broken position-id path. GPT-NeoX
(partial rotary, no position embedding) is run too, as the third family with its own layout.
"""

import pytest
from oracle import reference_counts
from tiny import tiny_model, tiny_tokenizer

from sparcom import ProfileSettings, profile, wrap_model
from sparcom.data.batching import collate
from sparcom.data.formatting import ROLE_PROMPT, ROLE_USER, EncodedExample

FAMILIES = ["gpt2", "opt", "gpt_neox"]
SHAPES = [(1, "right"), (1, "left"), (3, "left"), (8, "left"), (8, "right")]


def neuron_disagreement(counts, reference) -> tuple[int, int]:
    """(differing counted events, total counted events) of the engine's neuron counts against the reference."""
    keys = sorted(k for k in reference if k.startswith("neuron/"))
    assert keys and {k for k in counts if k.startswith("neuron/")} == set(keys)
    diff = sum(int(abs(counts[k] - reference[k]).sum()) for k in keys)
    total = sum(int(reference[k].sum()) for k in keys)
    return diff, total


@pytest.mark.parametrize("scope", ["instruction", "all"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_batch_size_and_padding_side_match_the_unpadded_reference(model_type, scope, dataset, tmp_path):
    """Every batch shape gives the counts of one-example-at-a-time plain hooks (no padding at all)."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type, seed=1)
    reference = reference_counts(model, tokenizer, dataset, scope, chat=True)
    loaded = wrap_model(model, tokenizer)
    for batch_size, side in SHAPES:
        run = profile(loaded, dataset, tmp_path / f"{batch_size}{side}",
                      ProfileSettings(scope=scope, batch_size=batch_size, padding_side=side), progress=False)
        for cat in run.categories:
            assert int(run.counts[f"tokens/{cat}"]) == int(reference[f"tokens/{cat}"]), (batch_size, side, cat)
        diff, total = neuron_disagreement(run.counts, reference)
        assert total > 0
        assert diff / total < 1e-4, (model_type, batch_size, side, diff, total)
        if batch_size > 1:
            assert run.manifest["padding"]["waste"] > 0  # the padded shapes really were padded


def test_collate_gives_every_row_positions_from_zero_whichever_side_is_padded():
    """Real tokens get 0..n-1 on both sides; left and right padding differ only by where the pads sit."""
    def example(index: int, n: int) -> EncodedExample:
        roles = tuple(ROLE_PROMPT if k == 0 else ROLE_USER for k in range(n))  # first token is template
        return EncodedExample(row_index=index, category="qa", input_ids=tuple(range(10, 10 + n)), roles=roles)

    examples = [example(i, n) for i, n in enumerate((5, 2, 4))]
    for side in ("left", "right"):
        batch = collate(examples, scope="instruction", pad_token_id=0, padding_side=side)
        assert batch.input_ids.shape == (3, 5)
        for row, one in enumerate(examples):
            real = batch.attention_mask[row].bool()
            pads = 5 - len(one)
            assert real.tolist() == ([False] * pads + [True] * len(one) if side == "left"
                                     else [True] * len(one) + [False] * pads), (side, row)
            assert batch.position_ids[row][real].tolist() == list(range(len(one))), (side, row)
            assert batch.input_ids[row][real].tolist() == list(one.input_ids)
            assert batch.counted[row][real].tolist() == [False] + [True] * (len(one) - 1)
            assert not batch.counted[row][~real].any()  # padding is never counted
