"""Scale-out: shards and torchrun ranks count exactly the batches of one process, so their counts are the same bytes.

Ranks run as separate processes on gloo (tests/dist_jobs.py, or torchrun itself through the console script), on one
thread each like the single-process references here. A rank that fails or dies must end the job with one line, and
the job must resume from its last checkpoint to the counts of an uninterrupted single process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from causal_tiny import one_thread, tiny_moe  # noqa: F401
from dist_jobs import launch, rank_environment, reserved_port
from oracle import reference_counts
from test_profile_oracle import assert_same_counts
from tiny import ROWS, tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, load_run, merge_runs, profile
from sparcom.artifacts.run import CHECKPOINT_FILE, COUNTS_FILE, load_checkpoint
from sparcom.distributed import Launch, placement, rank_gpus, timeout_seconds
from sparcom.errors import SparcomError
from sparcom.profile.sharing import Shard, balanced_owners, round_bounds, round_share

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
ENV = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}

# More rows than tests/tiny.py's twelve, so every rank gets several rounds of batches.
MANY_ROWS = ROWS + [(c, f"{i} {t}", x, o) for i, (c, t, x, o) in enumerate(ROWS)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A dense and a Mixture-of-Experts model folder and a 24-row dataset, as users hand them to sparcom."""
    root = tmp_path_factory.mktemp("dist")
    dense, moe = root / "tiny-llama", root / "tiny-qwen2-moe"
    tiny_model("llama", seed=1).save_pretrained(dense)
    tiny_moe("qwen2_moe", seed=3).save_pretrained(moe)
    for folder in (dense, moe):
        tiny_tokenizer().save_pretrained(folder)
    return {"dense": dense, "moe": moe, "data": write_dataset(root / "rows.jsonl", MANY_ROWS)}


def counts_bytes(run_dir: Path) -> bytes:
    return (Path(run_dir) / COUNTS_FILE).read_bytes()


