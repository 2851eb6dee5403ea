"""The public Python API: one function per step of the method, each returning a result object a notebook can use.

Every ``sparcom`` command is a thin wrapper over one of these, and every step has the same shape::

    step(inputs, settings=None, *, out=None, overwrite=False, <runtime options>, **settings_by_name)

``settings`` is the step's settings dataclass (:class:`~sparcom.profile.settings.ProfileSettings`,
:class:`~sparcom.analysis.settings.IdentifySettings`, …); the same settings can be given by name as keywords (the
CLI flag's name: ``seeds=20``, ``crossfit_folds=5``), on top of ``settings`` when both are given. An unknown
keyword is one clear error (:class:`~sparcom.settings.UnknownSetting`). Runtime options (device, dtype,
progress) change how a step runs, not what it computes. A step whose result is a folder (``profile``, ``tune``,
``build_moe``) takes it as an input; the others write ``out`` when given.

Each step checks its settings, the files it reads and its output folder before any model loads (and, outside
torchrun, before torch is imported), computes, and writes one folder through the one output policy
(:mod:`sparcom.outputs`). Results carry their tables as pandas DataFrames (``result.frames()``).

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
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sparcom.analysis.frequencies import KindFrequencies, kind_frequencies
from sparcom.analysis.pipeline import CompareResult, IdentifyResult
from sparcom.analysis.selection import SelectionRule
from sparcom.analysis.settings import CompareSettings, EvaluateSettings, IdentifySettings, SweepSettings
from sparcom.artifacts.run import ProfileRun
from sparcom.attribution.settings import AttributionSettings
from sparcom.causal.settings import CausalSettings
from sparcom.examples.settings import ExamplesSettings
from sparcom.profile.settings import ProfileSettings
from sparcom.report.files import SUMMARY_FILE
from sparcom.report.settings import ReportSettings
from sparcom.settings import resolve
from sparcom.tune.settings import TuneSettings

RunLike = ProfileRun | str | Path
#: What an identify, compare or ablate folder is called when --overwrite refuses to replace something else.
REPORT = "analysis output"


# ----------------------------------------------------------------------------------------------- shared steps


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


def _launched() -> bool:
    """True in a rank of a torchrun job (read from the environment, without importing torch)."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    return world.isdigit() and int(world) > 1


@contextlib.contextmanager
def _before_loading(where: str, device: str = "cpu", device_map: str | None = None) -> Iterator[bool]:
    """Checks a step makes before any model loads; yields whether this process writes the output (rank 0).

    A single process makes them before torch is imported; the ranks of a torchrun job make them together and
    agree on the outcome, so a bad argument is one line from rank 0 (:mod:`sparcom.distributed`)."""
    if not _launched():
        yield True
        return
    from sparcom.distributed import join

    ranks = join(device, device_map)
    with ranks.step(where):
        yield ranks.is_main


# ----------------------------------------------------------------------------------------------- profile runs


def profile(model, data: str | Path, out: str | Path, settings: ProfileSettings | None = None, *,
            resume: bool = False, overwrite: bool = False, dtype: str = "auto", device: str = "cpu",
            device_map: str | None = None, progress: bool = True, on_batch_end: Callable[[int], None] | None = None,
            **options: Any) -> ProfileRun:
    """Count, per category, how often every MLP neuron (and expert) of ``model`` (a spec string or a loaded
    model, see :func:`wrap_model`) is active on the counted tokens of ``data``, into the run folder ``out``.

    ``resume`` continues a killed run of ``out``. Started by torchrun, every rank calls this with the same
    arguments: each loads the model onto its own devices and counts its share; rank 0 writes ``out``."""
    from sparcom.data.schema import read_rows
    from sparcom.errors import SparcomError
    from sparcom.outputs import lock, prepare_output_dir

    with contextlib.ExitStack() as held:
        with _before_loading("checking the settings and data", device, device_map):
            settings = resolve(ProfileSettings, settings, options, "profile")
            read_rows(Path(data), categories=settings.categories, require_output=settings.format.needs_response)
            if resume and overwrite:
                raise SparcomError("--resume and --overwrite exclude each other; choose one")
        with _before_loading("locking the run directory", device, device_map) as writes:
            if writes:  # before the model loads: a second run into the same folder is refused at once
                held.enter_context(lock(out))
                prepare_output_dir(Path(out), resume, overwrite)
        from sparcom.distributed import join, load_for_rank
        from sparcom.profile.runner import Profiler
        from sparcom.zoo.catalog import preview_model

        ranks = join(device, device_map)
        if isinstance(model, str):
            with ranks.step("reading the model's files"):  # config, tokenizer, weights fingerprint: no weights
                skeleton = preview_model(model, dtype=dtype, device=device)
            with ranks.step("checking the rows against the model"):
                if skeleton is not None:  # a row too long for the model is refused before the weights load
                    Profiler(skeleton, settings).check_rows(Path(data))
            model = load_for_rank(model, ranks, dtype=dtype, device=device, device_map=device_map)
        with ranks.step("preparing the counters"):
            profiler = Profiler(model, settings)
        return profiler.run(data, out, resume=resume, overwrite=overwrite, progress=progress,
                            on_batch_end=on_batch_end, ranks=ranks)


