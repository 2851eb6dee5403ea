"""Matched random-set controls: the frequency bins against their formula, the widening of short bins against a
hand-worked case, matched draws keeping every (layer, expert, bin) count without the selected components, the
match report against a direct mean, and the control reaching the plan, the check and the CLI."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from causal_tiny import one_thread, tiny_moe, tiny_study  # noqa: F401
from typer.testing import CliRunner

from sparcom.causal import CausalSettings, causal_check
from sparcom.causal.controls import CONTROL_TOP_BIN, Matching, binned_like, match_row, matched_like, shape_like
from sparcom.causal.plan import CONTROLS, Axes, build_plan
from sparcom.causal.settings import DEFAULT_CONTROL
from sparcom.cli.app import app
from sparcom.components import ComponentSet, Layout
from sparcom.errors import SparcomError
from sparcom.random_sets import Widening, merge_short_strata, quantile_levels, quantile_strata

EXPERTS = Layout("expert_neuron", (0, 1), ((3, 40), (3, 40)))


def block_of(layout: Layout) -> np.ndarray:
    """[N] the (layer, expert) block of every flat position, written directly."""
    return np.arange(layout.size) // layout.shapes[0][-1]


def test_quantile_levels_halve_towards_the_top():
    assert quantile_levels(1000, 32) == (0.5, 0.75, 0.875, 0.9375)  # 1000/16 ≥ 32 > 1000/32
    assert quantile_levels(63, 32) == ()  # one bin
    values = np.random.default_rng(0).random(1000)
    strata = quantile_strata(values, 32)
    edges = np.quantile(values, [0.5, 0.75, 0.875, 0.9375])
    direct = np.array([sum(v >= e for e in edges) for v in values])
    assert np.array_equal(strata, direct)
    assert np.bincount(strata).tolist() == [500, 250, 125, 62, 63]  # finer at the top
    tied = quantile_strata(np.r_[np.zeros(80), np.ones(20)], 10)
    assert len(set(tied[:80])) == 1 and len(set(tied[80:])) == 1 and tied[80] > tied[0]  # equal values share a bin


def test_short_bins_are_merged_downwards_and_recorded():
    layout = Layout("neuron", (0, 1), ((10,), (10,)))
    strata = np.tile([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], 2)
    mask = np.zeros(20, dtype=bool)
    mask[[8, 9]] = True  # layer 0: two selected in bin 2, whose only other member is 7
    mask[[10, 11, 12]] = True  # layer 1: three selected in bin 0, with one candidate left there
    merged, widened = merge_short_strata(layout, mask, strata, exclude=mask)
    assert merged[:10].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # bin 2 joined bin 1
    assert merged[10:].tolist() == [0, 0, 0, 0, 0, 0, 0, 2, 2, 2]  # the lowest bin joined the one above it
    assert widened == [Widening(("neuron", 0), (2, 1), 2, 4), Widening(("neuron", 1), (1, 0), 3, 4)]
    assert merge_short_strata(layout, mask, strata)[1] == []  # without exclusion every bin has enough


def matching_of(layout: Layout, values: np.ndarray, min_top: int | None = None) -> Matching:
    if min_top is None:
        return Matching.binned("pooled activation frequency", "test", {layout.kind: layout}, {layout.kind: values})
    return Matching("pooled activation frequency", "test", {layout.kind: layout}, {layout.kind: values},
                    {layout.kind: quantile_strata(values, min_top)})


def top_set(layout: Layout, values: np.ndarray, fraction: float) -> ComponentSet:
    flat = values >= np.quantile(values, 1 - fraction)
    return ComponentSet.from_flat(layout, flat, "top")


def test_matched_draws_keep_layer_expert_and_bin_without_the_selected():
    values = np.random.default_rng(1).random(EXPERTS.size)
    matching = matching_of(EXPERTS, values)
    mask = np.random.default_rng(2).random(EXPERTS.size) < 0.1  # spread over bins: no bin is short
    selected = ComponentSet.from_flat(EXPERTS, mask)
    strata, widened = matching.widened(selected)
    assert widened == [] and np.array_equal(strata["expert_neuron"], matching.strata["expert_neuron"])
    where = block_of(EXPERTS) * 10 + matching.strata["expert_neuron"]
    want = np.bincount(where[mask], minlength=where.max() + 1)
    drawn = [matched_like(selected, seed, "x", matching).flat("expert_neuron") for seed in range(30)]
    for row in drawn:
        assert not (row & mask).any()
        assert np.array_equal(np.bincount(where[row], minlength=where.max() + 1), want)
    assert len({r.tobytes() for r in drawn}) == 30
    assert np.array_equal(drawn[3], matched_like(selected, 3, "x", matching).flat("expert_neuron"))  # its seed


def test_whole_bin_draws_keep_layer_expert_and_bin_and_hold_members_at_their_share():
    values = np.random.default_rng(3).beta(0.5, 2.0, EXPERTS.size)
    matching = matching_of(EXPERTS, values, min_top=4)
    selected = top_set(EXPERTS, values, 0.05)  # the top bins are mostly the set itself
    mask = selected.flat("expert_neuron")
    where = block_of(EXPERTS) * 100 + matching.strata["expert_neuron"]
    want = np.bincount(where[mask], minlength=where.max() + 1)
    drawn = np.array([binned_like(selected, seed, "x", matching).flat("expert_neuron") for seed in range(200)])
    for row in drawn:
        assert np.array_equal(np.bincount(where[row], minlength=where.max() + 1), want)
    cells = np.unique(where[mask])
    share = np.mean([mask[where == w].sum() / (where == w).sum() for w in where[mask]])  # members per cell
    assert (drawn & mask).sum(axis=1).mean() / mask.sum() == pytest.approx(share, abs=0.05)
    assert cells.size > 1 and not all((drawn & mask).sum(axis=1) == mask.sum())
    with pytest.raises(SparcomError, match="matches on a statistic"):
        binned_like(selected, 0, "x", None)


def test_near_misses_match_the_frequency_the_shape_control_misses():
    values = np.random.default_rng(3).beta(0.5, 2.0, EXPERTS.size)
    matching = matching_of(EXPERTS, values, min_top=4)  # top bins of 1/16 and 1/32 of the components
    selected = top_set(EXPERTS, values, 0.05)
    strata, widened = matching.widened(selected)
    assert widened  # the top bins are mostly the selected set itself: they are widened
    where = block_of(EXPERTS) * 10 + strata["expert_neuron"]
    mask = selected.flat("expert_neuron")
    want = np.bincount(where[mask], minlength=where.max() + 1)
    matched = [matched_like(selected, s, "x", matching) for s in range(20)]
    shaped = [shape_like(selected, s, "x") for s in range(20)]
    for drawn in matched:
        row = drawn.flat("expert_neuron")
        assert not (row & mask).any() and np.array_equal(np.bincount(where[row], minlength=where.max() + 1), want)
    row = match_row("neurons", "frequency", "math", matching, [selected], [matched], widened).row()
    assert row["selected_mean"] == pytest.approx(values[mask].mean())
    direct = [values[d.flat("expert_neuron")].mean() for d in matched]
    assert row["random_mean"] == pytest.approx(np.mean(direct)) and row["random_max"] == pytest.approx(max(direct))
    assert row["widened_blocks"] == len(widened) and row["widened_components"] == sum(w.selected for w in widened)
    shape_row = match_row("neurons", "shape", "math", matching, [selected], [shaped], []).row()
    gap_matched = row["selected_mean"] - row["random_mean"]
    gap_shape = shape_row["selected_mean"] - shape_row["random_mean"]
    assert 0 < gap_matched < gap_shape / 2  # near misses sit just below the selected set, uniform ones far below


def test_a_block_that_cannot_be_matched_is_refused_in_one_line():
    layout = Layout("neuron", (0,), ((10,),))
    matching = matching_of(layout, np.arange(10.0))
    selected = ComponentSet.from_flat(layout, np.arange(10) < 6)  # 6 selected, 4 candidates in the whole layer
    with pytest.raises(SparcomError, match="only 4 candidates"):
        matched_like(selected, 0, "x", matching)
    wrong = matching_of(Layout("neuron", (0,), ((12,),)), np.arange(12.0))
    with pytest.raises(SparcomError, match="covers neuron layers"):
        matched_like(ComponentSet.from_flat(layout, np.arange(10) < 2), 0, "x", wrong)


def test_the_frequency_control_is_an_axis_of_the_plan_with_its_bins_in_the_digest():
    from test_causal_plan import CATEGORIES, SEEDS, TARGETS, digest, folds

    layout = Layout("neuron", (0,), ((16,),))
    matching = matching_of(layout, np.linspace(0, 1, 16), min_top=2)
    axes = Axes(controls=("shape", "frequency"), matching={"frequency": matching})
    before = build_plan(folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=100)
    after = build_plan(folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=100, axes=axes)
    added = [c for c in after if c.key.control == "frequency"]
    assert len(added) == 11 * SEEDS and len(after) == len(before) + len(added)
    assert [(c.key, c.seed) for c in after if c.key.control == "shape"] == [(c.key, c.seed) for c in before]
    assert all(c.matching is matching for c in added) and all(c.matching is None for c in before)
    assert digest(before) == digest(build_plan(folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=100))
    other = matching_of(layout, np.linspace(1, 0, 16), min_top=2)
    moved = build_plan(folds(), TARGETS, CATEGORIES, seeds=SEEDS, seed=100,
                       axes=Axes(controls=("shape", "frequency"), matching={"frequency": other}))
    assert len({digest(before), digest(after), digest(moved)}) == 3  # the bins fix the sets: they are hashed
    for condition in added[:5]:
        drawn = condition.components().flat("neuron")
        assert drawn.sum() == condition.selected.size() and not (drawn & condition.selected.flat("neuron")).any()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = tiny_study(tmp_path_factory.mktemp("controls"), {"selection": ("percentile", 0.05)})
    return {**study, "selection": study["root"] / "selection"}


def pooled_frequency_directly(run) -> dict[int, np.ndarray]:
    """Per layer, Σ_c count_c / Σ_c T_c of the dense neurons, from the run's counts."""
    tokens = sum(run.tokens(c) for c in run.categories)
    return {j: sum(run.count("neuron", c, j) for c in run.categories) / tokens for j in run.layers("neuron")}


