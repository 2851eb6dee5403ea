"""The public Python API: one function per step of the method, each returning a result object a notebook can use.

Every ``sparcom`` command is a thin wrapper over one of these. Each takes paths or loaded objects, checks its inputs
and its output folder before any expensive work, computes, and — when given ``out`` — writes one folder through the
one output policy (:mod:`sparcom.outputs`). Results carry their tables as pandas DataFrames (``result.frames()``).

    >>> import sparcom
    >>> run = sparcom.profile("smollm2-135m-instruct", "data/hexainst.jsonl", "runs/smol")
    >>> ids = sparcom.identify(run, out="analysis/smol")
    >>> ids.table("selected_per_layer").head()
    >>> ids.validity["neuron"].summary()["held_out_decoding"]      # runs profiled with --group-by instruction
    >>> sparcom.evaluate("analysis/smol", "runs/other-instructions").headline()
    >>> sparcom.sweep(run, out="analysis/smol-study")              # the rule / ε study
    >>> check = sparcom.ablate("smollm2-135m-instruct", "analysis/smol", "data/hexainst.jsonl", seeds=20)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sparcom.analysis.frequencies import KindFrequencies, kind_frequencies
from sparcom.analysis.pipeline import CompareResult, IdentifyResult
from sparcom.analysis.selection import DEFAULT_RULE, SelectionRule
from sparcom.artifacts.run import ProfileRun, load_run
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


def _report(out: str | Path | None, overwrite: bool, compute, write):
    """``compute()`` and, with ``out``, its report folder written by ``write(result, folder)``: the folder checked
    first, its lock held throughout, the files staged and renamed into place at the end."""
    from sparcom.outputs import check_output_dir, staged_directory

    if out is not None:
        check_output_dir(out, overwrite, marker=SUMMARY_FILE, kind=REPORT)
    with _claim(out):
        result = compute()
        if out is not None:
            with staged_directory(out, overwrite, marker=SUMMARY_FILE, kind=REPORT) as folder:
                write(result, folder)
    return result


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
    rule: SelectionRule | str = DEFAULT_RULE,
    epsilon: float | None = None,
    *,
    kinds: list[str] | None = None,
    sweep: bool | list[float] = True,
    bootstrap: bool = True,
    ci_level: float = 0.95,
    validity: bool = True,
    folds: int = 5,
    random_sets: int = 100,
    validity_seed: int = 0,
    resamples: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
) -> IdentifyResult:
    """Select each category's instruction-specific components and describe the sets; with ``out``, write the
    selection artifact (what ``ablate`` reads) and the report folder.

    On a run profiled with ``--group-by instruction`` the result also carries the selection's validity
    (``result.validity[kind]``: held-out decoding with ``folds`` folds against ``random_sets`` random sets of the
    same per-layer shape, stability, cross-source agreement; specificity columns in ``selected_components``);
    ``validity=False`` skips it. ``resamples`` = B > 0 takes the bootstrap intervals from B resamples of the
    instructions (needed for rule ``test``)."""
    from sparcom.analysis.evidence import ValiditySettings
    from sparcom.analysis.pipeline import identify as select
    from sparcom.errors import SparcomError
    from sparcom.report.outputs import write_identify

    rule = _rule(rule, epsilon)
    if not 0 < ci_level < 1:
        raise SparcomError(f"--ci-level must be in (0, 1), got {ci_level}")
    settings = ValiditySettings(validity, folds, random_sets, validity_seed).check()
    def write(result, folder: Path) -> None:
        result.write_selection(folder)
        write_identify(result, folder, make_plots=plots)

    return _report(out, overwrite, lambda: select(_run(run), rule, kinds, sweep=sweep, bootstrap=bootstrap,
                                                  ci_level=ci_level, validity=settings, resamples=resamples), write)


def evaluate(
    selection,
    run: RunLike,
    *,
    kinds: list[str] | None = None,
    folds: int = 5,
    random_sets: int = 100,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
):
    """Decode the categories of OTHER instructions (``run``, profiled with ``--group-by instruction`` on the same
    model and settings) with the fixed sets of ``selection`` (an identify folder or a loaded
    :class:`~sparcom.artifacts.selection.Selection`), against random sets of the same per-layer shape, all
    components and chance; nothing is re-selected. With ``out``, write the output folder."""
    from sparcom.analysis.evaluation import evaluate as decode
    from sparcom.analysis.evidence import ValiditySettings
    from sparcom.artifacts.selection import Selection, load_selection
    from sparcom.report.validity import write_evaluate

    settings = ValiditySettings(True, folds, random_sets, seed).check()
    selection = selection if isinstance(selection, Selection) else load_selection(selection)
    return _report(out, overwrite, lambda: decode(selection, _run(run), kinds, settings),
                   lambda result, folder: write_evaluate(result, folder, make_plots=plots))


def sweep(
    run: RunLike,
    rules: list[SelectionRule | str] | None = None,
    *,
    kinds: list[str] | None = None,
    epsilons: dict[str, list[float]] | None = None,
    folds: int = 5,
    random_sets: int = 100,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
):
    """The rule / ε study on a run profiled with ``--group-by instruction``: for every rule variant and ε of its
    grid, set sizes, general/unique shares, held-out decoding against random sets, stability and cross-source
    agreement (:mod:`sparcom.analysis.rule_study`). ``rules``: SelectionRules or names (``contrast-mean`` is the
    contrast against the mean of the others); default: every rule. With ``out``, write the output folder."""
    from sparcom.analysis.evidence import ValiditySettings
    from sparcom.analysis.rule_study import rule_study, study_rules
    from sparcom.report.validity import write_sweep

    settings = ValiditySettings(True, folds, random_sets, seed).check()
    if rules is not None:
        rules = [r if isinstance(r, SelectionRule) else study_rules([r])[0] for r in rules]
    return _report(out, overwrite, lambda: rule_study(_run(run), rules, kinds, epsilons, settings),
                   lambda result, folder: write_sweep(result, folder, make_plots=plots))


def compare(
    base: RunLike,
    tuned: RunLike,
    rule: SelectionRule | str = DEFAULT_RULE,
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
    from sparcom.report.outputs import write_compare

    rule = _rule(rule, epsilon)
    return _report(out, overwrite, lambda: compare_runs(_run(base), _run(tuned), rule, kinds, force=force),
                   lambda result, folder: write_compare(result, folder, make_plots=plots))


def ablate(
    model,
    selection=None,
    data: str | Path | None = None,
    settings=None,
    *,
    run: RunLike | None = None,
    rule: SelectionRule | str = DEFAULT_RULE,
    epsilon: float | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
    **setting_values,
):
    """The causal check: deactivate each category's selected set and measure ΔNLL against random sets of the same
    shape; per category, damage and specificity with intervals, Holm-corrected p-values and a verdict.

    ``settings`` is a :class:`~sparcom.causal.settings.CausalSettings` (or give its fields as keywords, e.g.
    ``seeds=20``). Either a ``selection`` (an identify folder) or, for cross-fitting, a ``run`` profiled with
    ``--group-by instruction`` with ``rule``/``epsilon`` and ``folds=k``: every profiled row is scored with the sets
    selected on the other k − 1 folds. With ``out``, write the output folder; every finished condition is
    checkpointed beside it, and ``resume=True`` continues an interrupted check with the same arguments."""
    from functools import partial

    from sparcom.causal.output import check_into_folder
    from sparcom.causal.settings import CausalSettings
    from sparcom.errors import SparcomError
    from sparcom.report.causal import write_causal

    if settings is not None and setting_values:
        raise SparcomError("give either settings= or keyword settings, not both")
    try:
        settings = settings or CausalSettings(**setting_values)
    except TypeError as exc:
        raise SparcomError(f"unknown causal-check setting: {exc}") from None
    return check_into_folder(model, selection, data, settings, out=out, write=partial(write_causal, plots=plots),
                             marker=SUMMARY_FILE, kind=REPORT, run=run, rule=lambda: _rule(rule, epsilon),
                             resume=resume, overwrite=overwrite, dtype=dtype, device=device, device_map=device_map,
                             progress=progress)


def report(study_dirs, out_html: str | Path, *, title: str | None = None, cards_per_category: int = 6,
           overwrite: bool = False) -> Path:
    """One self-contained HTML page of a study's outputs (identify, compare, ablate, examples, runs)."""
    from sparcom.report.html import render_report

    return render_report([Path(p) for p in study_dirs], out_html, title=title, cards_per_category=cards_per_category,
                         overwrite=overwrite)


