"""Interrupts as one exception: Ctrl-C (SIGINT) and a scheduler's SIGTERM stop a command the same way.

A batch system (SLURM, Kubernetes, systemd) stops a job with SIGTERM, a person with Ctrl-C; both should run the
same clean-up (temporary folders removed, a profile run's last checkpoint kept) and end in one line and one exit
code. The command line therefore makes SIGTERM raise :class:`Interrupted`, a :class:`KeyboardInterrupt`, so every
``finally`` and every handler written for Ctrl-C applies to it too; both exit with :data:`EXIT_CODE` (130), the
code scripts already test for "interrupted, nothing broken". A long loop can stop at its next safe point instead
of mid-step (:func:`deferred`): the first signal only asks it to stop there, a second one stops it at once.

The command line also ignores SIGXFSZ: a file-size limit (``ulimit -f``) then fails the write with EFBIG, which is
reported like a full disk, instead of killing the process with half a temporary file left behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The exit code of an interrupted command, whichever signal stopped it.
EXIT_CODE = 130
#: The signals that interrupt a command.
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
GENERIC = "nothing half-written was kept; run the command again"


class Interrupted(KeyboardInterrupt):
    """A command stopped by SIGINT or SIGTERM, with what it left behind and how to go on (``detail``)."""

    exit_code = EXIT_CODE

    def __init__(self, signal_name: str = "SIGINT", detail: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.detail = detail

    def __str__(self) -> str:
        return f"interrupted ({self.signal_name}); {self.detail or GENERIC}"


def interrupted(exc: BaseException, detail: str | None = None) -> Interrupted:
    """``exc`` (a plain KeyboardInterrupt is a SIGINT) as an :class:`Interrupted`, with ``detail`` when given."""
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    if detail is None and isinstance(exc, Interrupted):
        detail = exc.detail
    return Interrupted(name, detail)


def _raise(signum: int, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """For the command line's error path (:class:`sparcom.cli.app.SparcomGroup`), around every command: SIGTERM
    raises :class:`Interrupted` like Ctrl-C, and SIGXFSZ is ignored (see above). A SIGTERM handler a host program
    installed is left alone; the previous handlers come back when the command ends."""
    if not _in_main_thread():
        yield
        return
    previous = {}
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise)
    if hasattr(signal, "SIGXFSZ"):
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raises(handler) -> bool:
    """Whether a handler interrupts by raising (Python's Ctrl-C handler or ours), so it may be deferred."""
    return handler is signal.default_int_handler or handler is _raise


class StopRequest:
    """Set by the first interrupt inside :func:`deferred`; the loop checks it at its safe points."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def deferred() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT/SIGTERM only sets the yielded request (stop at the next safe point);
    a second one raises :class:`Interrupted` at once. Signals whose handler does not raise (ignored, or left to
    the operating system by a host program) are not touched; outside the main thread nothing is."""
    request = StopRequest()
    previous = {}
    if _in_main_thread():
        def handler(signum: int, frame) -> None:
            name = signal.Signals(signum).name
            if request:
                raise Interrupted(name)
            request.signal_name = name

        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if _raises(current):
                previous[signum] = current
                signal.signal(signum, handler)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