def test_each_control_has_its_own_random_sets_and_results(study):
    both = causal_check(study["model"], study["selection"], study["data"],
                        CausalSettings(seeds=3, batch_size=4, controls=("shape", "frequency"), replicates=50),
                        progress=False)
    alone = causal_check(study["model"], study["selection"], study["data"],
                         CausalSettings(seeds=3, batch_size=4, replicates=50, controls=("shape",)), progress=False)
    shape, frequency = both.controls["shape"]["neurons"], both.controls["frequency"]["neurons"]
    assert both.targets["neurons"] is shape and list(alone.controls) == ["shape"]
    np.testing.assert_array_equal(shape.random_sums, alone.targets["neurons"].random_sums)  # shape unchanged
    np.testing.assert_array_equal(frequency.selected_sums, shape.selected_sums)  # one selected pass
    assert frequency.random_sums.shape == shape.random_sums.shape
    assert not np.array_equal(frequency.random_sums, shape.random_sums)  # other sets
    assert frequency.statistics is not None and frequency.statistics is not shape.statistics
    assert frequency.control == "frequency" and {r["control"] for r in frequency.matching} == {"frequency"}
    pooled = pooled_frequency_directly(study["run"])
    for row in frequency.matching + shape.matching:
        selected = frequency.ablations[row["category"]]
        direct = np.concatenate([pooled[j][selected.mask("neuron", j)] for j in sorted(pooled)])
        assert row["selected_mean"] == pytest.approx(direct.mean()) and row["random_sets"] == 3
    gaps = {r["control"]: r["selected_mean"] - r["random_mean"] for r in frequency.matching + shape.matching
            if r["category"] == "math"}
    assert abs(gaps["frequency"]) < gaps["shape"]
    tables = both.tables()
    assert "random_delta_nll_frequency" in tables and "control_matching" in tables
    assert "controls" in both.summary() and "controls" not in alone.summary()


