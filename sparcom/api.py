"""The public Python API: one function per step of the method, each returning a result object a notebook can use.

Every ``sparcom`` command is a thin wrapper over one of these. Each takes paths or loaded objects, checks its inputs
and its output folder before any expensive work, computes, and — when given ``out`` — writes one folder through the
one output policy (:mod:`sparcom.outputs`). Results carry their tables as pandas DataFrames (``result.frames()``).

    >>> import sparcom
    >>> run = sparcom.profile("smollm2-135m-instruct", "data/hexainst.jsonl", "runs/smol")
    >>> ids = sparcom.identify(run, out="analysis/smol")
    >>> ids.table("selected_per_layer").head()
    >>> check = sparcom.ablate("smollm2-135m-instruct", "analysis/smol", "data/hexainst.jsonl", seeds=20)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sparcom.analysis.frequencies import KindFrequencies, kind_frequencies
from sparcom.analysis.pipeline import CompareResult, IdentifyResult
from sparcom.analysis.selection import SelectionRule
from sparcom.profile.artifacts import ProfileRun, load_run
from sparcom.report.files import SUMMARY_FILE

RunLike = ProfileRun | str | Path
#: What an identify, compare or ablate folder is called when --overwrite refuses to replace something else.
REPORT = "analysis output"


def _run(run: RunLike) -> ProfileRun:
    return run if isinstance(run, ProfileRun) else load_run(run)


def _claim(out: str | Path | None):
    """Hold ``out``'s lock for the whole call (checks, computing, writing): a second process writing the same
    folder is refused at its start, not after the work."""
    from sparcom.outputs import lock

    return contextlib.nullcontext() if out is None else lock(out)


def _rule(rule: SelectionRule | str, epsilon: float | None) -> SelectionRule:
    if isinstance(rule, SelectionRule):
        return rule if epsilon is None else rule.with_epsilon(epsilon)
    return SelectionRule(rule, epsilon)


def frequencies(run: RunLike, kind: str = "neuron") -> KindFrequencies:
    """Activation frequencies p = count / counted tokens of one component kind, every category ([K, N] + layout)."""
    run = _run(run)
    return kind_frequencies(run.counts, run.categories, kind)


def identify(
    run: RunLike,
    rule: SelectionRule | str = "percentile",
    epsilon: float | None = None,
    *,
    kinds: list[str] | None = None,
    sweep: bool | list[float] = True,
    bootstrap: bool = True,
    ci_level: float = 0.95,
    out: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
) -> IdentifyResult:
    """Select each category's instruction-specific components and describe the sets; with ``out``, write the
    selection artifact (what ``ablate`` reads) and the report folder."""
    from sparcom.analysis.pipeline import identify as select
    from sparcom.errors import SparcomError
    from sparcom.outputs import check_output_dir, staged_directory
    from sparcom.report.outputs import write_identify

    rule = _rule(rule, epsilon)
    if not 0 < ci_level < 1:
        raise SparcomError(f"--ci-level must be in (0, 1), got {ci_level}")
    if out is not None:
        check_output_dir(out, overwrite, marker=SUMMARY_FILE, kind=REPORT)
    with _claim(out):
        result = select(_run(run), rule, kinds, sweep=sweep, bootstrap=bootstrap, ci_level=ci_level)
        if out is not None:
            with staged_directory(out, overwrite, marker=SUMMARY_FILE, kind=REPORT) as folder:
                result.write_selection(folder)
                write_identify(result, folder, make_plots=plots)
    return result


def compare(
    base: RunLike,
    tuned: RunLike,
    rule: SelectionRule | str = "percentile",
    epsilon: float | None = None,
    *,
    kinds: list[str] | None = None,
    force: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
) -> CompareResult:
    """Compare the selections of a base and a tuned run (same rule); with ``out``, write the report folder."""
    from sparcom.analysis.pipeline import compare as compare_runs
    from sparcom.outputs import check_output_dir, staged_directory
    from sparcom.report.outputs import write_compare

    rule = _rule(rule, epsilon)
    if out is not None:
        check_output_dir(out, overwrite, marker=SUMMARY_FILE, kind=REPORT)
    with _claim(out):
        result = compare_runs(_run(base), _run(tuned), rule, kinds, force=force)
        if out is not None:
            with staged_directory(out, overwrite, marker=SUMMARY_FILE, kind=REPORT) as folder:
                write_compare(result, folder, make_plots=plots)
    return result


def ablate(
    model,
    selection,
    data: str | Path,
    settings=None,
    *,
    out: str | Path | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
    **setting_values,
):
    """The causal check: deactivate each category's selected set and measure ΔNLL against random sets of the same
    shape. ``settings`` is a :class:`~sparcom.causal.settings.CausalSettings` (or give its fields as keywords, e.g.
    ``seeds=20``); with ``out``, write the output folder."""
    from sparcom.causal.check import causal_check
    from sparcom.causal.settings import CausalSettings
    from sparcom.errors import SparcomError
    from sparcom.outputs import check_output_dir, staged_directory
    from sparcom.report.causal import write_causal

    if settings is not None and setting_values:
        raise SparcomError("give either settings= or keyword settings, not both")
    try:
        settings = settings or CausalSettings(**setting_values)
    except TypeError as exc:
        raise SparcomError(f"unknown causal-check setting: {exc}") from None
    settings.check()
    if out is not None:
        check_output_dir(out, overwrite, marker=SUMMARY_FILE, kind=REPORT)
    with _claim(out):
        result = causal_check(model, selection, data, settings, dtype=dtype, device=device, device_map=device_map,
                              progress=progress)
        if out is not None:
            with staged_directory(out, overwrite, marker=SUMMARY_FILE, kind=REPORT) as folder:
                write_causal(result, folder, plots=plots)
    return result


def report(study_dirs, out_html: str | Path, *, title: str | None = None, cards_per_category: int = 6,
           overwrite: bool = False) -> Path:
    """One self-contained HTML page of a study's outputs (identify, compare, ablate, examples, runs)."""
    from sparcom.report.html import render_report

    return render_report([Path(p) for p in study_dirs], out_html, title=title, cards_per_category=cards_per_category,
                         overwrite=overwrite)
