"""The report in a real browser (headless Chromium over the DevTools protocol): it renders without console errors,
its numbers are those of summary.json, the filters, sorting, rankings and hover values work; screenshots are kept."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from browser import INSTALL_HINT, Browser, chromium_path

from sparcom.report.html import render_report

pytestmark = pytest.mark.browser

#: Where a copy of the screenshots is kept for a person to look at (printed by the test).
SCREENSHOTS = Path(tempfile.gettempdir()) / "sparcom-report-screenshots"


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.skip(INSTALL_HINT)
    pytest.importorskip("websocket", reason="websocket-client is missing: pip install -e '.[test]'")
    with Browser(1400, 1000) as opened:
        yield opened


@pytest.fixture(scope="module")
def loaded(browser, tiny_study):
    out = tiny_study["run"].parent / "report.html"
    render_report([tiny_study["run"].parent], out, overwrite=True)
    milliseconds = browser.open(out)
    return {"browser": browser, "page": out, "load_ms": milliseconds, **tiny_study}


def visible(browser, selector: str) -> int:
    return browser.evaluate(f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                            ".filter(e => e.getClientRects().length > 0).length")


def test_renders_without_errors(loaded):
    b = loaded["browser"]
    assert b.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
    assert b.errors == []
    assert loaded["load_ms"] < 10_000


def test_dom_matches_summaries(loaded):
    b = loaded["browser"]
    identify = json.loads((loaded["identify"] / "summary.json").read_text())
    neuron = identify["kinds"]["neuron"]
    ids = b.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
    for expected in ("overview", "provenance", "identify-identify-base-neuron-sets",
                     "identify-identify-base-neuron-cards", "compare-compare-neuron-changes",
                     "ablate-ablate-neurons-matrix"):
        assert expected in ids
    general = b.evaluate("document.querySelector('[data-stat=general]').textContent")
    assert int(general.replace(",", "")) == neuron["general"]
    selected = b.evaluate("Array.from(document.querySelectorAll('#identify-identify-base-neuron-summary tbody tr'))"
                          ".map(r => parseInt(r.cells[1].getAttribute('data-v')))")
    assert selected == [neuron["selected"][c] for c in identify["data"]["categories"]]
    causal = json.loads((loaded["ablate"] / "summary.json").read_text())
    delta = b.evaluate("Array.from(document.querySelectorAll('#ablate-ablate-neurons-delta tbody tr'))"
                       ".map(r => Array.from(r.querySelectorAll('td')).map(td => parseFloat(td.getAttribute('data-v'))))")
    expected = causal["targets"]["neurons"]["delta_nll"]
    assert [[round(v, 9) for v in row] for row in delta] == [[round(v, 9) for v in row] for row in expected]


def test_category_and_layer_filters(loaded):
    b = loaded["browser"]
    cards_before = visible(b, "article.card")
    code_cards = visible(b, "article.card[data-cat=code]")
    assert cards_before > code_cards > 0
    rows_before = visible(b, "tr[data-cat=code]")
    assert rows_before > 0
    b.evaluate("document.querySelector('input[data-filter-cat=code]').click()")
    assert visible(b, "article.card[data-cat=code]") == 0
    assert visible(b, "tr[data-cat=code]") == 0
    assert visible(b, "article.card") == cards_before - code_cards
    assert "1 category hidden" in b.evaluate("document.getElementById('filter-status').textContent")
    b.evaluate("(() => { const m = document.getElementById('layer-max'); m.value = 0;"
               " m.dispatchEvent(new Event('input')); })()")
    assert visible(b, "article.card[data-layer='1']") == 0
    assert visible(b, "#identify-identify-base-neuron-layer-heat td[data-layer='1']") == 0
    assert visible(b, "#identify-identify-base-neuron-layer-heat td[data-layer='0']") > 0
    b.evaluate("document.getElementById('reset-filters').click()")
    assert visible(b, "article.card") == cards_before
    assert b.errors == []


def test_sorting_changes_the_order(loaded):
    b = loaded["browser"]
    table = "#identify-identify-base-neuron-sweep-table"
    column = "Array.from(document.querySelectorAll('" + table + " tbody tr')).map(r => parseFloat(r.cells[0]" \
             ".getAttribute('data-v')))"
    before = b.evaluate(column)
    assert before == sorted(before)
    b.evaluate(f"document.querySelector('{table} thead th').click()")
    after = b.evaluate(column)
    assert after == sorted(before, reverse=True) and after != before
    b.evaluate(f"document.querySelector('{table} thead th').click()")
    assert b.evaluate(column) == sorted(before)


def test_ranking_toggle_and_hover(loaded):
    b = loaded["browser"]
    assert visible(b, ".card-group[data-score=margin]") > 0
    assert visible(b, ".card-group[data-score=frequency]") == 0
    b.evaluate("document.querySelector('input[data-filter-cat=code]').click()")
    b.evaluate("document.querySelector('button[data-score-button=frequency]').click()")
    assert visible(b, ".card-group[data-score=margin]") == 0
    assert visible(b, ".card-group[data-score=frequency]") > 0
    assert visible(b, ".card-group[data-score=frequency] article.card") > 0
    assert visible(b, "article.card[data-cat=code]") == 0  # cards shown later obey the filters too
    b.evaluate("document.querySelector('input[data-filter-cat=code]').click()")
    assert visible(b, "article.card[data-cat=code]") > 0
    b.evaluate("document.querySelector('button[data-score-button=margin]').click()")
    tip = b.evaluate("(() => { const td = document.querySelector('#ablate-ablate-neurons-delta td[data-tip]');"
                     " td.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
                     " const t = document.querySelector('.tip');"
                     " return [t.style.display, t.textContent, td.getAttribute('data-tip')]; })()")
    assert tip[0] == "block" and tip[1] == tip[2] and "ΔNLL" in tip[1]


def test_own_category_examples_open_on_demand(loaded):
    b = loaded["browser"]
    selector = "article.card details.own"
    assert b.evaluate(f"document.querySelectorAll('{selector} template').length") > 0
    rows = b.evaluate(f"(() => {{ const d = document.querySelector('{selector}'); d.open = true;"
                      " return new Promise(r => setTimeout(() => r([d.querySelectorAll('ol.examples li').length,"
                      " d.querySelectorAll('template').length]), 50)); })()")
    assert rows[0] > 0 and rows[1] == 0
    assert b.errors == []


def test_screenshots(loaded, tmp_path):
    b = loaded["browser"]
    SCREENSHOTS.mkdir(exist_ok=True)
    b.evaluate("document.body.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))")  # hide the hover text
    shots = []
    for name, anchor in (("top", None), ("cards", "identify-identify-base-neuron-cards"),
                         ("causal", "ablate-ablate-neurons-matrix")):
        if anchor:
            b.evaluate(f"document.getElementById('{anchor}').scrollIntoView({{behavior: 'instant'}})")
        path = b.screenshot(tmp_path / f"report-{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
        shots.append(shutil.copy(path, SCREENSHOTS / path.name))
    print("report screenshots:", *shots)
    assert b.errors == []


def test_the_causal_headline_is_the_stored_decision(loaded):
    """"At a glance" and the tests table show the decisions stored in summary.json (the CLI prints the same count)."""
    from sparcom.artifacts.causal import read_causal
    from sparcom.report.verdicts import specific_headline, verdict_label

    b = loaded["browser"]
    tests = read_causal(loaded["ablate"]).targets["neurons"].tests
    specific, tested = specific_headline(tests)
    glance = b.evaluate("document.querySelector('#overview').textContent")
    assert f"Specific in {specific} of {tested} categories" in glance
    shown = b.evaluate("Array.from(document.querySelectorAll('#ablate-ablate-neurons-tests-table tbody tr'))"
                       ".map(r => r.cells[r.cells.length - 1].textContent)")
    assert shown == [verdict_label(t.decision) for t in tests]


def test_moe_page_numbers_in_the_browser(browser, tmp_path):
    """The MoE study's page in the browser: no console error, and each kind's set sizes are the typed results."""
    from report_study import build_study

    from sparcom.artifacts.summaries import read_identify

    paths = build_study(tmp_path, moe=True)
    out = tmp_path / "moe.html"
    render_report([tmp_path], out)
    browser.open(out)
    assert browser.errors == []
    summary = read_identify(paths["identify"])
    for kind, k in summary.kinds.items():
        selected = browser.evaluate(f"Array.from(document.querySelectorAll('#identify-identify-base-{kind}-summary "
                                    "tbody tr')).map(r => parseInt(r.cells[1].getAttribute('data-v')))")
        assert selected == [k.selected[c] for c in summary.categories], kind