def test_cli_control_frequency_and_refusals(study, tmp_path):
    runner = CliRunner()
    common = [str(study["folder"]), "--selection", str(study["selection"]), "--data", str(study["data"]),
              "--seeds", "2", "--per-category", "2", "--quiet", "--dtype", "float32", "--replicates", "20"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["ablate", *common, "--out", str(out), "--control", "shape,frequency"])
    assert result.exit_code == 0, result.output + result.stderr
    rows = read_csv(out / "tables" / "control_matching.csv")
    assert {r["control"] for r in rows} == {"shape", "frequency"}
    assert (out / "tables" / "random_delta_nll_frequency.csv").is_file()
    assert json.loads((out / "summary.json").read_text())["settings"]["controls"] == ["shape", "frequency"]
    result = runner.invoke(app, ["ablate", *common, "--out", str(tmp_path / "bad"), "--control", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output + result.stderr
    moved = tmp_path / "selection"
    moved.mkdir()
    meta = json.loads((study["selection"] / "selection.json").read_text())
    meta["source_run"] = str(tmp_path / "gone")
    (moved / "selection.json").write_text(json.dumps(meta))
    (moved / "selection.safetensors").write_bytes((study["selection"] / "selection.safetensors").read_bytes())
    result = runner.invoke(app, ["ablate", *common[:1], "--selection", str(moved), *common[3:], "--out",
                                 str(tmp_path / "gone-out"), "--control", "frequency"])
    assert result.exit_code == 2 and "is not readable here" in result.output + result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "gone-out").exists()


def read_csv(path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_magnitude_is_mean_abs_activation_times_the_down_column_norm(study):
    from sparcom.causal.controls import down_column_norms, expected_contribution
    from sparcom.kinds import sum_key
    from sparcom.models.sites import model_sites

    run, model = study["run"], study["model"].model
    matching = expected_contribution(run, ["neuron"], model_sites(model))
    tokens = sum(run.tokens(c) for c in run.categories)
    parts = []
    for j, layer in enumerate(model.model.layers):
        mean_abs = sum(run.sums[sum_key("neuron", c, j, absolute=True)] for c in run.categories) / tokens
        column = layer.mlp.down_proj.weight.detach().double()  # [H, I]
        parts.append(mean_abs * np.sqrt((column ** 2).sum(dim=0).numpy()))
    np.testing.assert_allclose(matching.values["neuron"], np.concatenate(parts), rtol=1e-12)
    assert matching.statistic.startswith("mean |activation|")
    moe = tiny_moe("qwen2_moe", seed=3)
    sites = model_sites(moe)
    layer = next(iter(sites.moe))
    weight = sites.moe[layer].experts.down_proj.detach().double()  # [E, H, I]
    np.testing.assert_allclose(down_column_norms(sites, "expert_neuron", layer),
                               np.sqrt((weight ** 2).sum(dim=1).numpy()), rtol=1e-12)


def test_the_magnitude_control_runs_with_its_own_null(study):
    result = causal_check(study["model"], study["selection"], study["data"],
                          CausalSettings(seeds=2, batch_size=4, controls=("magnitude",), per_category=2,
                                         replicates=20), progress=False)
    target = result.targets["neurons"]
    assert target.control == "magnitude" and list(result.controls) == ["magnitude"]
    assert {r["statistic"] for r in target.matching} == {"mean |activation| × ‖W_down column‖"}
    for row in target.matching:
        assert row["random_sets"] == 2 and np.isfinite(row["selected_mean"])


def test_the_bins_stated_in_the_causal_doc():
    """docs/causal.md: on SmolLM2's 30 × 1,536 neurons the causal controls' top bin is the top 11 (0.02 %), then
    0.05 %, 0.1 %, …"""
    levels = quantile_levels(30 * 1536, CONTROL_TOP_BIN)
    assert len(levels) == 12 and round(30 * 1536 * (1 - levels[-1])) == 11
    assert [round(100 * (1 - v), 2) for v in levels[-4:]] == [0.2, 0.1, 0.05, 0.02]
    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "causal.md").read_text(encoding="utf-8").split())
    assert "the top bin is the top 0.02 % (11 neurons) and the next ones the top 0.05 %, 0.1 %, 0.2 %" in text