def load_run(path: str | Path, require_complete: bool = True) -> ProfileRun:
    """A profile run folder, checked (``require_complete=False`` also reads an unfinished run)."""
    from sparcom.artifacts.run import load_run as read

    return read(path, require_complete=require_complete)


def merge_runs(runs: Sequence[RunLike], out: str | Path, *, overwrite: bool = False):
    """Add the counts of compatible runs (same model, tokenizer and settings; disjoint instructions) into ``out``;
    attribution runs (:func:`attribute`) merge the same way, by adding their sums."""
    from sparcom.artifacts.attribution import is_attribution_run, merge_attributions
    from sparcom.artifacts.run import merge_runs as merge

    if runs and not isinstance(runs[0], ProfileRun) and is_attribution_run(runs[0]):
        return merge_attributions(list(runs), out, overwrite=overwrite)
    return merge(runs, out, overwrite=overwrite)


def attribute(model, data: str | Path, out: str | Path, settings: AttributionSettings | None = None, *,
              means=None, resume: bool = False, overwrite: bool = False, dtype: str = "auto",
              device: str = "cpu", device_map: str | None = None, progress: bool = True, **options: Any):
    """Estimate, per category and MLP neuron of ``model``, what deactivating the neuron does to the summed NLL of the
    reference responses of ``data`` (gradient × (replacement − activation), one forward + backward per batch), into
    the attribution run ``out`` — what ``identify --rule attribution`` selects on.

    ``replacement`` (a setting): ``zero`` (default) or ``mean``, which needs ``means``: {(kind, layer): each
    neuron's mean activation} (from a profile that recorded activation sums). Under torchrun every rank calls this with the same arguments; rank 0 writes ``out``."""
    from sparcom.data.schema import read_rows
    from sparcom.errors import SparcomError
    from sparcom.outputs import lock, prepare_output_dir

    with contextlib.ExitStack() as held:
        with _before_loading("checking the settings and data", device, device_map):
            settings = resolve(AttributionSettings, settings, options, "attribute")
            read_rows(Path(data), categories=settings.categories, require_output=True)
            if resume and overwrite:
                raise SparcomError("--resume and --overwrite exclude each other; choose one")
            means = _attribution_means(settings, means)
        with _before_loading("locking the run directory", device, device_map) as writes:
            if writes:
                held.enter_context(lock(out))
                prepare_output_dir(Path(out), resume, overwrite)
        from sparcom.attribution.runner import Attributor
        from sparcom.distributed import join, load_for_rank

        ranks = join(device, device_map)
        if isinstance(model, str):
            model = load_for_rank(model, ranks, dtype=dtype, device=device, device_map=device_map)
        with ranks.step("preparing the attribution"):
            attributor = Attributor(model, settings, means)
        return attributor.run(data, out, ranks, resume=resume, overwrite=overwrite, progress=progress)


def _attribution_means(settings: AttributionSettings, means):
    """The ``mean`` replacement's values: given, or read from ``--means-run`` (before any model loads)."""
    from sparcom.errors import SparcomError

    if settings.means_run is not None and settings.replacement != "mean":
        raise SparcomError("--means-run gives the values of --replacement mean; pass --replacement mean or drop "
                           "--means-run")
    if settings.replacement != "mean" or means:
        return means
    if settings.means_run is None:
        raise SparcomError("--replacement mean needs each neuron's mean activation; pass --means-run RUN (a profile "
                           "run of this model with activation sums) or means={(kind, layer): values} to "
                           "sparcom.attribute")
    from sparcom.artifacts.sums import run_means

    return run_means(settings.means_run, "--replacement mean")


def load_attribution(path: str | Path):
    """A finished attribution run folder (:func:`attribute`), checked."""
    from sparcom.artifacts.attribution import load_attribution as read

    return read(path)


