"""'sparcom evaluate': a selection's fixed sets decode a second run of other instructions (tiny real model).

The decoding numbers are checked against a plain loop implementation of held-out decoding with fixed sets
(training-fold standardisation, set-score argmax, nearest centroid on the union and on all components).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from causal_tiny import one_thread  # noqa: F401
from tiny import tiny_model, tiny_tokenizer

import sparcom
from sparcom import ProfileSettings, profile, wrap_model
from sparcom.analysis.groups import load_groups, stratified_folds
from sparcom.artifacts.run import load_run
from sparcom.artifacts.selection import load_selection
from sparcom.artifacts.summaries import read_evaluate
from sparcom.errors import SparcomError

CATEGORIES = ("cls", "code", "qa", "gen", "math", "sum")
TOPICS = ("the sea", "a train", "the wind", "a poem", "numbers", "a garden", "the night", "a city")
TASKS = {"cls": "Classify the sentiment of this sentence about {t}.", "code": "Write a Python function about {t}.",
         "qa": "What is the capital near {t}?", "gen": "Write a short story about {t}.",
         "math": "Compute 12 times {n} and explain {t}.", "sum": "Summarize this text about {t}: {t} was calm."}


def write_rows(path, start: int, per_category: int = 4):
    with path.open("w", encoding="utf-8") as handle:
        for category in CATEGORIES:
            for i in range(per_category):
                topic = TOPICS[(start + i) % len(TOPICS)]
                handle.write(json.dumps({
                    "id": f"{category}-{start + i}", "category": category, "source": "ai" if i % 2 else "human",
                    "origin": "tests", "instruction": TASKS[category].format(t=topic, n=start + i), "input": "",
                    "output": "ok", "license": "CC0-1.0"}) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    model = wrap_model(tiny_model("llama", seed=1), tiny_tokenizer())
    settings = ProfileSettings(batch_size=8, group_by="instruction")
    first = profile(model, write_rows(root / "first.jsonl", 0), root / "first", settings, progress=False)
    second = profile(model, write_rows(root / "second.jsonl", 4), root / "second", settings, progress=False)
    other = wrap_model(tiny_model("llama", seed=2), tiny_tokenizer())
    foreign = profile(other, root / "second.jsonl", root / "foreign", settings, progress=False)
    sparcom.identify(first.path, rule="percentile", epsilon=0.05, folds=2, random_sets=5, out=root / "selection", plots=False)
    return {"root": root, "first": first.path, "second": second.path, "foreign": foreign.path,
            "selection": root / "selection"}


def direct_fixed_decoding(groups, mask, folds, seed=0):
    """Held-out accuracy with fixed sets, written plainly (loops over folds, instructions and categories)."""
    assignment = stratified_folds(groups, folds, seed)
    x = groups.frequencies()
    k = len(groups.category_order)
    truth = groups.category_index
    union = mask.any(axis=0)
    correct = {"set_score": 0, "centroid": 0, "all": 0}
    evaluated = 0
    for f in range(folds):
        train = [g for g in range(groups.size) if assignment[g] != f and groups.tokens[g] > 0]
        held = [g for g in range(groups.size) if assignment[g] == f and groups.tokens[g] > 0]
        mean = x[train].mean(axis=0)
        sd = x[train].std(axis=0, ddof=1)
        z = np.zeros_like(x)
        for n in range(x.shape[1]):
            if sd[n] > 0:
                z[:, n] = (x[:, n] - mean[n]) / sd[n]
        centroids = np.array([z[[g for g in train if truth[g] == c]].mean(axis=0) for c in range(k)])
        for g in held:
            scores = [z[g, mask[c]].mean() if mask[c].any() else -np.inf for c in range(k)]
            correct["set_score"] += int(np.argmax(scores) == truth[g])
            near = [sum((z[g, n] - centroids[c, n]) ** 2 for n in np.flatnonzero(union)) for c in range(k)]
            correct["centroid"] += int(np.argmin(near) == truth[g])
            near_all = [sum((z[g, n] - centroids[c, n]) ** 2 for n in range(x.shape[1])) for c in range(k)]
            correct["all"] += int(np.argmin(near_all) == truth[g])
            evaluated += 1
    return correct, evaluated


def test_fixed_sets_decode_the_other_run_as_the_direct_loop_does(runs, tmp_path):
    result = sparcom.evaluate(runs["selection"], runs["second"], folds=2, random_sets=7, out=tmp_path / "ev")
    run = load_run(runs["second"])
    groups = load_groups(run.counts, run.manifest["groups"], "neuron", list(CATEGORIES))
    selection = load_selection(runs["selection"])
    mask = np.stack([np.concatenate([selection.mask("neuron", c, j) for j in selection.layers("neuron")])
                     for c in CATEGORIES])
    correct, evaluated = direct_fixed_decoding(groups, mask, 2)
    decoding = result.kinds["neuron"].decoding
    assert decoding.decoders["set_score"].evaluated == evaluated == 24
    assert decoding.decoders["set_score"].correct == correct["set_score"]
    assert decoding.decoders["centroid"].correct == correct["centroid"]
    assert decoding.all_components.correct == correct["all"]
    assert decoding.decoders["set_score"].random_correct.shape == (7,)
    np.testing.assert_array_equal(decoding.fold_masks, np.broadcast_to(mask, decoding.fold_masks.shape))
    assert result.kinds["neuron"].sizes == {c: int(mask[i].sum()) for i, c in enumerate(CATEGORIES)}
    assert result.notes == []  # other instructions: held out from the selection
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["format"] == "sparcom-evaluate"
    headline = summary["headline"]["neuron"]
    assert headline["set_score"]["accuracy"] == correct["set_score"] / 24 and headline["chance"] == 1 / 6
    typed = read_evaluate(tmp_path / "ev")  # the typed reader gives the same numbers, and the common header
    assert typed.headline["neuron"].decoders["set_score"].accuracy == correct["set_score"] / 24
    assert typed.header.data.categories == list(CATEGORIES) and typed.header.data.run == str(runs["second"])
    for name in ("tables/evaluate_decoding.csv", "tables/evaluate_confusion.csv", "tables/evaluate_sets.csv",
                 "plots/neuron_validity_confusion.png", "plots/neuron_validity_random.png"):
        assert (tmp_path / "ev" / name).is_file(), name


def test_evaluating_the_selections_own_instructions_says_so(runs):
    result = sparcom.evaluate(runs["selection"], runs["first"], folds=2, random_sets=3)
    assert len(result.notes) == 1 and "not held out" in result.notes[0]


def test_a_run_of_another_model_is_refused(runs, tmp_path):
    with pytest.raises(SparcomError, match=r"model\.fingerprint differs") as caught:
        sparcom.evaluate(runs["selection"], runs["foreign"], folds=2, random_sets=3, out=tmp_path / "x")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "x").exists()
