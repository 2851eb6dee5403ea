"""The HTML report from a tiny study: self-contained, every section from the summaries, numbers as in summary.json,
cards as computed directly from the run, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_study import build_study

from sparcom.errors import SparcomError
from sparcom.report.html import render_html, render_report
from sparcom.report.widgets import scale_colour


@pytest.fixture(scope="module")
def study(tiny_study) -> dict[str, Path]:
    return tiny_study


@pytest.fixture(scope="module")
def page(study) -> str:
    out = study["run"].parent / "report.html"
    render_report([study["run"].parent], out, overwrite=True)
    return out.read_text(encoding="utf-8")


class Elements(HTMLParser):
    """Every element's tag, attributes and direct text, and any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.stack: list[int] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("#", "data:")):
                self.external.append(f"{tag} {key}={value}")
        if tag == "link":
            self.external.append(f"link {attrs}")
        self.elements.append((tag, attrs, []))
        if tag not in ("br", "img", "input", "meta", "line", "rect", "circle", "polyline"):
            self.stack.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self.stack:
            index = self.stack.pop()
            if self.elements[index][0] == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.elements[self.stack[-1]][2].append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def by_id(parsed: Elements, ident: str):
    return [e for e in parsed.elements if e[1].get("id") == ident]


def test_self_contained(page):
    parsed = parse(page)
    assert parsed.external == []
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert page.count("<style>") == 1 and page.count("<script>") == 1


def test_sections_present(page, study):
    parsed = parse(page)
    ids = {e[1]["id"] for e in parsed.elements if e[0] == "section"}
    for expected in ("overview", "provenance", "identify-identify-base-neuron-sets", "identify-identify-base-neuron-layers",
                     "identify-identify-base-neuron-overlap", "identify-identify-base-neuron-sweep",
                     "identify-identify-base-neuron-validity", "identify-identify-base-neuron-cards",
                     "compare-compare-neuron-changes", "ablate-ablate-neurons-matrix", "ablate-ablate-baseline"):
        assert expected in ids, expected
    assert "Validity measures: not computed." in page
    assert "Exact-match accuracy: not computed." in page
    assert "AI / human halves: not computed." in page


def _cells(parsed: Elements, table_id: str) -> list[list[str]]:
    """The data-v values of each row of the table with ``table_id`` (a heatmap or a data table)."""
    start = next(i for i, e in enumerate(parsed.elements) if e[1].get("id") == table_id)
    rows, current = [], None
    for tag, attrs, _ in parsed.elements[start + 1:]:
        if tag == "table":
            break
        if tag == "tr":
            current = []
            rows.append(current)
        elif tag == "td" and current is not None and "data-v" in attrs:
            current.append(attrs["data-v"])
    return [r for r in rows if r]


def test_numbers_match_summaries(page, study):
    parsed = parse(page)
    summary = json.loads((study["identify"] / "summary.json").read_text())
    neuron = summary["kinds"]["neuron"]
    cats = summary["data"]["categories"]
    rows = _cells(parsed, "identify-identify-base-neuron-summary")
    assert [int(r[0]) for r in rows] == [neuron["selected"][c] for c in cats]
    assert [int(r[1]) for r in rows] == [neuron["unique"][c] for c in cats]
    general = [e for e in parsed.elements if e[1].get("data-stat") == "general"]
    assert "".join(general[0][2]).replace(",", "") == str(neuron["general"])
    jaccard = _cells(parsed, "identify-identify-base-neuron-jaccard")
    expected = neuron["overlap"]["jaccard"]
    for a in range(len(cats)):
        for b in range(len(cats)):
            value = expected[a][b]
            assert (jaccard[a][b] == "") if value is None else float(jaccard[a][b]) == pytest.approx(value)
    causal = json.loads((study["ablate"] / "summary.json").read_text())
    delta = _cells(parsed, "ablate-ablate-neurons-delta")
    np.testing.assert_allclose(np.array(delta, dtype=float), np.array(causal["targets"]["neurons"]["delta_nll"]))
    baseline = _cells(parsed, "ablate-ablate-baseline-table")
    assert [float(r[-1]) for r in baseline] == pytest.approx([causal["baseline"][c]["nll"] for c in causal["data"]["categories"]])
    compared = json.loads((study["compare"] / "summary.json").read_text())
    changes = _cells(parsed, "compare-compare-neuron-changes-table")
    assert [int(r[2]) for r in changes] == [compared["kinds"]["neuron"]["per_category"][c]["retained"] for c in cats]


