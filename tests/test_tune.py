"""``sparcom tune`` on tiny random models: response-only loss, LoRA and full, determinism, outputs, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from sparcom import TuneSettings, tune
from sparcom.cli.app import app
from sparcom.data.formatting import ROLE_RESPONSE, encode_row
from sparcom.data.schema import read_rows
from sparcom.errors import SparcomError
from sparcom.models.loading import load_adapter_folder, load_model
from sparcom.tune.examples import batch_plan, collate, encode_examples, response_loss
from sparcom.tune.lora import materialise_adapter

pytest.importorskip("peft")

# One thread: tiny matmuls on a busy machine slow down by 30x with two threads fighting over cores.
FAST = TuneSettings(epochs=4, lr=1e-2, batch_size=4, max_tokens=None, seed=0, threads=1)


def _base_folder(path: Path, model_type: str = "llama", seed: int = 0) -> Path:
    """A tiny random model (weights scaled as in tiny.py, so LoRA's low-rank updates move the logits) + tokenizer."""
    tiny_model(model_type, seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _base_folder(tmp_path_factory.mktemp("base") / "tiny-llama")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "rows.jsonl")


def _tune(base, data, out, settings=FAST, **kwargs):
    return tune(str(base), data, out, settings, progress=False, allow_hexainst=True, log=lambda m: None, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Loss mask


@pytest.mark.parametrize("template", ["raw", "chat"])
def test_loss_mask_is_exactly_the_response_tokens_and_eos(dataset, template):
    tokenizer = tiny_tokenizer()
    rows = read_rows(dataset)
    examples, dropped = encode_examples(rows, tokenizer, template)
    assert not dropped
    for index, (row, example) in enumerate(zip(rows, examples, strict=True)):
        encoded = encode_row(row, index, tokenizer, template, with_response=True)
        n = len(encoded.input_ids)
        assert example.input_ids[:n] == encoded.input_ids
        assert example.input_ids[n:] == (tokenizer.eos_token_id,)  # one end-of-sequence token, trained on
        assert example.loss_mask[:n] == tuple(bool(r & ROLE_RESPONSE) for r in encoded.roles)
        assert example.loss_mask[n:] == (True,)
        trained = [t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m]
        assert tokenizer.decode(trained[:-1]).strip() == row.output.strip()
        # nothing of the prompt is in the loss
        prompt_ids = encode_row(row, index, tokenizer, template).input_ids
        assert not any(example.loss_mask[: len(prompt_ids) - 1])


def test_collate_predicts_each_response_token_from_the_position_before(dataset):
    tokenizer = tiny_tokenizer()
    examples, _ = encode_examples(read_rows(dataset)[:3], tokenizer, "raw")
    batch = collate(examples, tokenizer.pad_token_id)
    expected = [e.input_ids[t] for e in examples for t in range(1, len(e)) if e.loss_mask[t]]
    assert batch.targets.tolist() == expected
    assert batch.loss_tokens == sum(e.response_tokens for e in examples)
    rows_, cols = batch.predict.nonzero(as_tuple=True)
    assert [int(batch.input_ids[r, c + 1]) for r, c in zip(rows_, cols, strict=True)] == expected
    assert batch.tokens == sum(len(e) for e in examples)


def test_max_tokens_drops_long_rows_instead_of_cutting(dataset):
    tokenizer = tiny_tokenizer()
    rows = read_rows(dataset)
    examples, dropped = encode_examples(rows, tokenizer, "raw", max_tokens=30)
    assert dropped and len(examples) + len(dropped) == len(rows)
    assert all(len(e) <= 30 for e in examples)


def test_batch_plan_covers_every_example_once_and_is_seeded():
    lengths = [5, 40, 7, 33, 12, 9, 50, 1, 8, 20, 13]
    plan = batch_plan(lengths, 3, seed=1, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    assert plan == batch_plan(lengths, 3, seed=1, epoch=0)
    assert plan != batch_plan(lengths, 3, seed=1, epoch=1)


# ---------------------------------------------------------------------------------------------------------
# Training runs


def test_lora_lowers_loss_and_writes_a_loadable_merged_model(base, rows_file, tmp_path):
    tokenizer = tiny_tokenizer()
    examples, _ = encode_examples(read_rows(rows_file), tokenizer, "chat")
    before = response_loss(load_model(str(base)).model, examples, tokenizer.pad_token_id)
    out = tmp_path / "tuned"
    result = _tune(base, rows_file, out)
    loaded = load_model(str(out))
    after = response_loss(loaded.model, examples, tokenizer.pad_token_id)
    assert after < before - 0.5
    record = json.loads((out / "sparcom-tune.json").read_text())
    assert record["method"] == "lora" and record["merged"] and record["seed"] == 0
    assert record["template"] == "chat"
    assert record["data"]["rows"] == len(ROWS) and len(record["data"]["sha256"]) == 64
    assert record["results"]["loss_last_10pct"] < record["results"]["loss_first_10pct"]
    assert set(record["parameters"]["lora_targets"]) >= {"q_proj", "down_proj"}
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert record["adapter"]["sha256"] == result.record["adapter"]["sha256"]
    assert loaded.info["fingerprint"] != load_model(str(base)).info["fingerprint"]
    assert not list(tmp_path.glob(".tuned.*"))  # no temporary folder left behind


def test_full_fine_tuning_lowers_loss(base, rows_file, tmp_path):
    tokenizer = tiny_tokenizer()
    examples, _ = encode_examples(read_rows(rows_file), tokenizer, "raw")
    before = response_loss(load_model(str(base)).model, examples, tokenizer.pad_token_id)
    out = tmp_path / "full"
    _tune(base, rows_file, out, replace(FAST, method="full", lr=2e-3, template="raw"))
    after = response_loss(load_model(str(out)).model, examples, tokenizer.pad_token_id)
    assert after < before - 0.5
    assert not (out / "adapter").exists()


def test_same_seed_same_adapter_and_losses(base, rows_file, tmp_path):
    settings = replace(FAST, epochs=1, grad_accum=2, batch_size=2)
    a = _tune(base, rows_file, tmp_path / "a", settings)
    b = _tune(base, rows_file, tmp_path / "b", settings)
    c = _tune(base, rows_file, tmp_path / "c", replace(settings, seed=1))
    assert a.losses == b.losses
    assert a.record["adapter"]["sha256"] == b.record["adapter"]["sha256"]
    assert c.record["adapter"]["sha256"] != a.record["adapter"]["sha256"]
    assert load_file(tmp_path / "a" / "model.safetensors").keys() == load_file(tmp_path / "b" / "model.safetensors").keys()


def test_max_steps_and_grad_accum(base, rows_file, tmp_path):
    result = _tune(base, rows_file, tmp_path / "s", replace(FAST, max_steps=5, batch_size=2, grad_accum=2))
    assert result.record["results"]["steps"] == 5 and len(result.losses) == 5


def test_from_adapter_reproduces_the_merged_model_bit_for_bit(base, rows_file, tmp_path):
    out = tmp_path / "tuned"
    _tune(base, rows_file, out, replace(FAST, epochs=1))
    again = tmp_path / "again"
    materialise_adapter(str(base), out / "adapter", again, log=lambda m: None)
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    load_model(str(again))


def test_no_merge_writes_tokenizer_and_adapter_that_load_as_the_tuned_model(base, rows_file, tmp_path):
    merged, apart = tmp_path / "merged", tmp_path / "apart"
    _tune(base, rows_file, merged, replace(FAST, epochs=1))
    _tune(base, rows_file, apart, replace(FAST, epochs=1, merge=False))
    assert not (apart / "config.json").exists() and (apart / "adapter_model.safetensors").is_file()
    assert (apart / "tokenizer.json").is_file()
    via_adapter = load_adapter_folder(apart)
    ids = torch.tensor([tiny_tokenizer()("What is the capital of France?")["input_ids"]])
    with torch.no_grad():
        expected = load_model(str(merged)).model(ids).logits
        got = via_adapter.model(ids).logits
    torch.testing.assert_close(got, expected)
    # plain transformers + peft read it too (the adapter names the base's folder)
    plain = AutoModelForCausalLM.from_pretrained(apart).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_training_rows_that_repeat_hexainst_are_refused(base, tmp_path):
    from sparcom.data.hexainst import load_ai_rows

    ai = load_ai_rows(("math",))[:2]
    path = tmp_path / "leak.jsonl"
    path.write_text("".join(json.dumps({**r.to_dict(), "id": f"x-{i}"}) + "\n" for i, r in enumerate(ai)))
    with pytest.raises(SparcomError, match="repeat HexaInst rows"):
        tune(str(base), path, tmp_path / "out", FAST, progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# CLI


def _cli(*args):
    return CliRunner().invoke(app, ["tune", *(str(a) for a in args)])


def test_cli_trains_and_reports(base, rows_file, tmp_path):
    out = tmp_path / "cli"
    result = _cli(base, "--data", rows_file, "--out", out, "--max-steps", "2", "--quiet", "--allow-hexainst")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.jsonl"], "file not found"),
        ([], "--data is required"),
        (["--data", "{rows}", "--method", "qlora"], "--method must be one of lora, full"),
        (["--data", "{rows}", "--lora-r", "0"], "--lora-r must be at least 1"),
        (["--data", "{rows}", "--method", "full", "--no-merge"], "full fine-tuning has none"),
        (["--from-adapter", "nowhere"], "folder not found"),
        (["--from-adapter", "{rows_dir}"], "not a LoRA adapter folder"),
    ],
)
def test_cli_errors_are_one_line(base, rows_file, tmp_path, args, message):
    args = [a.replace("{rows}", str(rows_file)).replace("{rows_dir}", str(rows_file.parent)) for a in args]
    result = _cli(base, *args, "--out", tmp_path / "o", "--quiet", "--allow-hexainst")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not (tmp_path / "o").exists()


def test_cli_refuses_existing_out_and_a_file_as_parent(base, rows_file, tmp_path):
    existing = tmp_path / "exists"
    existing.mkdir()
    result = _cli(base, "--data", rows_file, "--out", existing, "--quiet", "--allow-hexainst")
    assert result.exit_code == 2 and "--overwrite" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _cli(base, "--data", rows_file, "--out", blocker / "model", "--quiet", "--allow-hexainst")
    assert result.exit_code == 2 and "is not a folder" in result.output


def test_cli_overwrite_replaces_an_earlier_tune_folder_only(base, rows_file, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (out / "sparcom-tune.json").write_text("{}")  # an earlier 'sparcom tune' output
    result = _cli(base, "--data", rows_file, "--out", out, "--max-steps", "1", "--quiet", "--allow-hexainst",
                  "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused = _cli(base, "--data", rows_file, "--out", foreign, "--max-steps", "1", "--quiet", "--allow-hexainst",
                   "--overwrite")
    assert refused.exit_code == 2 and "not a sparcom tuned model folder" in refused.output
    assert (foreign / "keep.txt").read_text() == "mine"


def test_cli_bad_base_is_one_line(rows_file, tmp_path):
    result = _cli(tmp_path / "no-model", "--data", rows_file, "--out", tmp_path / "o", "--quiet", "--allow-hexainst")
    assert result.exit_code == 2 and result.output.startswith("error:") and "does not exist" in result.output
