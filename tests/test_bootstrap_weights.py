"""The bootstrap's Poisson weights, checked without trusting the code that draws them.

test_profile_runs checks that each replicate is the weighted sum of per-instruction counts, but it takes the
weights from ``replicate_weights`` itself, so a generator returning all ones would pass it. Here the weights are
held to what a Poisson(1) bootstrap needs: the distribution (mean 1, variance 1, P(0) = 1/e, a chi-square fit;
tolerances of five standard errors), independence across replicates, ids and seeds, determinism across
processes, and — through whole profile runs — keying by instruction id, so counts do not depend on row order,
batch composition or how a dataset was split. The last tests swap in wrong generators and show the checks fail.
"""

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import ROWS, tiny_model, tiny_tokenizer

from sparcom import ProfileSettings, merge_runs, profile, wrap_model
from sparcom.profile import runner  # the module (sparcom.profile is also a function)

IDS = [f"hexainst-{source}-{cat}-{k:03d}" for source in ("ai", "human") for cat in ("cls", "code", "qa", "gen",
                                                                                      "math", "sum")
       for k in range(170)]  # 2,040 ids in the real naming scheme (neighbouring ids differ by one character)
REPLICATES = 25  # 51,000 draws: five standard errors of the mean are ±0.022
SIGMAS = 5.0


def draws(generator, ids=IDS, replicates=REPLICATES, seed=0) -> np.ndarray:
    """[ids, replicates] weights as float64."""
    return np.stack([generator(i, replicates, seed).to(torch.float64).numpy() for i in ids])


