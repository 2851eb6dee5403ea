"""Stopping when decided: a causal check that stops drawing random sets once :func:`settled_after` says no further
draw can change a decision must store exactly the decisions of the full check (docs/causal.md, "Stopping when
decided"). Checked on the calibration benchmark's simulated data sets (nulls and alternatives, few and many random
sets), at the first settled prefix and at every later one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sparcom.causal import decisions as dc
from sparcom.causal import statistics as st
from tests.test_causal_decisions import CATS, benchmark_module


def decisions_of(tests, claims):
    """Everything a check stores as a decision: per category both outcomes and reasons, per claim its verdict,
    counts and the pooled test's outcome and reason."""
    rows = [(t.ablated, t.decision.verdict, t.decision.damage.value, t.decision.specificity.value,
             t.decision.damage_reason, t.decision.specificity_reason, t.decision.best_p_holm,
             t.decision.random_sets_needed) for t in tests]
    verdicts = {name: (c.outcome, c.holds, c.holding, c.not_enough, c.categories,
                       None if c.pooled is None else (c.pooled.outcome.value, c.pooled.reason))
                for name, c in claims.items()}
    return rows, verdicts


def first_settled(base, selected, random, tokens, labels) -> int | None:
    planned = random.shape[1]
    for n in range(1, planned + 1):
        if st.settled_after(base, selected, random[:, :n], tokens, labels, CATS, CATS, planned=planned):
            return n
    return None


SCENARIOS = [("strong-flat", 20, "normal", 0.0), ("exchangeable", 20, "lognormal", 0.0),
             ("exchangeable", 40, "mixture", 0.0), ("uneven", 20, "normal", 0.0), ("specific", 20, "normal", 0.25),
             ("critical", 20, "normal", 0.2), ("exchangeable", 130, "t3", 0.0), ("strong-flat", 130, "normal", 0.0),
             ("specific", 130, "normal", 0.1), ("exchangeable", 10, "normal", 0.0)]


@pytest.mark.parametrize(("selected", "random_sets", "law", "effect"), SCENARIOS)
def test_a_settled_prefix_decides_exactly_as_all_random_sets(selected, random_sets, law, effect):
    bench = benchmark_module()
    scenario = bench.Scenario("stop", selected, rows=4, random_sets=random_sets, law=law, effect=effect)
    rng = np.random.default_rng(7)
    stopped = 0
    for _ in range(12):
        base, sel, random, tokens, labels = bench.simulate(scenario, rng)
        full = decisions_of(*st.decide(base, sel, random, tokens, labels, CATS, CATS))
        n = first_settled(base, sel, random, tokens, labels)
        if n is None:
            continue
        stopped += n < random_sets
        for m in sorted({n, min(n + 3, random_sets)}):
            early = decisions_of(*st.decide(base, sel, random[:, :m], tokens, labels, CATS, CATS,
                                            planned=random_sets))
            assert early == full, (selected, random_sets, m)
    if selected in ("exchangeable", "uneven") and random_sets >= 20:
        assert stopped >= 4  # both claims null: many checks settle early (else the rule saves nothing)


def test_never_settled_before_a_draw_nor_while_the_pooled_test_can_still_hold():
    bench = benchmark_module()
    scenario = bench.Scenario("stop", "specific", rows=8, random_sets=20, effect=1.0)
    base, sel, random, tokens, labels = bench.simulate(scenario, np.random.default_rng(3))
    assert not st.settled_after(base, sel, random[:, :0], tokens, labels, CATS, CATS, planned=20)
    # a clearly specific set beats every draw: its pooled tests can hold until the last one
    assert first_settled(base, sel, random, tokens, labels) is None
    _, claims = st.decide(base, sel, random, tokens, labels, CATS, CATS)
    assert claims["specificity"].pooled.outcome.value == "holds"


def test_the_bound_matches_its_formula_on_small_arrays():
    observed = np.array([0.3, 0.3, np.nan, 0.3])
    random = np.array([[0.1, 0.2, 0.25], [0.1, 0.3, 0.5], [0.0, 0.0, 0.0], [0.4, 0.5, 0.6]])
    # (1 + k/2) / (1 + planned) with k the draws at or above: k = 0, 2, -, 3
    for planned in (5, 20, 60):
        expected = [not ((1 + k / 2) / (1 + planned) <= 0.05 * (1 + 1e-9)) for k in (0, 2, 0, 3)]
        expected[2] = True  # a NaN value can never reach alpha
        assert list(dc._cannot_reach(observed, random, planned, 0.05)) == expected


