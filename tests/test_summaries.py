"""The typed readers of every output folder: they read back what the steps wrote, and a malformed or old-version
file is one line naming the file and the field (exit 2 through the CLI's error path), never a traceback."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from sparcom.artifacts.causal import read_causal
from sparcom.artifacts.summaries import read_compare, read_identify
from sparcom.cli.app import app
from sparcom.errors import SparcomError


def test_one_header_for_every_summary(tiny_study):
    """The model's name, its layers and the categories sit at one path in every summary."""
    identify, compare, causal = (read_identify(tiny_study["identify"]), read_compare(tiny_study["compare"]),
                                 read_causal(tiny_study["ablate"]))
    assert identify.header.model.name_or_path == compare.header.model.name_or_path == "tiny-base"
    assert causal.header.model.name_or_path == "tiny-base" and compare.tuned.model.name_or_path == "tiny-tuned"
    assert identify.header.model.layers == causal.header.model.layers == 2
    assert identify.header.data.run == str(tiny_study["run"]) and causal.header.data.run is None
    assert identify.categories == compare.categories == causal.evaluated
    assert identify.header.version == compare.header.version == 2
    assert causal.header.version == 4  # the causal decisions' schema (one calibrated decision per claim, pooled first)
    assert identify.header.software["sparcom"] and causal.header.software["sparcom"]


def test_the_stored_decision_is_the_one_the_statistics_made(tiny_study):
    """summary.json keeps each category's decision; the reader gives back the values, not a sentence to parse."""
    causal = read_causal(tiny_study["ablate"])
    written = json.loads((tiny_study["ablate"] / "summary.json").read_text())
    tests = written["targets"]["neurons"]["statistics"]["tests"]
    rows = causal.targets["neurons"].tests
    assert [t["ablated"] for t in tests] == [r.ablated for r in rows]
    for stored, row in zip(tests, rows, strict=True):
        assert stored["decision"]["verdict"] == row.decision.verdict.value
        assert stored["decision"]["damage"] == row.decision.damage.value
        assert stored["decision"]["specificity"] == row.decision.specificity.value
        assert (row.decision.damage.value == "holds") is row.decision.damage_significant
        p = stored["damage_p_holm"]
        assert (p is None and math.isnan(row.damage.p_holm)) or p == row.damage.p_holm
        assert "verdict" not in stored  # no prose in the results
    claims = written["targets"]["neurons"]["statistics"]["claims"]
    assert {k: c.outcome for k, c in causal.targets["neurons"].statistics.claims.items()} == \
        {k: c["outcome"] for k, c in claims.items()}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["targets"]["neurons"].pop("delta_nll"), r"summary.json: field targets.neurons.delta_nll: missing"),
    (lambda d: d["targets"]["neurons"]["statistics"]["tests"][0]["decision"].update(verdict="maybe"),
     r"field targets.neurons.statistics.tests\[0\].decision.verdict: unknown Verdict 'maybe'"),
    (lambda d: d["baseline"]["cls"].update(nll="high"), r"field baseline.cls.nll: expected a number, found str"),
    (lambda d: d.update(version=3), r"sparcom-causal schema version 3, this sparcom reads version 4"),
])
def test_a_malformed_or_old_summary_is_one_line_naming_the_field(tiny_study, tmp_path, edit, message):
    folder = tmp_path / "ablate"
    shutil.copytree(tiny_study["ablate"], folder)
    document = json.loads((folder / "summary.json").read_text())
    edit(document)
    (folder / "summary.json").write_text(json.dumps(document))
    with pytest.raises(SparcomError, match=message) as info:
        read_causal(folder)
    assert "\n" not in str(info.value) and str(info.value).endswith("re-run the step that wrote it")
    result = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


def test_an_identify_summary_missing_a_kind_field_is_refused(tiny_study, tmp_path):
    folder = tmp_path / "identify"
    shutil.copytree(tiny_study["identify"], folder)
    document = json.loads((folder / "summary.json").read_text())
    del document["kinds"]["neuron"]["unique_total"]
    (folder / "summary.json").write_text(json.dumps(document))
    with pytest.raises(SparcomError, match=r"field kinds.neuron.unique_total: missing"):
        read_identify(folder)
