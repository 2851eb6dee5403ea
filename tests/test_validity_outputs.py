"""Validity as the product reports it: identify's validity sections, the rule / ε study, compare with rule test.

The numbers in every output must be exactly what the validity core gives on the run's groups (the core itself is
checked against direct formulas in test_analysis_validity.py); here: the wiring, the files and the notes.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from grouped_runs import by_halves, write_grouped_run
from test_analysis_support import synthetic_counts, write_run
from typer.testing import CliRunner
from validity_data import synthetic_groups

import sparcom
from sparcom.analysis.evidence import NO_GROUPS_NOTE
from sparcom.analysis.groups import load_groups
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.sets import summary_statistics
from sparcom.analysis.validity import validity, validity_sweep
from sparcom.artifacts.run import load_run
from sparcom.artifacts.summaries import read_identify, read_sweep
from sparcom.cli.app import app
from sparcom.report.files import to_json

CATEGORIES = ("cls", "code", "qa", "gen")
FAST = {"folds": 4, "random_sets": 12}


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def grouped(tmp_path_factory) -> Path:
    groups, _ = synthetic_groups(CATEGORIES, layers=3, width=40, per_source=8, specific=3, boost=1.5, seed=4)
    return write_grouped_run(tmp_path_factory.mktemp("grouped") / "run", groups)


def loaded_groups(path: Path):
    run = load_run(path)
    return load_groups(run.counts, run.manifest["groups"], "neuron", run.categories)


@pytest.fixture(scope="module")
def identified(grouped, tmp_path_factory):
    out = tmp_path_factory.mktemp("identify") / "contrast"
    return sparcom.identify(grouped, rule="contrast", epsilon=0.05, out=out, **FAST), out


def test_identify_validity_is_the_core_computed_on_the_runs_groups(grouped, identified):
    result, out = identified
    direct = validity(loaded_groups(grouped), SelectionRule("contrast", 0.05), folds=4, random_sets=12)
    assert to_json(result.validity["neuron"].summary()) == to_json(direct.summary())
    written = json.loads((out / "summary.json").read_text())
    assert written["validity"]["neuron"] == to_json(direct.summary())
    assert written["validity"]["available"] is True and written["validity"]["settings"]["folds"] == 4
    headline = read_identify(out).validity["neuron"].headline  # the typed reader: the same numbers
    assert headline.decoders["set_score"].accuracy == direct.decoding.decoders["set_score"].accuracy
    assert headline.stability == direct.stability.mean
    np.testing.assert_array_equal(result.kinds["neuron"].mask, direct.mask)
    decoding = read_csv(out / "tables" / "validity_decoding.csv")
    by_decoder = {r["decoder"]: r for r in decoding}
    for name, d in direct.decoding.decoders.items():
        assert float(by_decoder[name]["accuracy"]) == d.accuracy
        assert float(by_decoder[name]["p_value"]) == d.p_value
    assert float(by_decoder["centroid_all_components"]["accuracy"]) == direct.decoding.all_components.accuracy
    for name in ("validity_confusion", "validity_stability", "validity_cross_source"):
        assert (out / "tables" / f"{name}.csv").is_file()
    for figure in ("validity_confusion", "validity_random", "cross_source"):
        assert (out / "plots" / f"neuron_{figure}.png").read_bytes()[:4] == b"\x89PNG"


def test_selected_components_carry_sortable_specificity_scores(grouped, identified):
    _, out = identified
    direct = validity(loaded_groups(grouped), SelectionRule("contrast", 0.05), folds=4, random_sets=12)
    rows = read_csv(out / "tables" / "selected_components.csv")
    assert len(rows) == int(direct.mask.sum())
    scores = direct.scores
    categories = list(direct.categories)
    p = direct.freqs.p
    for row in rows:
        c, n = categories.index(row["category"]), int(row["layer"]) * 40 + int(row["index"])
        assert direct.mask[c, n]
        others = np.delete(p[:, n], c)
        assert math.isclose(float(row["contrast"]), p[c, n] - others.max(), abs_tol=1e-12)
        assert math.isclose(float(row["contrast_mean"]), p[c, n] - others.mean(), abs_tol=1e-12)
        q = p[:, n] / p[:, n].sum()
        entropy = -sum(v * math.log(v) for v in q if v > 0)
        assert math.isclose(float(row["entropy_specificity"]), 1 - entropy / math.log(len(categories)), abs_tol=1e-9)
        assert row["top_category"] == categories[int(np.argmax(p[:, n]))]
        assert float(row["effect"]) == scores.effect[c, n] and float(row["q_value"]) == scores.qvalue[c, n]


def test_test_rule_runs_its_sweep_its_resampled_stability_and_subsampling_intervals(grouped, tmp_path):
    """The test rule (which needs the groups' moments) gets its sweep, its bootstrap stability from --resamples, and
    — with or without --resamples and validity — the subsampling intervals of its set statistics."""
    from sparcom.analysis.bootstrap import SUBSAMPLING, subsampling_rows

    result = sparcom.identify(grouped, rule="test", epsilon=0.05, resamples=4, **FAST)
    groups = loaded_groups(grouped)
    analysis = result.kinds["neuron"]
    for row in analysis.sweep:
        mask = SelectionRule("test", row["epsilon"]).apply(analysis.freqs.p, analysis.freqs.layout, groups)
        assert row["selected_any"] == summary_statistics(mask, CATEGORIES)["selected_any"]
    assert analysis.summary()["bootstrap"]["method"] == SUBSAMPLING
    direct_rows = subsampling_rows(groups, SelectionRule("test", 0.05), result.ci_level, seed=0)
    assert json.dumps(analysis.intervals, sort_keys=True) == json.dumps(direct_rows, sort_keys=True)  # NaN == NaN
    direct = validity(groups, SelectionRule("test", 0.05), folds=4, random_sets=12, bootstrap=4)
    np.testing.assert_array_equal(result.validity["neuron"].bootstrap.masks, direct.bootstrap.masks)
    assert result.validity["neuron"].bootstrap.mean == direct.bootstrap.mean
    without = sparcom.identify(grouped, rule="test", epsilon=0.05, validity=False, sweep=False)
    assert without.validity == {}
    assert json.dumps(without.kinds["neuron"].intervals, sort_keys=True) == json.dumps(direct_rows, sort_keys=True)


def test_runs_without_groups_say_how_to_get_validity(tmp_path):
    run = write_run(tmp_path / "plain", synthetic_counts(3))
    result = sparcom.identify(run, sweep=False)
    summary = result.summary()
    assert summary["validity"] == {"available": False, "note": NO_GROUPS_NOTE}
    assert NO_GROUPS_NOTE in summary["notes"]
    done = CliRunner().invoke(app, ["identify", str(run), "--out", str(tmp_path / "out"), "--no-plots",
                                    "--sweep", "off"])
    assert done.exit_code == 0, done.output
    assert "--group-by instruction" in " ".join(done.output.split())


def test_identify_cli_prints_validity_and_obeys_no_validity(grouped, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["identify", str(grouped), "--out", str(tmp_path / "a"), "--rule", "contrast",
                               "--against", "mean", "--folds", "3", "--random-sets", "5", "--no-plots"])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "set-score" in text and "chance" in text and "cross-source" in text and "stability" in text
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["rule"]["against"] == "mean" and summary["validity"]["settings"]["random_sets"] == 5
    done = runner.invoke(app, ["identify", str(grouped), "--out", str(tmp_path / "b"), "--no-validity", "--no-plots"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["validity"]["available"] is False and "--no-validity" in summary["validity"]["note"]
    assert not (tmp_path / "b" / "tables" / "validity_decoding.csv").exists()


def test_rule_study_rows_are_the_core_sweep_and_files_are_written(grouped, tmp_path):
    epsilons = {"percentile": [0.02, 0.05], "contrast": [0.02, 0.05], "test": [0.05, 0.1]}
    study = sparcom.sweep(grouped, rules=["percentile", "contrast-mean", "test"], epsilons=epsilons, out=tmp_path / "s",
                          **FAST)
    rules = [SelectionRule("percentile"), SelectionRule("contrast", against="mean"), SelectionRule("test")]
    direct = validity_sweep(loaded_groups(grouped), rules, epsilons, folds=4, random_sets=12)
    rows = study.rows["neuron"]
    assert [(r["variant"], r["epsilon"]) for r in rows] == [(r["variant"], r["epsilon"]) for r in direct]
    assert [r["variant"] for r in rows][:3] == ["percentile"] * 3  # its grid plus its default ε 0.01
    for mine, theirs in zip(rows, direct, strict=True):
        assert to_json({k: mine[k] for k in theirs}) == to_json(theirs)
        sizes = [mine[f"selected_{c}"] for c in CATEGORIES]
        assert mine["mean_fraction"] == np.mean(sizes) / 120
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["format"] == "sparcom-sweep"
    paper = summary["kinds"]["neuron"]["paper_rule"]
    assert paper["variant"] == "percentile" and paper["epsilon"] == 0.01
    assert set(summary["kinds"]["neuron"]["best_set_score_per_rule"]) == {r.variant for r in rules}
    assert len(read_csv(tmp_path / "s" / "tables" / "validity_sweep.csv")) == len(rows)
    typed = read_sweep(tmp_path / "s")
    assert typed.kinds["neuron"]["paper_rule"] == paper and typed.header.data.run == str(grouped)
    assert (tmp_path / "s" / "plots" / "neuron_validity_sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_with_the_test_rule_uses_each_runs_groups(tmp_path):
    base, _ = synthetic_groups(CATEGORIES, layers=2, width=30, per_source=6, seed=1)
    tuned, _ = synthetic_groups(CATEGORIES, layers=2, width=30, per_source=6, seed=2)
    a, b = write_grouped_run(tmp_path / "a", base), write_grouped_run(tmp_path / "b", tuned)
    result = sparcom.compare(a, b, SelectionRule("test", 0.02))
    for run, analysis in ((a, result.kinds["neuron"].base), (b, result.kinds["neuron"].tuned)):
        groups = loaded_groups(run)
        expected = SelectionRule("test", 0.02).apply(analysis.freqs.p, analysis.freqs.layout, groups)
        np.testing.assert_array_equal(analysis.mask, expected)


@pytest.mark.parametrize("m", [5, 60])  # below and above N / DENSE_SHARE: the gather and the product paths
def test_decoders_match_loops_on_small_and_large_sets(m):
    from sparcom.analysis import decoding as dec

    rng = np.random.default_rng(m)
    n, g, k, r = 200, 9, 3, 4
    z = np.asfortranarray(rng.standard_normal((g, n)))
    centroids = rng.standard_normal((k, n))
    sets = [np.sort(np.stack([rng.choice(n, m + c, replace=False) for _ in range(r)]), axis=1) for c in range(k)]
    assert {len(s[0]) * dec.DENSE_SHARE > n for s in sets} == {m > 20}  # one path per parameter
    predicted = dec.set_score_predict(z, sets)
    nearest = dec.centroid_predict(z, centroids, sets[1])
    for i in range(g):
        for j in range(r):
            scores = [sum(z[i, q] for q in s[j]) / len(s[j]) for s in sets]
            assert predicted[i, j] == scores.index(max(scores))
            distances = [sum((z[i, q] - centroids[c, q]) ** 2 for q in sets[1][j]) for c in range(k)]
            assert nearest[i, j] == distances.index(min(distances))


def test_a_run_grouped_by_source_gets_cross_source_agreement_only(tmp_path):
    groups, _ = synthetic_groups(CATEGORIES, layers=2, width=30, per_source=6, seed=5)
    run = write_grouped_run(tmp_path / "halves", by_halves(groups), group_by="source")
    rule = SelectionRule("percentile", 0.1)
    result = sparcom.identify(run, rule, out=tmp_path / "out", sweep=False)
    evidence = result.validity["neuron"]
    assert evidence.decoding is None and evidence.stability is None
    masks = {}
    for source in ("ai", "human"):  # select on each half's pooled counts, written out
        rows = [i for i, s in enumerate(groups.sources) if s == source]
        counts = np.stack([groups.counts[[i for i in rows if groups.categories[i] == c]].sum(axis=0)
                           for c in CATEGORIES])
        tokens = np.array([groups.tokens[[i for i in rows if groups.categories[i] == c]].sum() for c in CATEGORIES])
        masks[source] = rule.apply(counts / tokens[:, None], evidence.freqs.layout)
    for a in range(len(CATEGORIES)):
        for h in range(len(CATEGORIES)):
            both = (masks["ai"][a] & masks["human"][h]).sum()
            either = (masks["ai"][a] | masks["human"][h]).sum()
            assert evidence.cross_source.jaccard[a, h] == pytest.approx(both / either)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["validity"]["neuron"]
    assert summary["held_out_decoding"] is None and "--group-by instruction" in " ".join(summary["notes"])
    assert (tmp_path / "out" / "plots" / "neuron_cross_source.png").is_file()
    assert not (tmp_path / "out" / "plots" / "neuron_validity_random.png").exists()
    with pytest.raises(sparcom.SparcomError, match="per-instruction counts"):
        sparcom.identify(run, rule="test", sweep=False)