def test_the_whole_bin_control_runs_beside_the_near_misses_with_its_own_null(study):
    result = causal_check(study["model"], study["selection"], study["data"],
                          CausalSettings(seeds=3, batch_size=4, controls=("frequency", "frequency-bin"), replicates=20),
                          progress=False)
    near, whole = result.controls["frequency"]["neurons"], result.controls["frequency-bin"]["neurons"]
    np.testing.assert_array_equal(near.selected_sums, whole.selected_sums)  # one selected pass
    assert not np.array_equal(near.random_sums, whole.random_sums)
    rows = [r for r in whole.matching if r["control"] == "frequency-bin"]
    assert rows and all(r["widened_blocks"] == 0 for r in rows)  # whole bins are never widened
    keys = [(r["control"], r["category"], r["statistic"]) for r in near.matching + whole.matching]
    assert len(keys) == len(set(keys)) == 2 * len(rows)  # the two controls share one statistic: one row each
    assert whole.control == "frequency-bin"
    said = [n for n in result.notes if "draws near misses, which the selection biases" in n]
    assert len(said) == 1 and said[0].startswith("the main control (frequency)") and "--control frequency-bin" in said[0]


def test_a_check_that_scores_the_profiled_rows_says_they_are_in_sample(study):
    result = causal_check(study["model"], study["selection"], study["data"],
                          CausalSettings(seeds=2, batch_size=4, controls=("shape",), replicates=20), progress=False)
    assert not any("near misses" in n for n in result.notes)  # shape is not a near-miss control
    notes = [n for n in result.notes if "were profiled to make the selection" in n]
    assert len(notes) == 1 and notes[0].startswith("12 of 12 scored rows") and "--exclude-profiled" in notes[0]


