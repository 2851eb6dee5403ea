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


def _rows_per_category(path, copies: int = 3):
    """The tiny dataset repeated ``copies`` times with distinct ids and instructions (3 AI + 3 human per category)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    out = path.parent / "more-rows.jsonl"
    with out.open("w") as handle:
        for copy in range(copies):
            for row in lines:
                handle.write(json.dumps({**row, "id": f"{row['id']}-{copy}",
                                         "instruction": f"{row['instruction']} (variant {copy})"}) + "\n")
    return out


def test_identify_with_probing_writes_curves_with_the_lexical_baseline_and_the_report_shows_them(cli, dataset,
                                                                                                 tmp_path):
    from sparcom.report.html import render_html

    folder = tmp_path / "tiny-model"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    rows = _rows_per_category(dataset)
    done = cli("profile", str(folder), "--data", str(rows), "--out", str(tmp_path / "run"), "--group-by",
               "instruction", "--batch-size", "6", "--quiet")
    assert done.returncode == 0, done.stderr
    done = cli("identify", str(tmp_path / "run"), "--out", str(tmp_path / "ids"), "--probing", "--folds", "3",
               "--random-sets", "5", "--sweep", "off", "--no-plots")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "ids" / "summary.json").read_text())
    probing = summary["validity"]["neuron"]["probing"]
    assert probing["folds"] == 3 and probing["evaluated"] == 36
    assert {"contrast", "percentile", "mean-difference", "l1-probe", "lexical"} <= set(probing["methods"])
    assert probing["methods"]["lexical"]["family"] == "lexical"
    assert summary["settings"]["validity"]["probing"] is True
    table = (tmp_path / "ids" / "tables" / "probing_curves.csv").read_text()
    assert "all lexical" in table and "all components" in table
    page = render_html([tmp_path / "ids"])
    assert "Sparse probing" in page and "contrast: matched sets" in page


def test_identify_without_probing_is_unchanged(cli, dataset, tmp_path):
    from sparcom import identify

    run = profile(wrap_model(tiny_model("llama"), tiny_tokenizer()), _rows_per_category(dataset), tmp_path / "run",
                  ProfileSettings(batch_size=6, group_by="instruction"), progress=False)
    result = identify(run, folds=3, random_sets=5, sweep=False)
    assert result.probing == {}
    assert "probing" not in result.summary()["settings"]["validity"]
    assert "probing" not in result.summary()["validity"]["neuron"]


def test_bags_that_are_not_the_run_tokens_are_one_clear_error(dataset, tmp_path):
    from sparcom.analysis.probing import lexical_table
    from sparcom.errors import SparcomError

    tokenizer = tiny_tokenizer()
    run = profile(wrap_model(tiny_model("llama"), tokenizer), dataset, tmp_path / "run",
                  ProfileSettings(batch_size=4, group_by="instruction"), progress=False)
    groups = load_groups(run.counts, run.manifest["groups"], "neuron")
    rows = read_rows(dataset)
    table = lexical_table(token_bags(rows, tokenizer, "chat", FormatSettings("instruction")), groups)
    np.testing.assert_array_equal(table.counts.sum(axis=1), groups.tokens)
    with pytest.raises(SparcomError, match="tokenizer, template or scope differ"):
        lexical_table(token_bags(rows, tokenizer, "chat", FormatSettings("prompt")), groups)
    with pytest.raises(SparcomError, match="dataset changed"):
        lexical_table(token_bags(rows[1:], tokenizer, "chat", FormatSettings("instruction")), groups)