def frequencies(run: RunLike, kind: str = "neuron") -> KindFrequencies:
    """Activation frequencies p = count / counted tokens of one component kind, every category ([K, N] + layout)."""
    run = _run(run)
    return kind_frequencies(run.counts, run.categories, kind)


# ----------------------------------------------------------------------------------------------- analysis


def identify(run: RunLike, settings: IdentifySettings | SelectionRule | None = None, *,
             out: str | Path | None = None, overwrite: bool = False, plots: bool = True,
             **options: Any) -> IdentifyResult:
    """Select each category's instruction-specific components and describe the sets; with ``out``, write the
    selection artifact (what ``ablate`` reads) and the report folder.

    ``settings``: :class:`~sparcom.analysis.settings.IdentifySettings` (or just its rule, a
    :class:`~sparcom.analysis.selection.SelectionRule`), or by name: ``rule``, ``epsilon``, ``kinds``, ``sweep``,
    ``ci_level``, ``resamples``, ``validity``, ``folds``, ``random_sets``, ``validity_seed``, …. On a run profiled
    with ``--group-by instruction`` the result also carries the selection's validity (``result.validity[kind]``:
    held-out decoding against random sets of the same per-layer shape, stability, cross-source agreement);
    the set statistics' intervals come from subsampling the instructions (``result.kinds[kind].intervals``);
    ``resamples`` = B > 0 adds the bootstrap stability over B resamples; ``probing=True`` adds sparse-probing curves and the bag-of-tokens baseline (``result.probing``)."""
    from sparcom.analysis.pipeline import identify as select
    from sparcom.report.outputs import write_identify

    settings = resolve(IdentifySettings, settings, options, "identify")

    def write(result, folder: Path) -> None:
        result.write_selection(folder)
        write_identify(result, folder, make_plots=plots)

    def compute() -> IdentifyResult:
        loaded = _run(run)
        return select(loaded, settings.rule, list(settings.kinds or []) or None, sweep=_grid(settings.sweep),
                      bootstrap=settings.bootstrap, ci_level=settings.ci_level, validity=settings.validity,
                      resamples=settings.resamples, token_bags=_token_bags(loaded, settings.validity),
                      reference=_run(settings.reference) if settings.reference else None)

    return _report(out, overwrite, compute, write)


def _token_bags(run: ProfileRun, validity):
    """The run's rows as bags of its counted tokens, for the lexical baseline of ``--probing`` (else None)."""
    if not (validity.enabled and validity.probing and run.manifest.get("group_by") == "instruction"):
        return None
    from sparcom.data.lexical import run_token_bags
    from sparcom.models.loading import load_run_tokenizer

    return run_token_bags(run.manifest, load_run_tokenizer(run.manifest.get("model") or {},
                                                           run.manifest.get("tokenizer_hash")))


def _grid(sweep: bool | Sequence[float]) -> bool | list[float]:
    return sweep if isinstance(sweep, bool) else list(sweep)


def evaluate(selection, run: RunLike, settings: EvaluateSettings | None = None, *, out: str | Path | None = None,
             overwrite: bool = False, plots: bool = True, **options: Any):
    """Decode the categories of OTHER instructions (``run``, profiled with ``--group-by instruction`` on the same
    model and settings) with the fixed sets of ``selection`` (an identify folder or a loaded
    :class:`~sparcom.artifacts.selection.Selection`), against random sets of the same per-layer shape, all
    components and chance; nothing is re-selected. Settings: ``kinds``, ``folds``, ``random_sets``,
    ``validity_seed``. With ``out``, write the output folder."""
    from sparcom.analysis.evaluation import evaluate as decode
    from sparcom.report.validity import write_evaluate

    settings = resolve(EvaluateSettings, settings, options, "evaluate")
    selection = selection if _is_selection(selection) else load_selection(selection)
    return _report(out, overwrite, lambda: decode(selection, _run(run), _kinds(settings), settings.validity),
                   lambda result, folder: write_evaluate(result, folder, make_plots=plots))


def _kinds(settings) -> list[str] | None:
    return list(settings.kinds) if settings.kinds else None


def _is_selection(value) -> bool:
    from sparcom.artifacts.selection import Selection

    return isinstance(value, Selection)


