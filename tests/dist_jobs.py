"""Launch the ranks of a distributed test job as separate processes, the way torchrun would (environment variables).

Each rank is a fresh ``spawn`` process that sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT, runs one sparcom call on one thread, and leaves its outcome in ``results/rank{r}.json``. Unlike
``torch.multiprocessing.spawn``, a rank that dies does not make the launcher kill the others: the test sees how the
survivors end. A job can make one rank fail (raise a SparcomError) or die (SIGKILL) after a given batch.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free port, held for the block: bound (not listening) with SO_REUSEADDR, so the system gives it to no other
    process meanwhile (a port that is merely free when chosen can be taken before the job binds it), while the job's
    TCPStore, which binds with SO_REUSEADDR too, can listen on it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def rank_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "SPARCOM_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1"}


def _rank_main(rank: int, world_size: int, port: int, job: dict[str, Any]) -> None:
    os.environ.update(rank_environment(rank, world_size, port))
    import torch

    torch.set_num_threads(1)
    from sparcom.distributed import leave
    from sparcom.errors import SparcomError

    seen: list[int] = []

    def on_batch_end(done: int) -> None:
        seen.append(done)
        if rank == job.get("kill_rank") and done > job["kill_after"]:
            os.kill(os.getpid(), signal.SIGKILL)
        if rank == job.get("fail_rank") and done > job["fail_after"]:
            raise SparcomError(job["fail_message"])

    outcome: dict[str, Any] = {"rank": rank}
    try:
        if job["call"] == "profile":
            from sparcom import ProfileSettings, profile

            data = job.get("data_by_rank", {}).get(str(rank), job["data"])
            run = profile(job["model"], data, job["out"], ProfileSettings(**job["settings"]),
                          resume=job.get("resume", False), progress=False, on_batch_end=on_batch_end)
            outcome.update(ok=True, counts_keys=len(run.counts), tokens=run.manifest["counted_tokens"])
        elif job["call"] == "attribute":
            from sparcom import attribute

            run = attribute(job["model"], job["data"], job["out"], progress=False, **job["settings"])
            outcome.update(ok=True, sums_keys=len(run.sums), world_size=run.manifest["world_size"])
        else:  # the causal check, counting the NLL passes this rank runs
            from sparcom.api import ablate
            from sparcom.causal.scoring import ScoringPlan

            passes = []
            original = ScoringPlan.run

            def counted_run(*args, **kwargs):  # one call = one NLL pass over the scored rows
                passes.append(1)
                return original(*args, **kwargs)

            ScoringPlan.run = counted_run
            result = ablate(job["model"], job["selection"], job["data"], out=job.get("out"), plots=False,
                            progress=False, **job["settings"])
            outcome.update(ok=True, summary=causal_numbers(result), nll_passes=len(passes))
    except SparcomError as exc:
        outcome.update(ok=False, error=str(exc), silent=getattr(exc, "silent", False))
    finally:
        outcome["batches"] = seen
        leave()
        Path(job["results"], f"rank{rank}.json").write_text(json.dumps(outcome))


def causal_numbers(result) -> dict[str, Any]:
    """Every number of a causal result that the ranks compute, as exact lists (floats round-trip through JSON)."""
    numbers: dict[str, Any] = {"baseline_sums": result.baseline_sums.tolist(), "counts": result.counts.tolist(),
                               "per_example": {k: v.tolist() for k, v in sorted(result.per_example.items())}}
    for name, target in result.targets.items():
        numbers[name] = {"nll": target.nll.tolist(), "delta": target.delta.tolist(),
                         "random_delta": target.random_delta.tolist()}
    numbers["accuracy"] = result.accuracy
    numbers["generations"] = [g["generation"] for g in result.generations]
    return numbers


def launch(world_size: int, job: dict[str, Any], results: Path, timeout: float = 600) -> list[dict[str, Any]]:
    """Run ``job`` on ``world_size`` ranks; every rank's outcome (``{"exitcode": ...}`` for a rank that died)."""
    results.mkdir(parents=True, exist_ok=True)
    job = {**job, "results": str(results)}
    context = multiprocessing.get_context("spawn")
    with reserved_port() as port:
        processes = [context.Process(target=_rank_main, args=(rank, world_size, port, job))
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout)
    hung = [p for p in processes if p.is_alive()]
    for process in hung:
        process.kill()
    assert not hung, f"{len(hung)} rank(s) hung"
    outcomes = []
    for rank, process in enumerate(processes):
        path = results / f"rank{rank}.json"
        outcome = json.loads(path.read_text()) if path.is_file() else {"rank": rank}
        outcome["exitcode"] = process.exitcode
        outcomes.append(outcome)
    return outcomes
