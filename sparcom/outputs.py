"""The one output-directory policy: refuse an existing folder unless told to replace it, build beside it, rename.

Every command that writes a folder (merge, identify, compare, ablate, report folders, tune, the model cache) goes
through :func:`staged_directory`: the folder is built under a temporary name next to ``--out`` and renamed into
place only when everything was written, so an error, an interruption or a full disk never leaves half a folder,
and ``--overwrite`` replaces only a folder that is an earlier output of the same kind (it holds ``marker``). A
profile run is the one exception: it is written in place with atomic checkpoints so that ``--resume`` can continue
it (:func:`prepare_output_dir`); it shares the checks here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparcom.errors import SparcomError


def os_problem(exc: OSError) -> str:
    """A short reason for an operating-system error (full disk, no permission, ...), without a traceback."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only or not writable)"
    if exc.errno == errno.EFBIG:
        return "file too large for this file system or limit"
    return exc.strerror or str(exc)


#: How libraries that write files in native code (safetensors) report an operating-system error in their message.
_OS_ERROR_IN_MESSAGE = re.compile(r"\(os error (\d+)\)")


class WriteFailed(SparcomError):
    """A file could not be written (full disk, file-size limit, no permission); ``problem`` is the short reason, so
    that a folder being staged reports the failure under its own name rather than the temporary one."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


def write_problem(exc: BaseException) -> str | None:
    """The one-line reason of a failed write (full disk, file-size limit, no permission), or None when ``exc`` is
    not an operating-system error — also when a library wrapped it in its own exception (safetensors does)."""
    if isinstance(exc, WriteFailed):
        return exc.problem
    if isinstance(exc, OSError):
        return os_problem(exc)
    found = _OS_ERROR_IN_MESSAGE.search(str(exc)) if isinstance(exc, Exception) else None
    if found:
        code = int(found.group(1))
        return os_problem(OSError(code, os.strerror(code)))
    return None


def check_parent(out: Path) -> None:
    """Make sure ``out``'s parent folder exists (creating it) and is writable, before any expensive work."""
    parent = out.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise SparcomError(f"cannot create {out}: {parent} is not a folder; choose another --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparcomError(f"cannot create {out}: {os_problem(exc)}; choose another --out") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SparcomError(f"cannot write into {parent}: permission denied; choose another --out")


def check_output_dir(out: str | Path, overwrite: bool = False, marker: str | None = None, kind: str = "output") -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and even then anything that is not an earlier output of the
    same ``kind`` (a non-empty folder without ``marker``); check that ``out`` can be created."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise SparcomError(f"{out}: exists and is a file; --out must be a directory")
        if not overwrite:
            raise SparcomError(f"{out}: output directory exists; choose another --out or pass --overwrite")
        if marker and any(out.iterdir()) and not (out / marker).is_file():
            raise SparcomError(f"{out}: exists and is not a sparcom {kind} (no {marker}); "
                               "refusing to replace it, choose another --out")
    check_parent(out)


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Decide what to do with an existing output directory; True when a checkpoint should be resumed."""
    if resume and overwrite:
        raise SparcomError("--resume and --overwrite exclude each other; choose one")
    check_parent(out)
    if not out.exists():
        return False
    if out.is_file():
        raise SparcomError(f"{out}: exists and is a file; --out must be a directory")
    if overwrite:
        return False
    if resume:
        if not os.access(out, os.W_OK | os.X_OK):
            raise SparcomError(f"{out}: not writable (read-only or no permission); --resume writes its checkpoint "
                               "and counts there: make it writable or copy the run elsewhere")
        return True
    if any(out.iterdir()):
        raise SparcomError(f"{out}: output directory exists; pass --resume to continue it or --overwrite to replace it")
    return False


def _publish(folder: Path) -> None:
    """Temporary folders are private (0700) and safetensors writes owner-only files; outputs are often shared."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False, marker: str | None = None,
                     kind: str = "output") -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that replaces ``out`` when the block finishes without an error."""
    out = Path(out)
    check_output_dir(out, overwrite, marker, kind)
    with lock(out):
        yield from _staged(out, overwrite, marker, kind)


def _staged(out: Path, overwrite: bool, marker: str | None, kind: str) -> Iterator[Path]:
    check_output_dir(out, overwrite, marker, kind)  # again under the lock: another process may have written it
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.absolute().parent))
    except OSError as exc:
        raise SparcomError(f"cannot create {out}: {os_problem(exc)}") from None
    try:
        try:
            yield staging
            _publish(staging)
            _replace(staging, out)
        except Exception as exc:
            problem = write_problem(exc)
            if problem is None:
                raise
            kept = "the previous version is unchanged" if out.exists() else "nothing was written"
            raise SparcomError(f"cannot write {out}: {problem}; {kept}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and put back if that fails."""
    if not out.exists():
        staging.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".replaced", dir=staging.parent))
    out.rename(retired / out.name)
    try:
        staging.rename(out)
    except BaseException:
        (retired / out.name).rename(out)
        retired.rmdir()
        raise
    shutil.rmtree(retired, ignore_errors=True)


#: Lock files this process holds, with their nesting depth.
_HELD: dict[Path, int] = {}


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.{name}.lock`` beside it (it exists only while a process holds the lock)."""
    target = Path(target)
    return target.absolute().parent / f".{target.name}.lock"


@contextlib.contextmanager
def lock(target: str | Path, wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``target`` (a file ``.{name}.lock`` beside it) across processes.

    ``wait=False`` refuses at once when another process holds it (two runs writing one folder); ``wait=True``
    waits its turn (two processes building the same cached model). The holder removes the file when it is done,
    so no lock file stays behind; a process that locked a file which was removed meanwhile locks the new one
    instead. The operating system drops the lock of a killed process. Nested calls for the same target in one
    process (a command's lock around :func:`staged_directory`'s) hold it once. A no-op where POSIX locks do not
    exist.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    target = Path(target)
    check_parent(target)
    path = lock_path(target)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    while True:
        try:
            handle = open(path, "a")  # noqa: SIM115  (held open across the yield: the lock lives with it)
        except OSError as exc:
            raise SparcomError(f"cannot lock {target}: {os_problem(exc)}; choose another --out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise SparcomError(f"{target}: another sparcom process is writing it now; wait for it to finish or "
                               "choose another --out") from None
        except BaseException:
            handle.close()
            raise
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # the file we locked is still the lock file
        except FileNotFoundError:
            pass
        handle.close()  # its holder removed it as we locked it: lock the current one
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()  # closing releases the lock


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Text written to a temporary file beside ``path`` and renamed, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path}: {os_problem(exc)}; nothing was written", os_problem(exc)) from None
    except BaseException:  # an interrupt between writing and renaming
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, remedy: str) -> Any:
    """A JSON file sparcom wrote, read back; malformed or unreadable is one line ending in ``remedy``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SparcomError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno}); {remedy}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SparcomError(f"{path}: unreadable ({exc}); {remedy}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written to a temporary file and renamed, so a reader never sees half of it."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
