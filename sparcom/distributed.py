"""Data parallelism on torch.distributed as launched by ``torchrun``: one process per rank, exact count sums.

``torchrun`` (one node or many, also under SLURM through ``srun``) starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`join` reads them and
joins the process group (NCCL when the rank computes on CUDA, gloo on CPU) with a timeout. Without them, or with
one process, :func:`join` returns :data:`SINGLE` and every collective here is the identity: the same code runs as
a single process.

Failures end every rank with one line. Ranks meet at fixed points of the work (after loading, after each round of
batches, after each write of rank 0) and exchange their error there, if any, over a gloo control group; when one
rank failed, every rank raises :class:`RankFailure` with that rank's message, and only rank 0 prints it (the CLI
skips ``silent`` errors). A rank that dies or hangs is noticed by the others' next collective — at once for a
closed connection, after the timeout (``SPARCOM_DIST_TIMEOUT`` seconds, default 1800) for a hung peer — which ends
in one line from the first rank of each node (rank 0 may be the one that is gone). Under ``torchrun`` a dead worker
also makes the launcher stop the others.

Ranks and GPUs (:func:`placement`): with ``--device cuda`` rank r of a node computes on ``cuda:LOCAL_RANK``; with
``--device-map auto`` the node's visible GPUs are cut into ``LOCAL_WORLD_SIZE`` equal contiguous blocks and rank r
spreads its copy of the model over block r (8 GPUs, 2 ranks per node: GPUs 0–3 and 4–7).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from sparcom.errors import SparcomError

TIMEOUT_ENV = "SPARCOM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 1800.0
#: Elements per all-reduce call: bounds the communication buffer on the device (256 MiB of int64).
REDUCE_CHUNK = 32 * 1024 * 1024
#: How long a finishing rank waits at exit for the others (so rank 0 prints a failure before the launcher
#: stops the ranks that already finished).
EXIT_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Launch:
    """This process's place in the job, as the launcher set it in the environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """Read torchrun's variables; a process without ``WORLD_SIZE`` is a single process."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()
        values = {}
        for name, default in (("WORLD_SIZE", None), ("RANK", None), ("LOCAL_RANK", env.get("RANK")),
                              ("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE"))):
            raw = env.get(name, default)
            if raw is None or not str(raw).strip().isdigit():
                raise SparcomError(f"environment variable {name}={raw!r} is not a non-negative integer; start "
                                   "distributed jobs with torchrun, which sets it")
            values[name] = int(raw)
        launch = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
        if not (0 <= launch.rank < launch.world_size and 0 <= launch.local_rank < launch.local_world_size
                and launch.world_size >= 1):
            raise SparcomError(f"inconsistent torchrun environment: RANK={launch.rank} WORLD_SIZE={launch.world_size} "
                               f"LOCAL_RANK={launch.local_rank} LOCAL_WORLD_SIZE={launch.local_world_size}")
        return launch


def timeout_seconds(env: Mapping[str, str] | None = None) -> float:
    """The collectives' timeout: ``SPARCOM_DIST_TIMEOUT`` seconds, or 30 minutes."""
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SparcomError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


class RankFailure(SparcomError):
    """A failure that ends every rank of a job; ``silent`` on every rank but the one that reports it (rank 0)."""

    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