def sweep(run: RunLike, settings: SweepSettings | None = None, *, out: str | Path | None = None,
          overwrite: bool = False, plots: bool = True, **options: Any):
    """The rule / ε study on a run profiled with ``--group-by instruction``: for every rule variant and ε of its
    grid, set sizes, general/unique shares, held-out decoding against random sets, stability and cross-source
    agreement (:mod:`sparcom.analysis.rule_study`). Settings: ``rules`` (SelectionRules or names;
    ``contrast-mean`` is the contrast against the mean of the others; default: every rule), ``epsilons`` (a grid
    per rule), ``kinds``, ``folds``, ``random_sets``, ``validity_seed``. With ``out``, write the output folder."""
    from sparcom.analysis.rule_study import rule_study, study_rules
    from sparcom.report.validity import write_sweep

    settings = resolve(SweepSettings, settings, options, "sweep")
    rules = None
    if settings.rules is not None:
        rules = [r if isinstance(r, SelectionRule) else study_rules([r])[0] for r in settings.rules]
    return _report(out, overwrite, lambda: rule_study(_run(run), rules, _kinds(settings), settings.epsilons,
                                                      settings.validity),
                   lambda result, folder: write_sweep(result, folder, make_plots=plots))


def compare(base: RunLike, tuned: RunLike, settings: CompareSettings | SelectionRule | None = None, *,
            out: str | Path | None = None, overwrite: bool = False, plots: bool = True,
            **options: Any) -> CompareResult:
    """Compare the selections of a base and a tuned run (same rule); with ``out``, write the report folder.
    Settings: the rule (``rule``, ``epsilon``, …), ``kinds``, ``force``."""
    from sparcom.analysis.pipeline import compare as compare_runs
    from sparcom.report.outputs import write_compare

    settings = resolve(CompareSettings, settings, options, "compare")
    return _report(out, overwrite, lambda: compare_runs(_run(base), _run(tuned), settings.rule, _kinds(settings),
                                                        force=settings.force),
                   lambda result, folder: write_compare(result, folder, make_plots=plots))


# ----------------------------------------------------------------------------------------------- causal check


def ablate(
    model,
    selection=None,
    data: str | Path | None = None,
    settings: CausalSettings | None = None,
    *,
    run: RunLike | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    overwrite: bool = False,
    plots: bool = True,
    progress: bool = True,
    **options: Any,
):
    """The causal check: deactivate each category's selected set and measure ΔNLL against random sets of the same
    shape; per category, damage and specificity with intervals, Holm-corrected p-values and a verdict.

    ``settings`` is a :class:`~sparcom.causal.settings.CausalSettings` (or give its settings by name, e.g.
    ``seeds=20``). Either a ``selection`` (an identify folder) or, for cross-fitting, a ``run`` profiled with
    ``--group-by instruction`` with ``crossfit_folds=k`` and the rule (``rule``, ``epsilon``, ``against``, …):
    every profiled row is scored with the sets selected on the other k − 1 folds. With ``out``, write the output
    folder; every finished condition is checkpointed beside it, and ``resume=True`` continues an interrupted check
    with the same arguments."""
    from functools import partial

    from sparcom.errors import SparcomError

    with _before_loading("checking the settings and the output folder", device, device_map):
        settings = resolve(CausalSettings, settings, options, "ablate")
        if resume and overwrite:
            raise SparcomError("--resume and --overwrite exclude each other; choose one")
        if resume and out is None:
            raise SparcomError("--resume continues the check that writes --out; give --out")
        if run is not None and settings.folds is None:
            raise SparcomError("--run is for cross-fitting: add --crossfit-folds K (or give --selection instead of "
                               "--run)")
        if selection is not None and not _is_selection(selection):
            selection = load_selection(selection)  # a missing or damaged selection: one line, before torch loads
    from sparcom.causal.output import check_into_folder
    from sparcom.report.causal import write_causal

    chosen = settings.rule if settings.folds is not None else None
    return check_into_folder(model, selection, data, settings, out=out, write=partial(write_causal, plots=plots),
                             marker=SUMMARY_FILE, kind=REPORT, run=run, rule=chosen, resume=resume,
                             overwrite=overwrite, dtype=dtype, device=device, device_map=device_map,
                             progress=progress)


# ----------------------------------------------------------------------------------------------- examples, report