def test_whole_bin_draws_share_members_with_the_set_and_near_misses_none():
    values = np.random.default_rng(3).beta(0.5, 2.0, EXPERTS.size)
    matching = matching_of(EXPERTS, values, min_top=4)
    selected = top_set(EXPERTS, values, 0.05)
    mask = selected.flat("expert_neuron")
    whole = [binned_like(selected, s, "x", matching) for s in range(10)]
    near = [matched_like(selected, s, "x", matching) for s in range(10)]
    direct = np.mean([(d.flat("expert_neuron") & mask).sum() / mask.sum() for d in whole])
    assert match_row("neurons", "frequency-bin", "math", matching, [selected], [whole], []).row()["shared"] == (
        pytest.approx(direct)) and direct > 0
    assert match_row("neurons", "frequency", "math", matching, [selected], [near], []).row()["shared"] == 0


CONTROL_BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "control_calibration.py"


def test_the_default_control_is_calibrated_where_the_near_misses_are_biased_by_the_selection():
    """The selection-aware null of benchmarks/control_calibration.py (only frequency matters, steeply): the paper's
    real selection, the controls' real drawers and the real decision on 12 simulated data sets. Near misses sit
    below the set's frequency, so "critical role" holds on most; whole bins (the default) hold on at most one."""
    spec = importlib.util.spec_from_file_location("control_calibration", CONTROL_BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    assert DEFAULT_CONTROL == "frequency-bin" and CONTROLS[DEFAULT_CONTROL] is binned_like
    rng = np.random.default_rng(11)
    scenario = bench.Scenario("frequent matter", "frequent")
    held = {"frequency": 0, "frequency-bin": 0}
    for i in range(12):
        found = bench.one_data_set(scenario, rng, 100 * i, rules={"paper": bench.RULES["paper"]},
                                   controls={c: CONTROLS[c] for c in held})
        for control in held:
            held[control] += found[("paper", control)]["damage"]
    assert held["frequency"] >= 8 and held["frequency-bin"] <= 1, held


def test_the_claims_say_how_much_of_the_set_its_whole_bin_random_sets_share(study, tmp_path):
    from sparcom.analysis.claims import causal
    from sparcom.artifacts.causal import read_causal
    from sparcom.report.claims import claim_text

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ablate", str(study["folder"]), "--selection", str(study["selection"]),
                                      "--data", str(study["data"]), "--seeds", "2", "--per-category", "2", "--quiet",
                                      "--dtype", "float32", "--replicates", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    rows = read_csv(out / "tables" / "control_matching.csv")
    assert {r["control"] for r in rows} == {"frequency-bin"}  # the default
    direct = np.mean([float(r["shared"]) for r in rows])
    claims = causal(read_causal(out), "neurons")
    assert all(c.evidence["shared"] == pytest.approx(direct) for c in claims)
    assert f"frequency-bin-matched random sets sharing {100 * direct:.1f}% of the set's members" in claim_text(
        claims[0])


def test_one_table_names_every_control_and_what_each_draws_and_reads():
    """The control table is the one owner: the CLI's choices, the drawers, the statistics, the refusal's subject
    and the words the report prints all cover the same names, and each near-miss control names a whole-bin twin
    that matches on the same statistic."""
    from sparcom.artifacts.causal import CONTROL_WORDS
    from sparcom.causal.check import READS
    from sparcom.causal.controls import CONTROL_TABLE, NEAR_MISSES, STATISTICS
    from sparcom.causal.settings import CONTROL_NAMES

    assert tuple(CONTROL_TABLE) == CONTROL_NAMES == tuple(CONTROLS) == tuple(CONTROL_WORDS)
    assert {"frequency", "magnitude"} == NEAR_MISSES and set(STATISTICS) == set(CONTROL_NAMES) - {"shape"}
    for name, control in CONTROL_TABLE.items():
        assert (name in READS) == (control.statistic is not None)
        if control.whole_bins:
            twin = CONTROL_TABLE[control.whole_bins]
            assert twin.draw is binned_like and twin.statistic is control.statistic and not twin.whole_bins
            assert control.draw is matched_like and "near misses" in CONTROL_WORDS[name]