def single(model: Path, data: Path, out: Path, **settings) -> Path:
    """The reference: one process, one thread (the ranks also run on one thread each)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile(str(model), data, out, ProfileSettings(**settings), progress=False)
    finally:
        torch.set_num_threads(previous)
    return out


def profile_job(model: Path, data: Path, out: Path, resume: bool = False, **settings) -> dict:
    return {"call": "profile", "model": str(model), "data": str(data), "out": str(out), "settings": settings,
            "resume": resume}


# ------------------------------------------------------------------------------------------ the shares


def test_balanced_owners_gives_every_part_its_fair_share():
    rng = np.random.default_rng(0)
    for parts in (1, 2, 3, 8):
        costs = [int(c) for c in rng.integers(1, 500, size=40)]
        owners = balanced_owners(costs, parts)
        assert owners == balanced_owners(costs, parts)  # a function of the costs alone
        loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == p) for p in range(parts)]
        assert sum(loads) == sum(costs) and set(owners) <= set(range(parts))
        assert max(loads) <= sum(costs) / parts + max(costs)  # the greedy bound
        if parts == 2:
            assert max(loads) / min(loads) < 1.05
    # Largest first, each to the least-loaded part (ties to the lower part), computed by hand:
    assert balanced_owners([5, 9, 2, 7], 2) == [1, 0, 0, 1]  # 9→0, 7→1, 5→1 (7<9), 2→0 (9<12)


def test_rounds_end_at_multiples_so_a_resumed_job_rejoins_them():
    assert round_bounds(10, 0, 4) == [(0, 4), (4, 8), (8, 10)]
    assert round_bounds(10, 6, 4) == [(6, 8), (8, 10)]
    assert round_bounds(4, 4, 4) == []
    costs = [3, 1, 4, 1, 5, 9, 2, 6]
    shares = [round_share(costs, 2, 7, rank, 3) for rank in range(3)]
    assert sorted(i for share in shares for i in share) == [2, 3, 4, 5, 6]
    assert shares[0] == [5] and all(share == sorted(share) for share in shares)


def test_shard_parsing_is_strict():
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard.parse(" 0/1 ")) == "0/1"
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0", "1/2/3"):
        with pytest.raises(SparcomError, match="shard"):
            Shard.parse(bad)
    with pytest.raises(SparcomError, match="--shard"):
        ProfileSettings(shard="2/2").check()


def test_launch_environment_and_gpu_blocks():
    assert Launch.from_env({}) == Launch(0, 1, 0, 1)
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert Launch.from_env(env) == Launch(5, 8, 1, 4)
    with pytest.raises(SparcomError, match="RANK"):
        Launch.from_env({"WORLD_SIZE": "2", "RANK": "x"})
    with pytest.raises(SparcomError, match="inconsistent"):
        Launch.from_env({"WORLD_SIZE": "2", "RANK": "2"})
    assert rank_gpus(0, 2, 8) == [0, 1, 2, 3] and rank_gpus(1, 2, 8) == [4, 5, 6, 7]
    assert rank_gpus(2, 3, 8) == [4, 5]  # 8 GPUs over 3 ranks: two each, GPUs 6 and 7 unused
    with pytest.raises(SparcomError, match="--nproc-per-node"):
        rank_gpus(0, 4, 2)
    two = Launch(1, 2, 1, 2)
    assert placement("cpu", None, two) == ("cpu", None)
    assert placement("cuda", None, Launch(0, 1, 0, 1)) == ("cuda", None)
    with pytest.raises(SparcomError, match="one GPU"):
        placement("cuda:0", None, two)
    with pytest.raises(SparcomError, match="mps"):
        placement("mps", None, two)
    assert timeout_seconds({}) == 1800 and timeout_seconds({"SPARCOM_DIST_TIMEOUT": "5"}) == 5
    with pytest.raises(SparcomError, match="SPARCOM_DIST_TIMEOUT"):
        timeout_seconds({"SPARCOM_DIST_TIMEOUT": "soon"})


def test_each_rank_spreads_its_copy_over_its_own_block_of_gpus(monkeypatch):
    """--device-map auto under torchrun: the rank's GPUs (and a share of the RAM) are all accelerate may use."""
    import psutil

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda g: (80_000 + g, 81_000))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    device, memory = placement("cpu", "auto", Launch(rank=3, world_size=4, local_rank=1, local_world_size=2))
    assert device == "cuda:4" and memory == {4: 80_004, 5: 80_005, 6: 80_006, 7: 80_007, "cpu": 500}
    assert placement("cuda", None, Launch(3, 4, 1, 2)) == ("cuda:1", None)
    with pytest.raises(SparcomError, match="16 ranks on this node but 8"):
        placement("cuda", None, Launch(3, 16, 3, 16))


def test_the_loader_passes_the_memory_limits_on(folders):
    from sparcom.models.loading import load_model

    loaded = load_model(str(folders["dense"]), device_map="auto", max_memory={"cpu": 10**10})
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    starved = load_model(str(folders["dense"]), device_map="auto", max_memory={"cpu": 1})
    assert "meta" in {p.device.type for p in starved.model.parameters()}  # no room allowed: offloaded to disk


# ------------------------------------------------------------------------------------------ shards


@pytest.mark.parametrize(("kind", "group_by", "parts"), [("dense", "instruction", 3), ("moe", "source", 2)])
def test_merged_shards_are_the_whole_run_byte_for_byte(folders, tmp_path, kind, group_by, parts):
    settings = dict(batch_size=2, group_by=group_by, bootstrap=2)
    whole = single(folders[kind], folders["data"], tmp_path / "whole", **settings)
    shards = [single(folders[kind], folders["data"], tmp_path / f"shard{k}", shard=f"{k}/{parts}", **settings)
              for k in range(parts)]
    runs = [load_run(s) for s in shards]
    ids = [i for run in runs for values in run.manifest["instruction_ids"].values() for i in values]
    assert sorted(ids) == sorted(f"t-{i:03d}" for i in range(len(MANY_ROWS)))  # disjoint, all rows
    assert all(run.manifest["shard"]["count"] == parts for run in runs)
    tokens = [sum(run.manifest["counted_tokens"].values()) for run in runs]
    assert min(tokens) > 0.5 * max(tokens)  # balanced by tokens, not by rows
    merged = merge_runs(list(reversed(shards)), tmp_path / "merged")  # any order
    assert counts_bytes(merged.path) == counts_bytes(whole)
    assert merged.manifest["groups"] == load_run(whole).manifest["groups"]
    assert merged.manifest["shard"] is None


