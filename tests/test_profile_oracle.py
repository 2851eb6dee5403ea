"""The engine's counts equal an independent full-activation reference, exactly, for every family and scope."""

import numpy as np
import pytest
from oracle import reference_counts
from tiny import family_configs, tiny_model, tiny_tokenizer

from sparcom import ProfileSettings, profile, wrap_model

FAMILIES = sorted(family_configs(100))
SCOPES = ["instruction", "prompt", "response", "all"]


def assert_same_counts(engine: dict, reference: dict) -> None:
    engine_keys = {k for k in engine if not k.startswith("bootstrap/")}
    assert engine_keys == set(reference)
    for key in sorted(reference):
        np.testing.assert_array_equal(engine[key], reference[key], err_msg=key)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_engine_matches_reference_for_every_scope(model_type, dataset, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(model_type)
    for scope in SCOPES:
        run = profile(wrap_model(model, tokenizer), dataset, tmp_path / scope,
                      ProfileSettings(scope=scope, batch_size=1), progress=False)
        reference = reference_counts(model, tokenizer, dataset, scope, chat=True)
        assert_same_counts(run.counts, reference)
        assert sum(int(run.counts[f"tokens/{c}"]) for c in run.categories) > 0


@pytest.mark.parametrize("scope", SCOPES)
def test_raw_template_with_system_prompt_matches_reference(scope, dataset, tmp_path):
    tokenizer = tiny_tokenizer(chat=False)
    model = tiny_model("llama", seed=3)
    settings = ProfileSettings(scope=scope, template="raw", system_prompt="You are terse.", batch_size=1)
    run = profile(wrap_model(model, tokenizer), dataset, tmp_path / "raw", settings, progress=False)
    assert run.manifest["template"] == "raw"
    assert_same_counts(run.counts, reference_counts(model, tokenizer, dataset, scope, chat=False,
                                                    system_prompt="You are terse."))


def test_chat_system_prompt_matches_reference(dataset, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2", seed=4)
    settings = ProfileSettings(scope="prompt", system_prompt="Be brief.", batch_size=1)
    run = profile(wrap_model(model, tokenizer), dataset, tmp_path / "sys", settings, progress=False)
    assert_same_counts(run.counts, reference_counts(model, tokenizer, dataset, "prompt", chat=True,
                                                    system_prompt="Be brief."))
