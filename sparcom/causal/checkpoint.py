"""Checkpoints of a causal check: each finished condition's per-row NLL sums, so ``--resume`` continues a killed run.

A check is a list of conditions (:mod:`sparcom.causal.plan`: unablated, each selected set, each random set; per
fold when cross-fitting), each a pure function of the model, the scored rows and the set, and stored under its
key's name. After a condition finishes, its per-row sums (or generations) are written atomically (temporary file,
then rename) into a hidden folder beside ``--out``, ``.{out name}.checkpoint/``. A resumed run loads the finished
conditions and computes the rest; the numbers are the stored float64 values, so it ends with exactly the numbers
of an uninterrupted run. The folder records the *settings digest* of the plan
(:func:`sparcom.causal.plan.plan_digest`: everything that fixes the conditions' numbers), and a checkpoint made
with another digest is refused. The folder is removed when the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.errors import SparcomError
from sparcom.outputs import os_problem, write_json_atomic

FORMAT = "sparcom-causal-checkpoint"
PROGRESS_FILE = "progress.json"


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoint of a check writing ``out`` lives (hidden, beside it)."""
    out = Path(out)
    return out.absolute().parent / f".{out.name}.checkpoint"


class Digest:
    """An incremental SHA-256 of the inputs that fix a check's numbers (fed in a fixed order)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, label: str, value: Any) -> None:
        self._hash.update(label.encode())
        if isinstance(value, np.ndarray):
            self._hash.update(str((value.dtype.str, value.shape)).encode())
            self._hash.update(np.ascontiguousarray(value).tobytes())
        else:
            self._hash.update(json.dumps(value, sort_keys=True, default=str).encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


LOCK_FILE = ".lock"


@dataclass
class ConditionStore:
    """The finished conditions of one check (per-row sums and ablation counters; generations as text).

    While open it holds an advisory lock on the folder, so two processes never compute into one checkpoint.
    """

    folder: Path
    digest: str
    resumed: int = 0
    _handle: Any = None

    def acquire(self) -> ConditionStore:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        handle = open(self.folder / LOCK_FILE, "w")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SparcomError(f"{self.folder}: another sparcom process is running this check now; wait for it "
                               "or choose another --out") from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def has(self, key: str) -> bool:
        return (self.folder / f"{_file(key)}.npz").is_file()

    def load(self, key: str) -> tuple[np.ndarray, dict[str, int]]:
        path = self.folder / f"{_file(key)}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != key:
                    raise SparcomError(f"{path}: holds condition {str(stored['key'])!r}, not {key!r}; the checkpoint "
                                       "is damaged, start over with --overwrite")
                sums, counters = stored["sums"].copy(), stored["counters"]
        except (OSError, ValueError, KeyError) as exc:
            raise SparcomError(f"{path}: unreadable checkpoint ({exc}); start over with --overwrite") from None
        self.resumed += 1
        return sums, {"fallback_tokens": int(counters[0]), "removed_slots": int(counters[1]),
                      "routed_slots": int(counters[2])}

    def save(self, key: str, sums: np.ndarray, counters: dict[str, int]) -> None:
        path = self.folder / f"{_file(key)}.npz"
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        values = np.array([counters.get("fallback_tokens", 0), counters.get("removed_slots", 0),
                           counters.get("routed_slots", 0)], dtype=np.int64)
        try:
            np.savez(tmp, key=np.array(key), sums=np.asarray(sums, dtype=np.float64), counters=values)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SparcomError(f"cannot write the checkpoint {path}: {os_problem(exc)}") from None
        except BaseException:  # interrupted while writing: the condition is simply not finished
            tmp.unlink(missing_ok=True)
            raise

    def has_texts(self, key: str) -> bool:
        return (self.folder / f"{_file(key)}.json").is_file()

    def load_texts(self, key: str) -> list[str]:
        stored = json.loads((self.folder / f"{_file(key)}.json").read_text(encoding="utf-8"))
        if stored.get("key") != key:
            raise SparcomError(f"{self.folder}: damaged generation checkpoint; start over with --overwrite")
        self.resumed += 1
        return list(stored["texts"])

    def save_texts(self, key: str, texts: list[str]) -> None:
        write_json_atomic(self.folder / f"{_file(key)}.json", {"key": key, "texts": texts})

    def remove(self) -> None:
        self.release()
        shutil.rmtree(self.folder, ignore_errors=True)


def check_checkpoint(out: str | Path, resume: bool, overwrite: bool) -> None:
    """Before any work: refuse to start over an interrupted check's checkpoint unless told what to do with it."""
    folder = checkpoint_dir(out)
    if folder.exists() and not (resume or overwrite):
        done = sum(1 for p in folder.iterdir() if p.suffix in (".npz", ".json") and not p.name.startswith(".")
                   and p.name != PROGRESS_FILE) if folder.is_dir() else 0
        raise SparcomError(f"{out}: an interrupted check left a checkpoint ({done} finished conditions in "
                           f"{folder}); pass --resume to continue it or --overwrite to start over")


def open_store(out: str | Path, digest: str, resume: bool, overwrite: bool) -> ConditionStore:
    """The checkpoint of the check writing ``out``: continued with ``resume`` (same digest only), replaced with
    ``overwrite``, otherwise refused when an interrupted check left one."""
    folder = checkpoint_dir(out)
    if folder.exists() and not folder.is_dir():
        raise SparcomError(f"{folder}: exists and is not a checkpoint folder; remove it")
    if folder.is_dir():
        check_checkpoint(out, resume, overwrite)
        if overwrite:
            ConditionStore(folder, digest).acquire().release()  # refuses while another process runs the check
            shutil.rmtree(folder)
        elif _progress(folder).get("settings_digest") != digest:
            raise SparcomError(f"{folder}: the checkpoint was made with other settings, model, data or selection; "
                               "resume with the same arguments or start over with --overwrite")
        else:
            return ConditionStore(folder, digest).acquire()
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise SparcomError(f"cannot create the checkpoint {folder}: {os_problem(exc)}") from None
    store = ConditionStore(folder, digest).acquire()
    write_json_atomic(folder / PROGRESS_FILE, {"format": FORMAT, "settings_digest": digest, "out": str(out)})
    return store


def _progress(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