def test_resume_on_a_new_out_starts_afresh_as_the_slurm_example_relies_on(folders, tmp_path):
    fresh = single(folders["dense"], folders["data"], tmp_path / "plain", batch_size=4)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile(str(folders["dense"]), folders["data"], tmp_path / "new" / "run", ProfileSettings(batch_size=4),
                progress=False, resume=True)
    finally:
        torch.set_num_threads(previous)
    assert counts_bytes(tmp_path / "new" / "run") == counts_bytes(fresh)


# ------------------------------------------------------------------------------------------ ranks (gloo)


@pytest.mark.slow
def test_two_ranks_write_the_single_process_bytes_and_match_the_oracle(folders, tmp_path):
    data = folders["data"]
    reference = single(folders["dense"], data, tmp_path / "single", batch_size=1, checkpoint_every=2,
                       group_by="instruction", bootstrap=2)
    outcomes = launch(2, profile_job(folders["dense"], data, tmp_path / "dist", batch_size=1, checkpoint_every=2,
                                     group_by="instruction", bootstrap=2), tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    assert counts_bytes(tmp_path / "dist") == counts_bytes(reference)
    assert sorted(outcomes[0]["batches"] + outcomes[1]["batches"]) == list(range(1, len(MANY_ROWS) + 1))
    run = load_run(tmp_path / "dist")
    assert run.manifest["world_size"] == 2 and run.manifest["distributed"]["backend"] == "gloo"
    assert not (tmp_path / "dist" / CHECKPOINT_FILE).exists()
    model = tiny_model("llama", seed=1)
    sums: dict = {}
    oracle = reference_counts(model, tiny_tokenizer(), data, "instruction", chat=True, sums=sums)
    assert_same_counts({k: v for k, v in run.counts.items() if not k.startswith("groups/")}, oracle)
    # The activation sums are summed over the ranks in float64: the single process's to float64 rounding.
    assert run.sums.keys() == load_run(reference).sums.keys() == sums.keys()
    for key, value in load_run(reference).sums.items():
        np.testing.assert_allclose(run.sums[key], value, rtol=1e-12, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(run.sums[key], sums[key], rtol=1e-9, atol=1e-9, err_msg=key)


@pytest.mark.slow
def test_two_ranks_count_a_moe_model_exactly(folders, tmp_path):
    settings = dict(batch_size=2, checkpoint_every=1, group_by="instruction", bootstrap=2)
    reference = single(folders["moe"], folders["data"], tmp_path / "single", **settings)
    outcomes = launch(2, profile_job(folders["moe"], folders["data"], tmp_path / "dist", **settings),
                      tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    assert counts_bytes(tmp_path / "dist") == counts_bytes(reference)
    assert set(load_run(tmp_path / "dist").manifest["expert_neuron_sources"]) == {"0", "2"}


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_the_job_resumes_exactly(folders, tmp_path):
    settings = dict(batch_size=1, checkpoint_every=2, bootstrap=2, group_by="source")
    reference = single(folders["dense"], folders["data"], tmp_path / "single", **settings)
    out = tmp_path / "dist"
    killed = launch(2, {**profile_job(folders["dense"], folders["data"], out, **settings), "kill_rank": 1,
                        "kill_after": 10}, tmp_path / "killed")
    assert killed[1]["exitcode"] == -9  # SIGKILL
    survivor = killed[0]
    assert survivor["ok"] is False and not survivor["silent"], survivor
    assert "lost contact" in survivor["error"] and "--resume" in survivor["error"]
    done = load_checkpoint(out / CHECKPOINT_FILE)[1]["batches_done"]  # the checkpoint carries its progress record
    assert done % 4 == 0 and 8 <= done < len(MANY_ROWS)  # a round (2 ranks × 2 batches) boundary before the death
    resumed = launch(2, profile_job(folders["dense"], folders["data"], out, resume=True, **settings),
                     tmp_path / "resumed")
    assert [o.get("ok") for o in resumed] == [True, True], resumed
    assert min(resumed[0]["batches"] + resumed[1]["batches"]) == done + 1  # nothing before the checkpoint again
    assert counts_bytes(out) == counts_bytes(reference)


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank_with_its_message_and_one_process_resumes(folders, tmp_path):
    settings = dict(batch_size=1, checkpoint_every=1, group_by="instruction")
    reference = single(folders["moe"], folders["data"], tmp_path / "single", **settings)
    out = tmp_path / "dist"
    failed = launch(2, {**profile_job(folders["moe"], folders["data"], out, **settings), "fail_rank": 1,
                        "fail_after": 12, "fail_message": "disk /scratch of rank 1 is full"}, tmp_path / "failed")
    assert [o["exitcode"] for o in failed] == [0, 0]  # both ended by the error, none hung or crashed
    assert [o["ok"] for o in failed] == [False, False]
    assert failed[0]["error"] == failed[1]["error"]
    assert failed[0]["error"].startswith("rank 1 of 2 failed while counting batches")
    assert failed[0]["error"].endswith(": disk /scratch of rank 1 is full")
    assert [o["silent"] for o in failed] == [False, True]  # rank 0 alone prints it
    # the checkpoint holds the summed counts of a prefix of the plan: a single process (another world size) resumes
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile(str(folders["moe"]), folders["data"], out, ProfileSettings(**settings), progress=False, resume=True)
    finally:
        torch.set_num_threads(previous)
    assert counts_bytes(out) == counts_bytes(reference)


@pytest.mark.slow
def test_ranks_that_disagree_on_the_data_are_refused_before_counting(folders, tmp_path):
    """Rank 1's node holds another version of the data file: the job stops before counting anything."""
    other = tmp_path / "other.jsonl"
    other.write_text(folders["data"].read_text().replace("Classify", "Sort"))
    job = {**profile_job(folders["dense"], folders["data"], tmp_path / "run"), "data_by_rank": {"1": str(other)}}
    outcomes = launch(2, job, tmp_path / "results")
    assert [o["ok"] for o in outcomes] == [False, False]
    assert outcomes[0]["error"] == outcomes[1]["error"]
    assert outcomes[0]["error"].startswith("rank 1 of 2 has other settings, data or model files than rank 0")
    assert outcomes[0]["batches"] == outcomes[1]["batches"] == []
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ the command line


def run_script(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env or ENV, timeout=900)


@pytest.mark.slow
def test_torchrun_dash_m_sparcom_profile_writes_the_single_process_bytes(folders, tmp_path):
    common = ["--data", folders["data"], "--quiet", "--batch-size", "2", "--checkpoint-every", "1"]
    done = run_script(BIN / "sparcom", "profile", folders["dense"], "--out", tmp_path / "single", *common)
    assert done.returncode == 0, done.stderr
    with reserved_port() as port:
        done = run_script(BIN / "torchrun", "--nproc-per-node", "2", "--master-port", port, "-m", "sparcom",
                          "profile", folders["dense"], "--out", tmp_path / "dist", *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("counted tokens") == 1  # rank 0 alone prints the summary
    assert counts_bytes(tmp_path / "dist") == counts_bytes(tmp_path / "single")
    assert load_run(tmp_path / "dist").manifest["world_size"] == 2


@pytest.mark.slow
def test_two_nodes_meet_through_torchruns_rendezvous(folders, tmp_path):
    """Two torchrun launchers (one per 'node', one rank each) joined by the c10d rendezvous, as on a cluster."""
    with reserved_port() as port:
        nodes = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
                                   "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "sparcom-test", "-m",
                                   "sparcom", "profile", str(folders["moe"]), "--data", str(folders["data"]),
                                   "--out", str(tmp_path / "dist"), "--quiet", "--batch-size", "2", "--group-by",
                                   "source"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        finished = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], finished
    reference = single(folders["moe"], folders["data"], tmp_path / "single", batch_size=2, group_by="source")
    assert counts_bytes(tmp_path / "dist") == counts_bytes(reference)
    assert sum(stdout.count("counted tokens") for stdout, _ in finished) == 1


@pytest.mark.slow
def test_one_rank_that_cannot_load_the_model_ends_the_job_with_one_line(folders, tmp_path):
    """Two console scripts joined as ranks of one job; rank 1's node lacks the model folder (found when the ranks
    read the model's files, before any weights load)."""
    out = tmp_path / "run"
    processes = []
    with reserved_port() as port:
        for rank, model in ((0, folders["dense"]), (1, tmp_path / "not-on-this-node")):
            env = {**ENV, **rank_environment(rank, 2, port)}
            processes.append(subprocess.Popen([str(BIN / "sparcom"), "profile", str(model), "--data",
                                               str(folders["data"]), "--out", str(out), "--quiet"], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        finished = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [2, 2]
    errors = [line for _, stderr in finished for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1 of 2 failed while reading the model's files: "), finished
    assert "not-on-this-node" in errors[0] and "does not exist" in errors[0]
    assert "Traceback" not in "".join(stdout + stderr for stdout, stderr in finished)


@pytest.mark.slow
def test_torchrun_job_whose_ranks_fail_exits_non_zero_with_one_sparcom_line(folders, tmp_path):
    with reserved_port() as port:
        done = run_script(BIN / "torchrun", "--nproc-per-node", "2", "--master-port", port, "-m", "sparcom",
                          "profile", folders["dense"], "--data", folders["data"], "--out", tmp_path / "run",
                          "--quiet", "--per-category", "0")
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: every rank failed while checking the settings and data: --per-category must be at least "
                    "1, got 0"], done.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ the causal check


def one_thread_check(model: str, selection: Path, data: Path, out: Path, settings: dict):
    """The one-process check the ranks are compared with, on one thread like each rank."""
    from sparcom.api import ablate

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ablate(model, selection, data, out=out, plots=False, progress=False, **settings)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_two_ranks_share_the_default_check_mean_ablation_against_whole_frequency_bins(folders, tmp_path):
    """The defaults read the selection's profile run (its sums for the means, its counts for the frequency bins):
    two ranks give the one-process numbers of every condition. Near misses refuse a set that fills more than half
    of a block (whole bins draw it)."""
    from dist_jobs import causal_numbers

    from sparcom import SelectionRule, identify
    from sparcom.api import ablate

    model, data = str(folders["moe"]), folders["data"]
    run = single(folders["moe"], data, tmp_path / "run", batch_size=4)
    identify(load_run(run), SelectionRule("percentile", 0.05), sweep=False, out=tmp_path / "wide", plots=False)
    settings = dict(seeds=2, per_category=2, dtype="float32")
    with pytest.raises(SparcomError, match="holds more than half of this one; pass --control shape"):
        ablate(model, tmp_path / "wide", data, out=tmp_path / "refused", plots=False, progress=False,
               controls=("frequency",), **settings)
    assert not (tmp_path / "refused").exists()
    identify(load_run(run), SelectionRule("percentile", 0.01), sweep=False, out=tmp_path / "selection", plots=False)
    result = one_thread_check(model, tmp_path / "selection", data, tmp_path / "single", settings)
    assert {(t.intervention, t.control) for t in result.targets.values()} == {("mean", "frequency-bin")}
    job = {"call": "ablate", "model": model, "selection": str(tmp_path / "selection"), "data": str(data),
           "out": str(tmp_path / "dist"), "settings": settings}
    outcomes = launch(2, job, tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    expected = causal_numbers(result)
    for outcome in outcomes:
        assert outcome["summary"] == expected


@pytest.mark.slow
def test_two_ranks_stop_together_when_decided_with_the_one_process_numbers(folders, tmp_path):
    """--stop-when-decided runs the plan in rounds shared over the ranks; every rank decides to stop on the same
    results, so two ranks stop after the same draw and write the one-process numbers."""
    from dist_jobs import causal_numbers

    from sparcom import SelectionRule, identify

    model, data = str(folders["moe"]), folders["data"]
    run = single(folders["moe"], data, tmp_path / "run", batch_size=4)
    identify(load_run(run), SelectionRule("percentile", 0.01), sweep=False, out=tmp_path / "selection", plots=False)
    settings = dict(seeds=6, per_category=2, dtype="float32", stop_when_decided=True)
    result = one_thread_check(model, tmp_path / "selection", data, tmp_path / "single", settings)
    drawn = {t.random_delta.shape[1] for t in result.targets.values()}
    assert drawn == {1}  # with 6 random sets no pooled test can reach alpha: settled after the first draw
    job = {"call": "ablate", "model": model, "selection": str(tmp_path / "selection"), "data": str(data),
           "out": str(tmp_path / "dist"), "settings": settings}
    outcomes = launch(2, job, tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    for outcome in outcomes:
        assert outcome["summary"] == causal_numbers(result)


@pytest.mark.slow
def test_two_ranks_share_the_causal_check_and_get_one_process_numbers(folders, tmp_path):
    """Conditions (targets × categories × random seeds, NLL and generation) over 2 ranks: the same numbers."""
    from causal_tiny import ZERO_SHAPE, random_masks, write_selection_dir
    from dist_jobs import causal_numbers

    from sparcom.api import ablate
    from sparcom.models.loading import load_model
    from sparcom.models.sites import model_sites

    loaded = load_model(str(folders["moe"]), dtype="float32")
    masks = random_masks(model_sites(loaded.model), ["cls", "code", "qa", "gen", "math", "sum"], seed=4)
    selection = write_selection_dir(tmp_path / "selection", masks, loaded, ["cls", "code", "qa", "gen", "math", "sum"])
    data = write_dataset(tmp_path / "rows.jsonl")
    settings = dict(seeds=3, generate=True, max_new_tokens=4, generate_seeds=1, dtype="float32", **ZERO_SHAPE)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = causal_numbers(ablate(str(folders["moe"]), selection, data, out=tmp_path / "single", plots=False,
                                         progress=False, **settings))
    finally:
        torch.set_num_threads(previous)
    job = {"call": "ablate", "model": str(folders["moe"]), "selection": str(selection), "data": str(data),
           "out": str(tmp_path / "dist"), "settings": settings}
    outcomes = launch(2, job, tmp_path / "results")
    assert [o.get("ok") for o in outcomes] == [True, True], outcomes
    for outcome in outcomes:
        assert outcome["summary"] == expected  # every rank holds every condition's numbers, exactly
    passes = 1 + 2 * 6 * (1 + 3)  # unablated; 2 targets × 6 categories × (selected + 3 random sets)
    assert sorted(o["nll_passes"] for o in outcomes) == [passes // 2, passes - passes // 2]  # shared, not repeated
    assert set(expected["neurons"]) == {"nll", "delta", "random_delta"} and len(expected["per_example"]) == 1 + 2 * 6
    tables = sorted(p.name for p in (tmp_path / "single" / "tables").iterdir())
    assert tables == sorted(p.name for p in (tmp_path / "dist" / "tables").iterdir())
    for name in tables:
        assert (tmp_path / "dist" / "tables" / name).read_bytes() == (tmp_path / "single" / "tables" / name
                                                                       ).read_bytes(), name
    assert (tmp_path / "dist" / "generations.jsonl").read_bytes() == (tmp_path / "single" / "generations.jsonl"
                                                                       ).read_bytes()


def test_run_shared_gives_every_condition_once_in_order():
    from sparcom.causal.spread import my_conditions, run_shared
    from sparcom.distributed import SINGLE, Launch, Ranks

    assert run_shared([3, 1, 2], lambda c: c * 10) == [30, 10, 20]
    ranks = [Ranks(Launch(r, 3, r, 3)) for r in range(3)]
    shares = [my_conditions(8, r) for r in ranks]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert my_conditions(4, SINGLE) == [0, 1, 2, 3]