def test_planned_changes_only_what_the_planned_draws_decide():
    """Passed the number it already has, ``planned`` changes nothing; the check stores it when it stopped."""
    base, sel, random, tokens, labels = benchmark_module().simulate(
        benchmark_module().Scenario("stop", "strong-flat", rows=4), np.random.default_rng(1))
    assert decisions_of(*st.decide(base, sel, random, tokens, labels, CATS, CATS, planned=20)) == \
        decisions_of(*st.decide(base, sel, random, tokens, labels, CATS, CATS))
    stats = st.causal_statistics(base, sel, random[:, :3], tokens, labels, CATS, CATS, replicates=20, planned=20)
    assert stats.planned_random_sets == 20 and stats.summary()["planned_random_sets"] == 20
    assert stats.summary()["random_sets"] == 3
    full = st.causal_statistics(base, sel, random, tokens, labels, CATS, CATS, replicates=20, planned=20)
    assert full.planned_random_sets is None and "planned_random_sets" not in full.summary()
    assert dataclasses.is_dataclass(full)


# ------------------------------------------------------------------------------------------- the check


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from causal_tiny import tiny_study

    study = tiny_study(tmp_path_factory.mktemp("stopping"), {"selection": ("percentile", 0.05)})
    return {**study, "selection": study["root"] / "selection"}


def stored_decisions(result):
    return {name: decisions_of(t.statistics.tests, t.statistics.claims)
            for control in result.controls.values() for name, t in control.items()}


def test_a_check_stopped_when_decided_stores_the_full_checks_decisions(study):
    from sparcom.causal import CausalSettings, causal_check

    settings = CausalSettings(seeds=24, batch_size=4, replicates=50, controls=("frequency", "shape"),
                              interventions=("mean", "zero"))
    full = causal_check(study["model"], study["selection"], study["data"], settings, progress=False)
    early = causal_check(study["model"], study["selection"], study["data"],
                         dataclasses.replace(settings, stop_when_decided=True), progress=False)
    assert stored_decisions(early) == stored_decisions(full)
    drawn = early.targets["neurons"].random_delta.shape[1]
    assert 1 <= drawn < 24  # the tiny model's sets are no better than random: settled well before the end
    for control, targets in early.controls.items():
        for name, target in targets.items():
            reference = full.controls[control][name]
            np.testing.assert_array_equal(target.random_sums, reference.random_sums[:, :drawn])  # same draws
            np.testing.assert_array_equal(target.selected_sums, reference.selected_sums)
            assert target.statistics.planned_random_sets == 24 and target.statistics.random_sets == drawn
    assert any(f"stopped after {drawn} of 24 random sets" in note for note in early.notes)
    assert not any("stopped after" in note for note in full.notes)
    assert early.summary()["settings"]["stop_when_decided"] is True


def test_cli_stops_when_decided_and_refuses_it_with_the_dose_response(study, tmp_path, capsys):
    import json
    import shutil
    import subprocess
    import sys

    from sparcom.cli import main

    common = ["ablate", str(study["folder"]), "--selection", str(study["selection"]), "--data", str(study["data"]),
              "--seeds", "20", "--dtype", "float32", "--per-category", "2", "--replicates", "20", "--quiet"]
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--stop-when-decided", "--dose-response", "3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--stop-when-decided" in err[0] and "--dose-response" in err[0], err
    assert not (tmp_path / "bad").exists()
    script = shutil.which("sparcom", path=str(Path(sys.executable).parent))
    done = subprocess.run([script, *common, "--out", str(tmp_path / "out"), "--stop-when-decided"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    stats = summary["targets"]["neurons"]["statistics"]
    assert summary["settings"]["stop_when_decided"] is True and stats["planned_random_sets"] == 20
    assert 1 <= stats["random_sets"] < 20 and "stopped after" in done.stdout
    from sparcom.artifacts.causal import read_causal

    tests = read_causal(tmp_path / "out").targets["neurons"].statistics
    assert tests.stopped_early and tests.planned_random_sets == 20