def build_moe(model: str | Path, out: str | Path, settings=None, *, calibration: str | Path = "sparcom-sft",
              overwrite: bool = False, progress: bool = True) -> Path:
    """MoEfy the dense Llama ``model`` (folder, .gguf, hub id or built-in name) into a GraniteMoE folder at ``out``.

    ``settings`` is a :class:`sparcom.zoo.moefy.MoefySettings` (default: 16 experts, top-4, seed 0);
    ``calibration`` is ``sparcom-sft`` or a JSON Lines file of rows that are not HexaInst. The folder loads with
    plain ``AutoModelForCausalLM`` and records its build in ``sparcom-cache.json`` (docs/moe.md). Settings, ``out``
    and the calibration name are checked before the model loads; nothing is left behind on an error.
    """
    from sparcom.data import tuning_data
    from sparcom.errors import SparcomError
    from sparcom.outputs import check_output_dir, lock
    from sparcom.zoo.builtin import MANIFEST
    from sparcom.zoo.catalog import load_model
    from sparcom.zoo.derived import write_moe_folder
    from sparcom.zoo.moefy import MoefySettings

    settings = settings or MoefySettings()
    settings.check()
    out = Path(out).expanduser()
    check_output_dir(out, overwrite, marker=MANIFEST, kind="MoE model folder")
    if not Path(calibration).is_file() and str(calibration) != tuning_data.NAME:
        raise SparcomError(f"--calibration {calibration}: file not found; pass a JSON Lines file of instruction rows "
                           f"or '{tuning_data.NAME}' for the built-in tuning set")
    with lock(out):
        loaded = load_model(str(model), dtype="float32")
        folder = loaded.info.get("resolved_path")
        plain = Path(folder) if folder and loaded.info.get("gguf_file") is None else None
        extra = {"name": None, "source": {"spec": str(model), "fingerprint": loaded.info.get("fingerprint")}}
        write_moe_folder(loaded.model, loaded.tokenizer, out, settings, calibration, extra, source_folder=plain,
                         overwrite=overwrite, progress=progress)
    return out