def test_layer_heatmap_matches_table(page, study):
    import csv

    parsed = parse(page)
    cells = _cells(parsed, "identify-identify-base-neuron-layer-heat")
    with (study["identify"] / "tables" / "selected_per_layer.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    cats = json.loads((study["identify"] / "summary.json").read_text())["data"]["categories"]
    for i, category in enumerate(cats):
        expected = [int(r["selected"]) for r in rows if r["category"] == category]
        assert [int(float(v)) for v in cells[i]] == expected


def test_cards_match_direct_ranking(page, study):
    """The frequency cards of each category are its set's members with the highest p, computed plainly here."""
    from safetensors.numpy import load_file

    counts = load_file(str(study["run"] / "counts.safetensors"))
    masks = load_file(str(study["identify"] / "selection.safetensors"))
    cats = json.loads((study["identify"] / "summary.json").read_text())["data"]["categories"]
    parsed = parse(page)
    for c in cats:
        members = []
        for layer in (0, 1):
            p = counts[f"neuron/{c}/{layer}"] / counts[f"tokens/{c}"]
            for index in np.flatnonzero(masks[f"neuron/{c}/{layer}"]):
                members.append((-float(p[index]), layer, int(index)))
        members.sort()
        expected = [f"neuron/{layer}/{index}" for _, layer, index in members[:6]]
        group = next(i for i, e in enumerate(parsed.elements) if e[1].get("class") == "card-group"
                 and e[1].get("data-cat") == c and e[1].get("data-score") == "frequency")
        shown = []
        for tag, attrs, _ in parsed.elements[group + 1:]:
            if attrs.get("class") == "card-group":
                break
            if tag == "article":
                shown.append(attrs["data-component"])
        assert shown == expected, c


def test_card_examples_come_from_the_examples_pass(page, study):
    document = json.loads((study["examples"] / "examples.json").read_text())
    entry = next(c for c in document["components"] if c["events"])
    event = entry["events"][0]
    assert f'data-component="{entry["key"]}"' in page
    assert f'<span class="rid">{event["row"]}</span>' in page


def test_missing_outputs_say_not_computed(study, tmp_path):
    page = render_html([study["identify"]])
    assert "Cards: not computed." not in page  # the source run is readable at its recorded path
    shutil.copytree(study["identify"], tmp_path / "moved")
    summary = json.loads((tmp_path / "moved" / "summary.json").read_text())
    summary["data"]["run"] = str(tmp_path / "gone")
    (tmp_path / "moved" / "summary.json").write_text(json.dumps(summary))
    page = render_html([tmp_path / "moved"])
    assert "Cards: not computed." in page
    assert "Causal check: not computed." in page
    assert "ablate-ablate" not in page


def test_bad_inputs_are_one_line_errors(study, tmp_path):
    with pytest.raises(SparcomError, match="not a sparcom output"):
        render_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(SparcomError, match="not a folder"):
        render_report([tmp_path / "nope"], tmp_path / "r.html")
    broken = tmp_path / "broken"
    shutil.copytree(study["ablate"], broken)
    (broken / "summary.json").write_text('{"format": "sparcom-causal", ')
    with pytest.raises(SparcomError, match=r"summary.json: malformed JSON") as info:
        render_report([broken], tmp_path / "r.html")
    assert "\n" not in str(info.value)
    (broken / "summary.json").write_text('{"format": "something-else"}')
    with pytest.raises(SparcomError, match="is not one sparcom writes"):
        render_report([broken], tmp_path / "r.html")
    (broken / "summary.json").write_text('{"format": "sparcom-causal", "targets": {"neurons": {"ablated": 3}}}')
    with pytest.raises(SparcomError, match="re-run the step that wrote it"):
        render_report([broken], tmp_path / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # nothing half-written


def test_atomic_replace(study, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("old")
    with pytest.raises(SparcomError, match="exists; choose another --out or pass --overwrite"):
        render_report([study["identify"]], out)
    assert out.read_text() == "old"
    render_report([study["identify"]], out, overwrite=True)
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    with pytest.raises(SparcomError, match="is a folder"):
        render_report([study["identify"]], tmp_path)


def test_extra_results_are_rendered_generically(study, tmp_path):
    """New statistics in a summary (validity, normalised matrices) appear without new code."""
    identify = tmp_path / "identify"
    shutil.copytree(study["identify"], identify)
    summary = json.loads((identify / "summary.json").read_text())
    summary["kinds"]["neuron"]["validity"] = {"decoding": {"accuracy": 0.8125, "chance": 1 / 6},
                                              "cross_source_jaccard": {"cls": 0.4375}}
    (identify / "summary.json").write_text(json.dumps(summary))
    ablate = tmp_path / "ablate"
    shutil.copytree(study["ablate"], ablate)
    causal = json.loads((ablate / "summary.json").read_text())
    causal["targets"]["neurons"]["normalised_delta"] = [[0.123456 + a + j for j in range(6)] for a in range(6)]
    (ablate / "summary.json").write_text(json.dumps(causal))
    page = render_html([identify, ablate])
    assert "0.812" in page and "0.438" in page and "Validity measures: not computed." not in page
    assert "normalised delta" in page and 'data-v="0.123456"' in page


def test_colour_scale_direct():
    assert scale_colour(0.0) == "#440154" and scale_colour(1.0) == "#fde725"
    # halfway between the 2nd and 3rd anchors (t = 0.375): each channel is the plain average
    a, b = (0x3B, 0x52, 0x8B), (0x21, 0x91, 0x8C)
    expected = "#" + "".join(f"{round((x + y) / 2):02x}" for x, y in zip(a, b, strict=True))
    assert scale_colour(0.375) == expected


def test_moe_study_renders(tmp_path):
    from sparcom.analysis.frequencies import kind_frequencies
    from sparcom.artifacts.run import load_run
    from sparcom.report import plots

    paths = build_study(tmp_path, moe=True)
    run = load_run(paths["run"])
    freqs = kind_frequencies(run.counts, run.categories, "expert")
    (paths["identify"] / "plots").mkdir(exist_ok=True)
    plots.layer_expert_heatmaps({c: freqs.layout.split(freqs.p[i]) for i, c in enumerate(run.categories)},
                                run.categories, "expert frequency", "f", paths["identify"] / "plots" / "expert_frequency.png")
    page = render_html([tmp_path])
    for kind in ("neuron", "expert", "expert_neuron", "shared_neuron"):
        assert f"identify-identify-base-{kind}-sets" in page, kind
    assert "compare-compare-expert-routing" in page
    assert re.search(r'data-component="expert/\d+/\d+"', page)
    assert 'data:image/png;base64,' in page  # the layer × expert figures, inline
    assert paths["compare"].is_dir()


def test_partial_studies(study, tmp_path):
    """A run alone, or two identify outputs with the same folder name, still make a page with unique anchors."""
    page = render_html([study["run"]])
    assert "Selection (ISNs / ISEs): not computed." in page
    for side in ("a", "b"):
        shutil.copytree(study["identify"], tmp_path / side / "identify")
    page = render_html([tmp_path / "a" / "identify", tmp_path / "b" / "identify"])
    ids = re.findall(r'<section id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert "identify-a-identify-neuron-sets" in ids and "identify-b-identify-neuron-sets" in ids
    assert "Base → tuned comparison: not computed." in page


def assert_identify_numbers(parsed: Elements, folder: Path, prefix: str) -> None:
    """Every kind's per-category table and headline counts on the page equal the typed identify summary."""
    from sparcom.artifacts.summaries import read_identify

    summary = read_identify(folder)
    for kind, k in summary.kinds.items():
        rows = _cells(parsed, f"{prefix}-{kind}-summary")
        assert [int(r[0]) for r in rows] == [k.selected[c] for c in summary.categories], kind
        assert [int(r[1]) for r in rows] == [k.unique[c] for c in summary.categories], kind
        shares = [(float(r[2]) if r[2] else None, float(r[3]) if r[3] else None) for r in rows]
        expected = [(k.shares[f"unique_share_{c}"], k.shares[f"general_share_{c}"]) for c in summary.categories]
        for got, want in zip(shares, expected, strict=True):
            for a, b in zip(got, want, strict=True):
                assert (a is None and math.isnan(b)) if a is None else a == pytest.approx(b), kind


def test_moe_report_numbers_are_the_typed_results(tmp_path):
    """The MoE study's page: every kind's sets and the expert comparison equal the typed summaries."""
    from sparcom.artifacts.summaries import read_compare

    paths = build_study(tmp_path, moe=True)
    parsed = parse(render_html([tmp_path]))
    assert_identify_numbers(parsed, paths["identify"], "identify-identify-base")
    compared = read_compare(paths["compare"])
    for kind, k in compared.kinds.items():
        rows = _cells(parsed, f"compare-compare-{kind}-changes-table")
        assert [[int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])] for r in rows] == [
            [k.per_category[c].base, k.per_category[c].tuned, k.per_category[c].retained, k.per_category[c].gained,
             k.per_category[c].lost] for c in compared.categories], kind
    assert {"expert", "expert_neuron"} <= set(compared.kinds)


@pytest.fixture(scope="module")
def validity_study(tmp_path_factory) -> dict[str, Path]:
    """A real grouped tiny run (profiled per instruction, AI and human rows) and its identify with validity."""
    import torch
    from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

    from sparcom import ProfileSettings, identify, profile, wrap_model

    root = tmp_path_factory.mktemp("validity-report")
    rows = [(c, f"{ins} (variant {k})" if k else ins, text, out) for k in range(4) for c, ins, text, out in ROWS]
    data = write_dataset(root / "rows.jsonl", rows)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = wrap_model(tiny_model("llama", seed=1), tiny_tokenizer(), "tiny-grouped")
        run = profile(loaded, data, root / "run", ProfileSettings(batch_size=8, group_by="instruction"),
                      progress=False)
        identify(run, rule="contrast", epsilon=0.05, out=root / "identify", plots=False, folds=2, random_sets=20)
    finally:
        torch.set_num_threads(previous)
    return {"run": root / "run", "identify": root / "identify"}


def test_validity_report_numbers_are_the_typed_results(validity_study):
    from sparcom.artifacts.summaries import read_identify

    summary = read_identify(validity_study["identify"])
    assert summary.validity, summary.validity_note
    parsed = parse(render_html([validity_study["identify"]]))
    for kind, v in summary.validity.items():
        h = v.headline
        rows = _cells(parsed, f"identify-identify-{kind}-validity-decoding")
        assert len(rows) == len(h.decoders) > 0
        for row, d in zip(rows, h.decoders.values(), strict=True):
            expected = (d.accuracy, d.ci_low, d.ci_high, d.random_mean, d.p_value, d.matched_random_mean,
                        d.matched_p_value)
            assert [float(x) for x in row] == pytest.approx(expected), kind
        rest = _cells(parsed, f"identify-identify-{kind}-validity-headline")[0]
        for shown, value in zip(rest, (h.all_components, h.chance, h.stability, h.cross_source_within,
                                       h.cross_source_across), strict=True):
            assert (shown == "") if math.isnan(value) else float(shown) == pytest.approx(value), kind