def chi_square_p_value_even_df(statistic: float, df: int) -> float:
    """Upper tail of the chi-square distribution for an even number of degrees of freedom (closed form)."""
    half = statistic / 2
    return math.exp(-half) * sum(half**i / math.factorial(i) for i in range(df // 2))


def poisson_pmf(k: int, mean: float) -> float:
    return math.exp(-mean) * mean**k / math.factorial(k)


def check_poisson(values: np.ndarray, mean: float = 1.0) -> None:
    """Raise AssertionError unless ``values`` look like independent Poisson(mean) draws."""
    x = values.reshape(-1)
    n = x.size
    assert (x >= 0).all() and (x == np.round(x)).all(), "weights must be non-negative whole numbers"
    sample_mean = x.sum() / n
    sample_var = ((x - sample_mean) ** 2).sum() / (n - 1)
    # Var(sample mean) = mean / n; Var(sample variance) ≈ (mu4 - var²) / n with mu4 = mean (1 + 3 mean).
    assert abs(sample_mean - mean) < SIGMAS * math.sqrt(mean / n), f"mean {sample_mean:.4f}, want {mean}"
    var_se = math.sqrt((mean * (1 + 3 * mean) - mean**2) / n)
    assert abs(sample_var - mean) < SIGMAS * var_se, f"variance {sample_var:.4f}, want {mean}"
    p0 = poisson_pmf(0, mean)
    share0 = (x == 0).sum() / n
    assert abs(share0 - p0) < SIGMAS * math.sqrt(p0 * (1 - p0) / n), f"P(0) {share0:.4f}, want {p0:.4f}"
    # Chi-square fit on bins 0, 1, …, top-1 and "≥ top" (df = top), top as large as keeps every bin at ≥ 20
    # expected draws, and even so that the tail has a closed form.
    def tail(k: int) -> float:
        return 1 - sum(poisson_pmf(i, mean) for i in range(k))

    top = 2
    while n * tail(top + 1) >= 20:
        top += 1
    top -= top % 2
    expected = [n * poisson_pmf(k, mean) for k in range(top)] + [n * tail(top)]
    observed = [(x == k).sum() for k in range(top)] + [(x >= top).sum()]
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    df = top
    p_value = chi_square_p_value_even_df(statistic, df)
    assert p_value > 1e-6, f"chi-square {statistic:.1f} on {df} df (p = {p_value:.2g}): not Poisson({mean})"


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1) - a.mean()
    b = b.reshape(-1) - b.mean()
    denominator = math.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator else 1.0  # constant streams count as dependent


def check_independent(first: np.ndarray, second: np.ndarray, what: str) -> None:
    """Pearson correlation within five standard errors (1/sqrt(n)) of zero."""
    r = correlation(first, second)
    assert abs(r) < SIGMAS / math.sqrt(first.size), f"{what}: correlation {r:.3f}"


def check_generator(generator) -> None:
    """Every property a bootstrap weight generator needs, on ``generator(row_id, replicates, seed)``.

    All checks run; the AssertionError lists every one that failed (so a test can ask for a particular one).
    """
    weights = draws(generator)
    other_seed = draws(generator, seed=1)

    def deterministic() -> None:
        for row_id in IDS[:20]:
            assert torch.equal(generator(row_id, REPLICATES, 0), generator(row_id, REPLICATES, 0)), row_id

    def streams_differ() -> None:
        # Two independent Poisson(1) 25-vectors are equal with probability 0.31**25 ≈ 1e-13.
        same_seed = sum(np.array_equal(a, b) for a, b in zip(weights, other_seed, strict=True))
        same_id = sum(np.array_equal(a, b) for a, b in itertools.pairwise(weights))
        assert same_seed == 0, f"{same_seed} ids got the same weights under seeds 0 and 1"
        assert same_id == 0, f"{same_id} neighbouring ids got the same weights"

    checks = [
        lambda: check_poisson(weights),
        lambda: check_independent(weights[:, :-1], weights[:, 1:], "neighbouring replicates of one id"),
        lambda: check_independent(weights[:-1], weights[1:], "neighbouring ids"),
        lambda: check_independent(weights, other_seed, "seed 0 and seed 1"),
        deterministic,
        streams_differ,
    ]
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    assert not failures, "; ".join(failures)


def test_replicate_weights_are_independent_poisson_one_per_id_and_seed():
    check_generator(runner.replicate_weights)


def test_replicate_weights_are_the_same_in_another_process():
    """Resume and merge across machines need weights that depend on nothing but (seed, id)."""
    ids = IDS[::97]
    code = ("import json, sys; from sparcom.profile.runner import replicate_weights as w; "
            "print(json.dumps([w(i, 7, s).tolist() for s in (0, 3) for i in json.loads(sys.argv[1])]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                            env=env, check=True)
    here = [runner.replicate_weights(i, 7, s).tolist() for s in (0, 3) for i in ids]
    assert json.loads(result.stdout) == here


# --- through profile runs: the weights are keyed by instruction id ---------------------------------------------

@pytest.fixture(scope="module")
def loaded():
    return wrap_model(tiny_model("gpt2", seed=2), tiny_tokenizer())


def bootstrap_counters(run) -> dict[str, torch.Tensor]:
    return {k: v for k, v in run.counts.items() if k.startswith("bootstrap/")}


def check_same_counters(run, reference) -> None:
    """Plain and bootstrap counters identical, key for key."""
    assert set(run.counts) == set(reference.counts)
    assert bootstrap_counters(reference)
    for key, value in reference.counts.items():
        assert np.array_equal(run.counts[key], value), key


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_order_and_batching_invariance(loaded, dataset: Path, tmp_path: Path, before_each_run=lambda: None) -> None:
    settings = ProfileSettings(batch_size=1, bootstrap=6, bootstrap_seed=11)
    before_each_run()
    reference = profile(loaded, dataset, tmp_path / "reference", settings, progress=False)
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    shuffled = write_rows(tmp_path / "shuffled.jsonl", [rows[i] for i in np.random.default_rng(3).permutation(len(rows))])
    for name, data, batch_size, side in (("shuffled", shuffled, 1, "right"), ("batched", dataset, 3, "left"),
                                         ("shuffled-batched", shuffled, 8, "right")):
        before_each_run()
        run = profile(loaded, data, tmp_path / name, ProfileSettings(batch_size=batch_size, padding_side=side,
                                                                      bootstrap=6, bootstrap_seed=11),
                      progress=False)
        check_same_counters(run, reference)


def test_bootstrap_counts_do_not_depend_on_row_order_or_batches(loaded, dataset, tmp_path):
    check_order_and_batching_invariance(loaded, dataset, tmp_path)


def test_bootstrap_counts_follow_the_id_not_the_row(loaded, dataset, tmp_path):
    """Same rows under other ids: plain counts equal, bootstrap counts differ; halves merged equal the whole."""
    settings = ProfileSettings(batch_size=2, bootstrap=6, bootstrap_seed=11)
    whole = profile(loaded, dataset, tmp_path / "whole", settings, progress=False)
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    renamed = write_rows(tmp_path / "renamed.jsonl", [{**row, "id": row["id"] + "-b"} for row in rows])
    other = profile(loaded, renamed, tmp_path / "renamed", settings, progress=False)
    for key, value in whole.counts.items():
        if key.startswith("bootstrap/"):
            continue
        assert np.array_equal(other.counts[key], value), key
    assert not np.array_equal(other.counts["bootstrap/instructions/code"], whole.counts["bootstrap/instructions/code"])
    reseeded = profile(loaded, dataset, tmp_path / "reseeded", ProfileSettings(batch_size=2, bootstrap=6),
                       progress=False)
    assert not np.array_equal(reseeded.counts["bootstrap/tokens/sum"], whole.counts["bootstrap/tokens/sum"])
    write_rows(tmp_path / "odd.jsonl", rows[1::2])
    write_rows(tmp_path / "even.jsonl", rows[0::2])
    for half in ("odd", "even"):
        profile(loaded, tmp_path / f"{half}.jsonl", tmp_path / half, settings, progress=False)
    merged = merge_runs([tmp_path / "odd", tmp_path / "even"], tmp_path / "merged")
    check_same_counters(merged, whole)


def check_run_weights_are_poisson(loaded, dataset: Path, tmp_path: Path) -> None:
    """Per-category instruction counters of a run are sums of n_c Poisson(1) weights: Poisson(n_c)."""
    replicates = 2000
    run = profile(loaded, dataset, tmp_path / "many", ProfileSettings(batch_size=4, bootstrap=replicates,
                                                                      bootstrap_seed=5), progress=False)
    per_category: dict[str, int] = {}
    for category, *_ in ROWS:
        per_category[category] = per_category.get(category, 0) + 1
    for category, n in per_category.items():
        counter = run.counts[f"bootstrap/instructions/{category}"].astype(np.float64)
        assert counter.shape == (replicates,)
        check_poisson(counter, mean=float(n))
    # A one-row category's token counter is that row's weight times its token count, replicate by replicate.
    weight = run.counts["bootstrap/instructions/gen"]
    assert np.array_equal(run.counts["bootstrap/tokens/gen"], weight * run.counts["tokens/gen"])
    check_independent(run.counts["bootstrap/instructions/gen"],
                      run.counts["bootstrap/instructions/qa"], "categories")


def test_run_bootstrap_weights_are_poisson(loaded, dataset, tmp_path):
    check_run_weights_are_poisson(loaded, dataset, tmp_path)


# --- the checks above fail for wrong generators ----------------------------------------------------------------

def all_ones(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    return torch.ones(replicates)


def constant_two(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    return torch.full((replicates,), 2.0)


def ignores_id(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    return torch.poisson(torch.ones(replicates), generator=torch.Generator().manual_seed(seed))


def ignores_seed(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    return runner.replicate_weights(row_id, replicates, 0)


def one_draw_per_id(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    """Poisson(1) marginals, but every replicate of an id gets the same weight."""
    return runner.replicate_weights(row_id, 1, seed).expand(replicates).clone()


def same_moments_not_poisson(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    """Mean 1, variance 1 and P(0) = 1/e exactly, keyed like the real one, but on {0, 1, 2, 3}: not Poisson."""
    p3 = (1 - 2 * math.exp(-1)) / 2  # solves p1 + p2 + p3 = 1 - 1/e, p1 + 2 p2 + 3 p3 = 1, p1 + 4 p2 + 9 p3 = 2
    p2 = math.exp(-1) - 2 * p3
    p1 = 1 - math.exp(-1) - p2 - p3
    cdf = torch.tensor([math.exp(-1), math.exp(-1) + p1, math.exp(-1) + p1 + p2], dtype=torch.float64)
    key = hashlib.sha256(f"not-poisson:{seed}:{row_id}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key[:7], "little"))
    return torch.bucketize(torch.rand(replicates, generator=generator, dtype=torch.float64), cdf).float()


@pytest.mark.parametrize(("wrong", "reason"), [
    (all_ones, "variance 0.0000"), (constant_two, "mean 2.0000"), (ignores_id, "neighbouring ids: correlation 1"),
    (ignores_seed, "seed 0 and seed 1: correlation 1"),
    (one_draw_per_id, "neighbouring replicates of one id: correlation 1"),
    (same_moments_not_poisson, r"chi-square .* not Poisson"),
])
def test_the_weight_checks_reject_a_wrong_generator(wrong, reason):
    with pytest.raises(AssertionError, match=reason):
        check_generator(wrong)


def test_the_run_checks_reject_all_ones(loaded, dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "replicate_weights", all_ones)
    with pytest.raises(AssertionError, match="variance"):
        check_run_weights_are_poisson(loaded, dataset, tmp_path)


def test_the_run_checks_reject_weights_drawn_in_row_order(loaded, dataset, tmp_path, monkeypatch):
    """Poisson(1) from one stream consumed row by row: right distribution, but tied to order and batches."""
    stream = {"generator": None}

    def row_order(row_id: str, replicates: int, seed: int) -> torch.Tensor:
        if stream["generator"] is None:
            stream["generator"] = torch.Generator().manual_seed(seed)
        return torch.poisson(torch.ones(replicates), generator=stream["generator"])

    def fresh_stream() -> None:  # each run starts the stream afresh, so only order and batching differ
        stream["generator"] = None

    monkeypatch.setattr(runner, "replicate_weights", row_order)
    with pytest.raises(AssertionError):
        check_order_and_batching_invariance(loaded, dataset, tmp_path, before_each_run=fresh_stream)
