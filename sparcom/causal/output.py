"""A causal check written to an output folder, as one call that every torchrun rank makes.

The settings and the folder are checked before any work; rank 0 alone writes ``out``, so it alone holds the
folder's lock, for the whole call, and keeps the checkpoint beside it (:mod:`sparcom.causal.checkpoint`); Ctrl-C
or SIGTERM becomes one line saying what was kept and how to go on; the files are staged and renamed into place
(:mod:`sparcom.outputs`), and the checkpoint is removed once they are.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from sparcom.analysis.selection import SelectionRule
from sparcom.causal.check import causal_check
from sparcom.causal.checkpoint import check_checkpoint, checkpoint_dir
from sparcom.causal.result import CausalResult
from sparcom.causal.settings import CausalSettings
from sparcom.distributed import join
from sparcom.interrupts import interrupted
from sparcom.outputs import check_output_dir, lock, staged_directory


def check_into_folder(
    model,
    selection,
    data,
    settings: CausalSettings,
    *,
    out: str | Path | None,
    write: Callable[[CausalResult, Path], None],
    marker: str,
    kind: str,
    run=None,
    rule: SelectionRule | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **options,
) -> CausalResult:
    """:func:`~sparcom.causal.check.causal_check` and, with ``out``, its folder written by ``write(result, folder)``
    (``marker`` and ``kind`` name what an existing folder must be for ``overwrite`` to replace it). The settings
    and arguments are checked by the caller (:func:`sparcom.api.ablate`, before torch loads); ``rule`` is the
    cross-fitting rule; ``options`` go to the check (dtype, device …)."""
    ranks = join(options.get("device", "cpu"), options.get("device_map"))
    check = dict(settings=settings, run=run, rule=rule, **options)
    if out is None:
        return causal_check(model, selection, data, **check)
    with contextlib.ExitStack() as held:
        with ranks.step("locking and checking the output folder"):
            if ranks.is_main:
                held.enter_context(lock(out))
                check_output_dir(out, overwrite, marker=marker, kind=kind)
                check_checkpoint(out, resume, overwrite)
        try:
            result = causal_check(model, selection, data, checkpoint=out, resume=resume, overwrite=overwrite, **check)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say what was kept and how to go on
            raise interrupted(exc, f"{out} was not written; the finished conditions are kept in "
                                   f"{checkpoint_dir(out)}: continue with the same command and --resume") from None
        with ranks.step("writing the output folder"):
            if ranks.is_main:
                with staged_directory(out, overwrite, marker=marker, kind=kind) as folder:
                    write(result, folder)
                shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    return result