def record_examples(model, selection, data: str | Path, components: Sequence[Any] | None = None,
                    settings: ExamplesSettings | None = None, *, run: RunLike | None = None,
                    out: str | Path | None = None, overwrite: bool = False, dtype: str = "auto", device: str = "cpu",
                    progress: bool = False, **options: Any):
    """Record where each component fires most: its ``top_k`` instructions of ``data`` with a token window, and
    per category its mean value and positive share (what the report's neuron and expert cards show).

    ``components``: keys such as ``neuron/3/17`` (default: the top ``components_per_category`` members of each
    category's set of ``selection``, ranked on its source run or ``run``). ``selection`` (a folder or a loaded
    Selection) also gives the scope, template and system prompt the counts were made with. With ``out``, write
    ``examples.json`` there. Settings: ``top_k``, ``window``, ``components_per_category``, ``rows_per_category``,
    ``batch_size``, ``categories``."""
    from sparcom.examples.plan import plan_examples
    from sparcom.examples.settings import check_examples_out

    settings = resolve(ExamplesSettings, settings, options, "record_examples")
    if out is not None:
        check_examples_out(out, overwrite)
    with _claim(out):  # a second pass into the same --out is refused at once
        plan = plan_examples(selection, data, settings, components, run)
        from sparcom.examples.recording import record, write_examples

        result = record(model, plan, dtype=dtype, device=device, progress=progress)
        if out is not None:
            write_examples(result, out, overwrite=overwrite)
    return result


def report(study_dirs: Sequence[str | Path], out_html: str | Path, settings: ReportSettings | None = None, *,
           overwrite: bool = False, **options: Any) -> Path:
    """One self-contained HTML page of a study's outputs (identify, compare, ablate, examples, runs).
    Settings: ``title``, ``cards`` (per category and ranking)."""
    from sparcom.report.html import render_report

    settings = resolve(ReportSettings, settings, options, "report")
    return render_report([Path(p) for p in study_dirs], out_html, title=settings.title,
                         cards_per_category=settings.cards_per_category, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------- models


def tune(base, data, out: str | Path, settings: TuneSettings | None = None, *, overwrite: bool = False,
         dtype: str = "auto", device: str = "cpu", progress: bool = True, allow_hexainst: bool = False,
         command: str | None = None, log: Callable[[str], None] | None = None, **options: Any):
    """Fine-tune ``base`` (a built-in name, folder, .gguf, hub id or a loaded model) on ``data`` (a JSON Lines
    file, ``"sparcom-sft"`` or rows) and write a model folder to ``out`` (atomically); see
    :func:`sparcom.tune.trainer.fine_tune`. Rows that repeat HexaInst are refused unless ``allow_hexainst``."""
    from sparcom.tune.rows import training_rows

    settings = resolve(TuneSettings, settings, options, "tune")
    rows = training_rows(data, allow_hexainst)  # before torch loads
    from sparcom.tune.output import check_out
    from sparcom.tune.trainer import TuneJob, fine_tune

    out = Path(out)
    check_out(out, overwrite)  # before the model loads

    job = TuneJob(out, overwrite, dtype, device, progress, command, **({"log": log} if log else {}))
    return fine_tune(base, rows, settings, job)


def merge_adapter(base: str, adapter: str | Path, out: str | Path, *, overwrite: bool = False, dtype: str = "auto",
                  device: str = "cpu", threads: int | None = None, command: str | None = None) -> dict[str, Any]:
    """Merge a trained LoRA adapter folder into ``base`` and write the full model to ``out`` (bit for bit the folder
    ``tune`` wrote when it trained the adapter); returns the record written."""
    from sparcom.settings import check
    from sparcom.tune.lora import materialise_adapter
    from sparcom.tune.output import check_out

    check(TuneSettings(threads=threads))
    check_out(Path(out), overwrite)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return materialise_adapter(base, adapter, out, overwrite=overwrite, dtype=dtype, device=device, command=command)


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


def load_model(spec: str, dtype: str = "auto", device: str = "cpu", device_map: str | None = None, **options: Any):
    """Load a model and its fast tokenizer: a hub id, a local folder, a .gguf file or a built-in name
    (:func:`sparcom.zoo.catalog.load_model`; options ``revision``, ``max_memory``)."""
    from sparcom.zoo.catalog import load_model as load

    return load(spec, dtype=dtype, device=device, device_map=device_map, **options)


def wrap_model(model, tokenizer, name: str = "in-memory"):
    """Wrap an already loaded model and tokenizer (e.g. in tests or notebooks) for the steps that take a model."""
    from sparcom.profile.runner import wrap_model as wrap

    return wrap(model, tokenizer, name)


def model_sites(model):
    """Where each layer's MLP neurons, experts and shared experts live in ``model`` (the family table)."""
    from sparcom.models.sites import model_sites as sites

    return sites(model)


def load_selection(path: str | Path):
    """The selection artifact of an identify folder (masks per kind, category and layer, and their provenance)."""
    from sparcom.artifacts.selection import load_selection as read

    return read(path)
