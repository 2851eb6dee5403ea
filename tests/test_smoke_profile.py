"""Real weights: SmolLM2-135M-Instruct, loaded offline from its registry package, profiled and checked exactly."""

import numpy as np
import pytest
from oracle import reference_counts

from sparcom import ProfileSettings, profile
from sparcom.models import builtin
from sparcom.models.loading import load_model

SMOL = builtin.BUILTINS["smollm2-135m-instruct"]
pytestmark = [
    pytest.mark.smoke,
    pytest.mark.skipif(bool(builtin._missing(SMOL)),
                       reason=f"SmolLM2 weights package absent; install with: {SMOL.pip_command}"),
]


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
