"""The check keeps every condition's per-row sums and its statistics are those sums' statistics: the random sets'
sums equal direct ablations, damage and specificity equal plain loops over them, and the files carry the tests."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from causal_tiny import ZERO_SHAPE, one_thread, random_masks, write_selection_dir  # noqa: F401
from scipy.stats import t as student
from tiny import tiny_model, tiny_tokenizer, write_dataset

from sparcom.api import ablate as ablate_check
from sparcom.artifacts.causal import read_causal
from sparcom.causal.interventions import ablate
from sparcom.causal.nll import encode_scored
from sparcom.causal.scoring import ScoringPlan, example_nll
from sparcom.causal.settings import CausalSettings
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.schema import read_rows
from sparcom.models.loading import load_model
from sparcom.models.sites import model_sites
from sparcom.random_sets import random_like
from sparcom.report.verdicts import verdict_text

CATEGORIES = ["cls", "code", "qa", "gen", "math", "sum"]
SEEDS = 12


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkstats")
    folder = root / "tiny-llama"
    tiny_model("llama", seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    loaded = load_model(str(folder), dtype="float32")
    masks = random_masks(model_sites(loaded.model), CATEGORIES, seed=2)
    selection = write_selection_dir(root / "selection", masks, loaded, CATEGORIES)
    data = write_dataset(root / "rows.jsonl")
    out = root / "out"
    result = ablate_check(loaded, selection, data, CausalSettings(seeds=SEEDS, batch_size=4, replicates=100, **ZERO_SHAPE),
                          out=out, progress=False)
    return {"loaded": loaded, "masks": masks, "data": data, "result": result, "out": out}


def test_scoring_plan_equals_one_pass(study):
    model, tokenizer = study["loaded"].model, study["loaded"].tokenizer
    examples = encode_scored(read_rows(study["data"]), tokenizer, "chat")
    plan = length_batches([len(e) for e in examples], 3)
    scoring = ScoringPlan.build(examples, plan, 0)
    sums, counts = example_nll(model, examples, [[i] for i in range(len(examples))], 0)  # one row at a time
    np.testing.assert_allclose(scoring.run(model), sums, rtol=1e-6)
    np.testing.assert_array_equal(scoring.counts, counts)
    np.testing.assert_array_equal(scoring.run(model), scoring.run(model))  # a plan is reusable, bit for bit


def test_kept_sums_are_direct_ablations(study):
    result, model = study["result"], study["loaded"].model
    target = result.targets["neurons"]
    assert target.selected_sums.shape == (6, len(result.examples))
    assert target.random_sums.shape == (6, SEEDS, len(result.examples))
    plan = [[i] for i in range(len(result.examples))]
    for a, category in ((1, "code"), (4, "math")):
        ablation = ComponentSet.from_masks(study["masks"], category, ["neuron"])
        with ablate(model, ablation):
            direct, _ = example_nll(model, result.examples, plan, 0)
        np.testing.assert_allclose(target.selected_sums[a], direct, rtol=1e-6)
        for s in (0, SEEDS - 1):
            with ablate(model, random_like(ablation, s, f"neurons/{category}")):
                direct, _ = example_nll(model, result.examples, plan, 0)
            np.testing.assert_allclose(target.random_sums[a, s], direct, rtol=1e-6)


def test_statistics_are_the_plain_statistics_of_the_sums(study):
    result = study["result"]
    target = result.targets["neurons"]
    labels = [e.category for e in result.examples]
    base, counts = result.baseline_sums, result.counts
    evaluated = target.evaluated

    def cells(sums):
        out = []
        for c in evaluated:
            rows = [i for i in range(len(labels)) if labels[i] == c]
            out.append(sum(sums[i] - base[i] for i in rows) / sum(int(counts[i]) for i in rows))
        return out

    for a, category in enumerate(target.ablated):
        own = evaluated.index(category)
        selected = cells(target.selected_sums[a])
        randoms = [cells(target.random_sums[a, s]) for s in range(SEEDS)]
        np.testing.assert_allclose(target.random_delta[a], randoms, rtol=1e-9, atol=1e-12)
        spec = selected[own] - sum(x for j, x in enumerate(selected) if j != own) / 5
        spec_random = [r[own] - sum(x for j, x in enumerate(r) if j != own) / 5 for r in randoms]
        test = next(t for t in target.tests() if t.ablated == category)
        assert test.damage.estimate == pytest.approx(selected[own], rel=1e-9)
        assert test.specificity.estimate == pytest.approx(spec, rel=1e-9)
        assert test.specificity.p_empirical == pytest.approx((1 + sum(v >= spec for v in spec_random)) / (1 + SEEDS))
        assert test.damage.p_empirical == pytest.approx((1 + sum(r[own] >= selected[own] for r in randoms))
                                                           / (1 + SEEDS))
        # the decision's row-aware p: each random set counts by P(t_ν ≥ (x_S − x_r) / SE) with SE the row standard
        # error of the paired excess (delta method, by loops here), ν its Welch–Satterthwaite df
        e = [(target.selected_sums[a][i] - base[i]) - sum(target.random_sums[a, s][i] - base[i] for s in range(SEEDS))
             / SEEDS for i in range(len(labels))]
        rows = [i for i in range(len(labels)) if labels[i] == category]
        if len(rows) < 2:  # the row variance is undefined: the category cannot be decided
            assert math.isnan(test.damage.p) and "fewer than two rows" in test.decision.damage_reason
            continue
        total = sum(int(counts[i]) for i in rows)
        ratio = sum(e[i] for i in rows) / total
        var = len(rows) / (len(rows) - 1) * sum((e[i] - ratio * int(counts[i])) ** 2 for i in rows) / total ** 2
        se = math.sqrt(var)
        want = (1 + sum(student.sf((selected[own] - r[own]) / se, len(rows) - 1) for r in randoms)) / (1 + SEEDS)
        assert test.damage.p == pytest.approx(want, rel=1e-9) and test.damage.se_rows == pytest.approx(se, rel=1e-9)
        assert test.damage.test == "row-aware empirical" and "row-aware empirical" in verdict_text(test)


def test_files_carry_the_tests(study):
    out, result = study["out"], study["result"]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    neurons = summary["targets"]["neurons"]
    assert neurons["statistics"]["rule"].startswith("row-aware empirical p")
    assert set(neurons["statistics"]["claims"]) == {"damage", "specificity"}
    assert neurons["statistics"]["random_sets"] == SEEDS and neurons["statistics"]["bootstrap"]["replicates"] == 100
    stored = {t.ablated: t.decision for t in read_causal(out).targets["neurons"].tests}
    assert set(stored) == set(CATEGORIES)
    with (out / "tables" / "specificity_tests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["ablated"] for r in rows] == CATEGORIES
    assert {"damage_test", "specificity_test", "damage_p_empirical", "damage_se_rows", "damage_df", "verdict",
            "damage_outcome", "specificity_outcome", "specificity_low", "specificity_high"} <= set(rows[0])
    for name in ("delta_nll_paired", "delta_nll_z_matrix_neurons", "delta_nll_excess_matrix_neurons"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
    image = out / "plots" / "delta_nll_normalised_neurons.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {t.ablated: t.decision for t in result.targets["neurons"].tests()} == stored  # read back as computed
