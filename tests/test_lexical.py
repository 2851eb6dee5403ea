"""Bags of counted tokens: equal to an independent count from the tokenizer's offsets, and to a real profile's counted
tokens per instruction, in every scope (the instruction's own text included)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from oracle import example_text, token_counted
from tiny import tiny_model, tiny_tokenizer

from sparcom import ProfileSettings, profile, wrap_model
from sparcom.analysis.groups import load_groups
from sparcom.data.formatting import SCOPES, FormatSettings
from sparcom.data.lexical import token_bags
from sparcom.data.schema import read_rows


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("chat", [True, False])
def test_bags_equal_an_independent_count(dataset, scope, chat):
    tokenizer = tiny_tokenizer(chat=chat)
    rows = read_rows(dataset)
    bags = token_bags(rows, tokenizer, "chat" if chat else "raw", FormatSettings(scope))
    for r, line in enumerate(dataset.read_text().splitlines()):
        row = json.loads(line)
        text, roles, prompt_len = example_text(row, tokenizer, chat, None, scope in ("response", "all"))
        encoded = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
        counted = token_counted(encoded["offset_mapping"], roles, prompt_len, scope)
        expected = Counter(t for t, keep in zip(encoded["input_ids"], counted, strict=True) if keep)
        found = {int(bags.token_ids[v]): int(n) for v, n in enumerate(bags.counts[r]) if n}
        assert found == dict(expected), row["id"]
    assert bags.row_ids == tuple(row.id for row in rows)


def test_the_instruction_alone_is_a_part_of_the_user_text(dataset):
    tokenizer = tiny_tokenizer()
    rows = read_rows(dataset)
    user = token_bags(rows, tokenizer, "chat", FormatSettings("instruction")).tokens
    own = token_bags(rows, tokenizer, "chat", FormatSettings("instruction-only")).tokens
    assert (own > 0).all() and (own <= user).all()
    assert (own < user).any()  # rows with an input text have tokens the instruction alone has not


@pytest.mark.parametrize("scope", ["instruction", "instruction-only"])
def test_bag_totals_are_the_profile_counted_tokens_per_instruction(dataset, tmp_path, scope):
    tokenizer = tiny_tokenizer()
    run = profile(wrap_model(tiny_model("llama"), tokenizer), dataset, tmp_path / "run",
                  ProfileSettings(scope=scope, batch_size=3, group_by="instruction"), progress=False)
    groups = load_groups(run.counts, run.manifest["groups"], "neuron")
    bags = token_bags(read_rows(dataset), tokenizer, run.manifest["template"], FormatSettings(scope))
    np.testing.assert_array_equal(bags.tokens[bags.rows_for(groups.labels)], groups.tokens)