def describe(error: BaseException) -> str:
    """One line for an error: a SparcomError's own message, otherwise the exception's type and first line."""
    if isinstance(error, SparcomError):
        return str(error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 of a launched job (the one that prints and writes)."""
    return Launch.from_env().rank == 0


class Ranks:
    """The ranks of a job as this process sees them, and the few collectives sparcom needs.

    With ``world_size`` 1 every collective is the identity and :meth:`agree` re-raises the local error unchanged.
    """

    def __init__(self, launch: Launch, backend: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 control: Any = None, device: torch.device | None = None) -> None:
        self.launch = launch
        self.backend = backend
        self.timeout = timeout
        self.control = control  # the gloo group for control messages (None: the default group)
        self.device = device or torch.device("cpu")  # where counts are summed (the rank's GPU under NCCL)
        self.broken = False  # a collective failed: peers are gone, do not wait for them at exit

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0

    def describe(self) -> dict[str, Any] | None:
        """The job's shape for a manifest (None for a single process)."""
        if self.world_size == 1:
            return None
        return {"world_size": self.world_size, "backend": self.backend, "timeout_seconds": self.timeout}

    # ----------------------------------------------------------------------------------------- failures

    def _fail(self, message: str, silent: bool | None = None) -> None:
        """Raise the job-ending error (every rank raises it; rank 0 prints it unless told otherwise)."""
        record_for_torchrun(message)
        raise RankFailure(message, silent=not self.is_main if silent is None else silent)

    def _collective(self, where: str, call, *args, **kwargs):
        """Run one collective; a closed connection or a timeout (a rank died or hangs) becomes one line."""
        try:
            return call(*args, **kwargs)
        except RuntimeError as exc:  # torch.distributed.DistError included
            self.broken = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # rank 0 may be the one that is gone: the first rank of every node reports it
            self._fail(f"rank {self.rank} of {self.world_size} lost contact with the other ranks while {where} "
                       f"({first[:200]}); another rank died or hung longer than the timeout ({self.timeout:g} s, "
                       f"{TIMEOUT_ENV}); restart the job with --resume", silent=self.launch.local_rank != 0)

    def agree(self, error: BaseException | None, where: str) -> None:
        """Every rank calls this at the same point: if any rank brings an error, every rank raises it."""
        if self.world_size == 1:
            if error is not None:
                raise error
            return
        messages = self.gather(None if error is None else describe(error), where)
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if not failed:
            return
        rank, message = failed[0]
        if len(failed) == self.world_size and len({m for _, m in failed}) == 1:
            self._fail(f"every rank failed while {where}: {message}")
        more = f" (and {len(failed) - 1} other rank(s))" if len(failed) > 1 else ""
        self._fail(f"rank {rank} of {self.world_size}{more} failed while {where}: {message}")

    @contextlib.contextmanager
    def step(self, where: str) -> Iterator[None]:
        """A block every rank runs; its errors are agreed at the end (a single process raises them directly)."""
        if self.world_size == 1:
            yield
            return
        error = None
        try:
            yield
        except Exception as exc:  # KeyboardInterrupt and exits are not agreed: the launcher stops the job
            error = exc
        self.agree(error, where)

    def same(self, value: Any, what: str, where: str) -> None:
        """Refuse a job whose ranks disagree on ``value`` (their arguments, data or settings)."""
        if self.world_size == 1:
            return
        values = self.gather(value, where)
        for rank, theirs in enumerate(values):
            if theirs != values[0]:
                self._fail(f"rank {rank} of {self.world_size} has other {what} than rank 0; start every rank with "
                           "the same arguments, data and model files")

    # ----------------------------------------------------------------------------------------- collectives

    def gather(self, value: Any, where: str = "exchanging results") -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        self._collective(where, dist.all_gather_object, values, value, group=self.control)
        return values

    def broadcast(self, value: Any, where: str) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        self._collective(where, dist.broadcast_object_list, box, src=0, group=self.control)
        return box[0]

    def sum_ints(self, values: list[int], where: str) -> list[int]:
        """Element-wise exact sums of small integer lists over the ranks."""
        return [sum(column) for column in zip(*self.gather([int(v) for v in values], where), strict=True)]

    def sum_counts(self, tensors: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
        """Exact element-wise sums over the ranks of integer counters (CPU tensors, sorted by key).

        Ranks may have created different counters (some are made on first use): the union of their keys is summed,
        missing ones as zeros. Each dtype (int64 counters, int32 counts below the category) is summed in its own
        flat buffer, so there is one collective per dtype and chunk whatever the number of counters.
        """
        if self.world_size == 1:
            return {key: tensors[key] for key in sorted(tensors)}
        import torch.distributed as dist

        specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for theirs in self.gather({k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}, where):
            for key, spec in theirs.items():
                if specs.setdefault(key, spec) != spec:
                    self._fail(f"counter {key!r} is {spec} on one rank and {specs[key]} on another; the ranks "
                               "count different models or settings")
        summed: dict[str, torch.Tensor] = {}
        for dtype in sorted({dtype for _, dtype in specs.values()}, key=str):
            keys = sorted(k for k, (_, d) in specs.items() if d == dtype)
            parts = [tensors[k].detach().to("cpu").reshape(-1) if k in tensors
                     else torch.zeros(int(torch.Size(specs[k][0]).numel()), dtype=dtype) for k in keys]
            flat = torch.cat(parts).to(self.device) if parts else torch.zeros(0, dtype=dtype)
            for chunk in flat.split(REDUCE_CHUNK):
                self._collective(where, dist.all_reduce, chunk, op=dist.ReduceOp.SUM)
            flat = flat.to("cpu")
            offset = 0
            for key in keys:
                shape = specs[key][0]
                size = int(torch.Size(shape).numel())
                summed[key] = flat[offset:offset + size].reshape(shape).clone()
                offset += size
        return {key: summed[key] for key in sorted(summed)}


#: A single process: no process group, every collective the identity.
SINGLE = Ranks(Launch())
_joined: Ranks | None = None


def record_for_torchrun(message: str) -> None:
    """Leave the one-line message where torchrun looks for a worker's error, so its summary shows it too."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    record = {"message": {"message": f"SparcomError: {message}",
                          "extraInfo": {"py_callstack": f"error: {message}", "timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle)


def rank_gpus(local_rank: int, local_world_size: int, gpus: int) -> list[int]:
    """The GPUs of one rank: the node's ``gpus`` visible GPUs cut into ``local_world_size`` contiguous blocks."""
    if gpus < local_world_size:
        raise SparcomError(f"{local_world_size} ranks on this node but {gpus} visible GPU(s); start at most {gpus} "
                           "processes per node (torchrun --nproc-per-node) or use --device cpu")
    per_rank = gpus // local_world_size
    return list(range(local_rank * per_rank, (local_rank + 1) * per_rank))


def placement(device: str, device_map: str | None, launch: Launch) -> tuple[str, dict[Any, int] | None]:
    """The device this rank loads onto and, for ``--device-map auto``, the memory of the GPUs it may use."""
    if launch.world_size == 1:
        return device, None
    if device == "mps":
        raise SparcomError("--device mps cannot be shared by several ranks; use one process or --device cpu")
    cuda = torch.cuda.is_available()
    if device_map and cuda:
        import psutil

        gpus = rank_gpus(launch.local_rank, launch.local_world_size, torch.cuda.device_count())
        memory: dict[Any, int] = {g: int(torch.cuda.mem_get_info(g)[0]) for g in gpus}
        memory["cpu"] = int(psutil.virtual_memory().available // launch.local_world_size)
        return f"cuda:{gpus[0]}", memory
    if device == "cuda":
        if cuda:
            rank_gpus(launch.local_rank, launch.local_world_size, torch.cuda.device_count())
        return f"cuda:{launch.local_rank}", None
    if device.startswith("cuda:") and launch.local_world_size > 1:
        raise SparcomError(f"--device {device} would put all {launch.local_world_size} ranks of this node on one GPU; "
                           "pass --device cuda (rank r uses cuda:LOCAL_RANK) or --device-map auto")
    return device, None


def join(device: str = "cpu", device_map: str | None = None) -> Ranks:
    """Join the job torchrun started (once per process); :data:`SINGLE` outside torchrun or with one process."""
    global _joined
    if _joined is not None:
        return _joined
    launch = Launch.from_env()
    if launch.world_size == 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise SparcomError("this torch build has no torch.distributed; run one process per job or install a torch "
                           "build with distributed support")
    timeout = timeout_seconds()
    rank_device, _ = placement(device, device_map, launch)
    cuda = rank_device.startswith("cuda") and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    try:
        if cuda:
            torch.cuda.set_device(torch.device(rank_device))
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
        backend = str(dist.get_backend())
        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout)) if backend != "gloo" else None
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SparcomError(f"cannot join the job as rank {launch.rank} of {launch.world_size}: {first[:200]}; check "
                           "that every node runs torchrun with the same --rdzv-endpoint / MASTER_ADDR:MASTER_PORT"
                           ) from None
    if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
        raise SparcomError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()} but the "
                           f"environment says rank {launch.rank} of {launch.world_size}")
    _joined = Ranks(launch, backend, timeout, control, torch.device(rank_device) if cuda else torch.device("cpu"))
    atexit.register(leave)
    return _joined


def current() -> Ranks:
    """The job this process joined, or :data:`SINGLE`."""
    return _joined or SINGLE


def leave() -> None:
    """Wait (briefly) for the other ranks, then leave the process group; called at exit, safe to call twice."""
    global _joined
    ranks, _joined = _joined, None
    if ranks is None:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if not ranks.broken:
        with contextlib.suppress(Exception):
            dist.monitored_barrier(group=ranks.control, timeout=timedelta(seconds=EXIT_WAIT_SECONDS))
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def load_for_rank(spec: str, ranks: Ranks, dtype: str = "auto", device: str = "cpu", device_map: str | None = None):
    """Load a model onto this rank's devices (:func:`placement`); a rank that cannot load it ends the job."""
    from sparcom.zoo.catalog import load_model

    with ranks.step("loading the model"):
        rank_device, memory = placement(device, device_map, ranks.launch)
        return load_model(spec, dtype=dtype, device=rank_device, device_map=device_map, max_memory=memory)


__all__ = ["SINGLE", "Launch", "RankFailure", "Ranks", "current", "describe", "is_main_process", "join",
           "leave", "load_for_rank", "placement", "rank_gpus", "timeout_seconds"]
