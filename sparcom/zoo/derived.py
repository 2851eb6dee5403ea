"""MoE model folders built from a dense model (:mod:`sparcom.zoo.moefy`), and built-ins derived that way.

:func:`write_moe_folder` turns a loaded dense Llama model into a GraniteMoE model folder that plain
``AutoModelForCausalLM.from_pretrained`` loads (``sparcom.build_moe`` / ``sparcom models build-moe`` load the model
by name and call it; this module may not import the loader, which resolves the built-in names defined here): ``config.json``, ``model.safetensors`` (float32), the source's
tokenizer files copied byte for byte, :data:`SPLIT_FILE` (which dense neuron each expert neuron is, per layer, and
what the build measured) and :data:`MANIFEST`. Like the GGUF conversions in :mod:`sparcom.zoo.builtin`, it is
built in a folder staged beside its target (:func:`sparcom.outputs.staged_directory`), checks itself before the rename (the saved
folder reloads to the same logits; every part but the MLP is bit-identical to the dense model; with all experts
routed the exact construction equals the dense model within :data:`DENSE_TOLERANCE`; sparcom's family table maps it as
``granitemoe`` or ``granitemoeshared`` with the built shape), and records the size and sha256 of every file.

:data:`DERIVED` names built-in entries made this way on first use: ``smollm2-135m-moe`` is
``smollm2-135m-instruct`` with a 512-neuron shared expert and 64 experts of 16 neurons, top-16, refitted down
projections, calibrated on ``sparcom-sft``, then distilled from the dense model (:data:`BUILTIN_MOE`).
:func:`resolve_derived` returns its cache folder, building it once (under a lock) and rebuilding it, with a warning,
when it is damaged or stale. The build is deterministic up to the distillation (the same software and thread count
give the same bytes); the distilled down projections of two 2-thread builds have been seen to differ (docs/moe.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites
from sparcom.outputs import lock, staged_directory
from sparcom.provenance import file_sha256, software_versions
from sparcom.zoo.builtin import (
    MANIFEST,
    PROBE_TEXT,
    BuiltinStatus,
    Role,
    Verify,
    default_cache_dir,
    read_cache_manifest,
    recorded_files_problem,
)
from sparcom.zoo.moe_assembly import assemble, retarget
from sparcom.zoo.moefy import MoefyResult, MoefySettings, mlp_blocks, moefy

#: Bump when the build changes what it writes; older caches are then rebuilt.
BUILDER_VERSION = 3
#: Torch threads the MoEfication runs on, whatever the machine: its float32 reductions (calibration forward,
#: clustering, router fit) round by how the work is split over threads, so the weights it writes depend on the
#: thread count (measured: SmolLM2's MoE built on 1 thread and on 2 differ, and the demo's MoE uniqueness verdict
#: with them). Two threads reproduce the builds the docs' numbers come from.
BUILD_THREADS = 2
#: Per layer: the dense neuron of every expert neuron, the router scale and the calibration measurements.
SPLIT_FILE = "moefication.json"
#: Largest |Δlogit| / max|logit| allowed between the dense model and its MoE with every expert routed (k = E): the
#: two sum the same products in another order, which float32 rounding turns into ~1e-6 (SmolLM2: 2.5e-6 on the build
#: probe, 7.2e-6 over 12 HexaInst rows, where the dense model's own change when a row is batched with padding is
#: 1.7e-6; docs/moe.md).
DENSE_TOLERANCE = 1e-4
#: Files of the source folder that are not copied (the tokenizer files are).
_NOT_COPIED = {"config.json", "generation_config.json", MANIFEST}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass(frozen=True)
class DerivedModel:
    """A built-in model made from another built-in by MoEfication."""

    name: str
    parent: str
    role: Role
    description: str
    settings: MoefySettings = field(default_factory=MoefySettings)
    calibration: str = "sparcom-sft"


#: The built-in's recipe: the builder's defaults and two epochs of distillation over 16,384 calibration tokens
#: (docs/moe.md, "Third round": 2.60 nats/token on held-out HexaInst against 2.76–2.78 without, dense 2.07).
BUILTIN_MOE = MoefySettings(distill_epochs=2)

DERIVED: dict[str, DerivedModel] = {
    model.name: model
    for model in (
        DerivedModel(
            name="smollm2-135m-moe",
            parent="smollm2-135m-instruct",
            role="instruct",
            description="SmolLM2-135M-Instruct MoEfied: GraniteMoeShared, 30 layers of a 512-neuron shared expert "
                        "and 64 experts × 16 neurons, top-16 (50% of the MLP per token), routers and down "
                        "projections fitted on sparcom-sft, then distilled from the dense model (built on first "
                        "use, several minutes)",
            settings=BUILTIN_MOE,
        ),
    )
}


# ---------------------------------------------------------------------------------------------------------
# Calibration rows and source identity


def calibration_rows(calibration: str | Path) -> tuple[list, dict]:
    """(rows, record) of the calibration text: ``sparcom-sft`` or a JSON Lines file; HexaInst rows are refused."""
    from sparcom.data import human, tuning_data
    from sparcom.data.schema import read_rows

    path = Path(calibration)
    if path.is_file():
        rows = read_rows(path, require_output=True)
        record = {"path": str(path), "sha256": file_sha256(path), "rows": len(rows)}
    elif str(calibration) == tuning_data.NAME:
        rows = tuning_data.build_tuning_rows()
        record = {"path": tuning_data.NAME, "sha256": hashlib.sha256(tuning_data.rows_bytes(rows)).hexdigest(),
                  "rows": len(rows)}
    else:
        raise SparcomError(f"--calibration {calibration}: file not found; pass a JSON Lines file of instruction rows "
                           f"or '{tuning_data.NAME}' for the built-in tuning set")
    # Without the source packages only the AI half can be compared; ids and origins still catch a copied file.
    footprint = tuning_data.hexainst_footprint(include_human=not human.missing_packages())
    clash = tuning_data.overlapping_rows(rows, footprint)
    if clash:
        raise SparcomError(f"{len(clash)} calibration row(s) repeat HexaInst rows (first: {clash[0]}); routers fitted "
                           "on the profiling set would confound what they route; calibrate on other text")
    return rows, record


def source_files_digest(folder: Path) -> str:
    """sha256 over the names and sha256 of a model folder's weight files (identity of the dense source)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        digest.update(f"{path.relative_to(folder).as_posix()}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Checks made before a build is renamed into place


def _probe_ids(tokenizer) -> torch.Tensor:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": PROBE_TEXT}], tokenize=False,
                                             add_generation_prompt=True)
        return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    return torch.tensor([tokenizer(PROBE_TEXT)["input_ids"]])


def _first_mlp_input(model, ids: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = mlp_blocks(model)[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


def _moe_family(settings: MoefySettings) -> str:
    return "granitemoeshared" if settings.shared_neurons else "granitemoe"


def _check_site_map(saved, dense, settings: MoefySettings) -> str:
    """The family sparcom's site map gives the saved folder, after checking it has the built shape."""
    sites = model_sites(saved)  # sparcom profiles it through the ordinary family table
    width = (dense.config.intermediate_size - settings.shared_neurons) // settings.num_experts
    shapes = {(site.num_experts, site.width, site.top_k) for site in sites.moe.values()}
    shared = {site.width for site in sites.shared.values()}
    if (sites.family.name != _moe_family(settings) or len(sites.moe) != sites.layers
            or shapes != {(settings.num_experts, width, settings.top_k)}
            or shared != ({settings.shared_neurons} if settings.shared_neurons else set())):
        raise SparcomError(f"the saved MoE's site map ({sites.family.name}, {len(sites.moe)} of {sites.layers} "
                           f"MoE layers, (experts, width, top-k) {sorted(shapes)}, shared {sorted(shared)}) is not "
                           "what was built; this is a bug")
    return sites.family.name


def verify_moe(dense, result: MoefyResult, folder: Path, tokenizer) -> dict:
    """Check a saved MoE folder against the in-memory build and the dense model; the numbers for the manifest.

    The k = E check runs on the exact construction (experts that are exact slices, shared expert included); with a
    refit, the saved model's own k = E difference is recorded as well (it is not the dense model by design).
    """
    from transformers import AutoModelForCausalLM

    ids = _probe_ids(tokenizer)
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    expected = "GraniteMoeSharedForCausalLM" if result.settings.shared_neurons else "GraniteMoeForCausalLM"
    if type(saved).__name__ != expected:
        raise SparcomError(f"the saved MoE loads as {type(saved).__name__}, not {expected}; this is a bug")
    tied = saved.get_output_embeddings().weight.data_ptr() == saved.get_input_embeddings().weight.data_ptr()
    if dense.config.tie_word_embeddings and not tied:
        raise SparcomError("the saved MoE lost the tied input/output embeddings; this is a bug")
    family = _check_site_map(saved, dense, result.settings)
    experts = result.settings.num_experts
    exact = retarget(assemble(dense, result.splits, result.settings.top_k, exact=True), experts)
    with torch.no_grad():
        built, reloaded = result.model(ids).logits, saved(ids).logits
        reference, all_experts = dense(ids).logits, exact(ids).logits
        changed = any(s.down is not None for s in result.splits) or result.recovery.get("distill_kept")
        refit_all = retarget(saved, experts)(ids).logits if changed else None
    reload_diff = float((built - reloaded).abs().max())
    # Bit for bit in the weights; the logits may differ in the last float32 bits (memory-mapped tensors are aligned
    # differently, and the kernels round differently), so they are held to the k = E tolerance.
    memory, loaded = result.model.state_dict(), saved.state_dict()
    different = sorted(set(memory) ^ set(loaded)) or [name for name in memory if not torch.equal(memory[name],
                                                                                                  loaded[name])]
    if different or reload_diff > DENSE_TOLERANCE * float(built.abs().max()):
        raise SparcomError(f"the saved MoE disagrees with the one built in memory (tensors {different[:3]}, max "
                           f"|Δlogit| {reload_diff:.3g}); this is a bug")
    if not torch.equal(_first_mlp_input(dense, ids), _first_mlp_input(saved, ids)):
        raise SparcomError("the MoE's attention/norms differ from the dense model's (layer 0 MLP input); this is a bug")
    dense_diff = float((reference - all_experts).abs().max())
    relative = dense_diff / float(reference.abs().max())
    if relative > DENSE_TOLERANCE:
        raise SparcomError(f"with all {experts} experts routed the exact MoE differs from the dense model by "
                           f"{dense_diff:.3g} (relative {relative:.3g} > {DENSE_TOLERANCE}); this is a bug")
    checks = {"probe_tokens": int(ids.shape[1]), "reload_max_abs_logit_diff": reload_diff,
              "all_experts_max_abs_logit_diff": dense_diff, "all_experts_relative_logit_diff": relative,
              "non_mlp_bit_identical": True, "family": family}
    if refit_all is not None:
        checks["refit_all_experts_relative_logit_diff"] = float((reference - refit_all).abs().max()
                                                                / reference.abs().max())
    return checks


# ---------------------------------------------------------------------------------------------------------
# Building a folder


def _split_record(result: MoefyResult) -> dict:
    refit = result.settings.refit > 0
    distilled = bool(result.recovery.get("distill_kept"))
    return {
        "method": "MoEfication (Zhang et al. 2022) with a shared expert: the neurons of largest mean contribution in a "
                  "shared expert, the rest in balanced co-activation clusters, ridge-regression routers, layers split "
                  "in order on the MoE's own inputs" + (", down projections refitted by ridge least squares" if refit
                                                        else ""),
        "settings": result.settings.to_dict(),
        "calibration": result.calibration,
        "expert_neuron_is_dense_neuron": "layers[j].members[e][i] is the dense MLP neuron of expert e's neuron i; "
                                         "layers[j].shared[i] that of the shared expert's neuron i",
        "exact": "gate and up rows are exact slices of the dense MLP; down columns are "
                 + ("refitted where layers[j].down is 'refit' (exact where 'exact')" if refit else "exact slices")
                 + ("; then every down projection was trained by distillation (see 'distillation')" if distilled else ""),
        "distillation": result.recovery,
        "layers": [{"members": split.members.tolist(), "shared": split.shared.tolist(), "router_scale": split.scale,
                    "down": "exact" if split.down is None else "refit",
                    "calibration": {k: round(v, 6) for k, v in split.stats.items()}}
                   for split in result.splits],
    }


def _write_folder(result: MoefyResult, source_folder: Path | None, tokenizer, out: Path) -> None:
    result.model.save_pretrained(out)
    if source_folder is not None:  # the tokenizer files, byte for byte
        for path in sorted(source_folder.iterdir()):
            if path.is_file() and path.name not in _NOT_COPIED and path.suffix not in _WEIGHT_SUFFIXES:
                shutil.copy2(path, out / path.name)
    else:
        tokenizer.save_pretrained(out)
    (out / SPLIT_FILE).write_text(json.dumps(_split_record(result), indent=1) + "\n", encoding="utf-8")


def _progress_printer(enabled: bool, what: str = "MoEfying layer"):
    if not enabled:
        return None

    def report(done: int, total: int) -> None:
        print(f"\rsparcom: {what} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


def write_moe_folder(dense, tokenizer, target: Path, settings: MoefySettings, calibration: str | Path,
                     extra: dict, source_folder: Path | None = None, overwrite: bool = False,
                     marker: str | None = MANIFEST, progress: bool = True) -> dict:
    """MoEfy ``dense`` into a folder staged beside ``target`` (the one output policy), check it, write the manifest,
    and rename it into place. ``source_folder``: a plain model folder whose tokenizer files are copied byte for
    byte (else the tokenizer is saved). Returns the manifest."""
    started = time.perf_counter()
    settings.check(getattr(dense.config, "intermediate_size", None))
    with staged_directory(target, overwrite=overwrite, marker=marker, kind="MoE model folder") as out:
        rows, record = calibration_rows(calibration)
        previous = torch.get_num_threads()
        torch.set_num_threads(BUILD_THREADS)  # the same weights on every machine (see BUILD_THREADS)
        try:
            result = moefy(dense, tokenizer, rows, settings, progress=_progress_printer(progress),
                           distill_progress=_progress_printer(progress, "distilling the dense model, step"))
        finally:
            torch.set_num_threads(previous)
        _write_folder(result, source_folder, tokenizer, out)
        checks = verify_moe(dense, result, out, tokenizer)
        files = {path.relative_to(out).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
                 for path in sorted(out.rglob("*")) if path.is_file()}
        manifest = {
            "format": 1,
            "builder_version": BUILDER_VERSION,
            **extra,
            "family": checks["family"],
            "calibration": {**record, **result.calibration},
            "settings": settings.to_dict(),
            "dtype": "float32",
            "threads": BUILD_THREADS,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": {**{k: round(v, 1) for k, v in result.seconds.items()},
                              "total_with_checks": round(time.perf_counter() - started, 1)},
            "checks": checks,
            "versions": software_versions(),
            "files": files,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def load_dense_folder(folder: Path):
    """(model, tokenizer) of a plain model folder in float32 (a built-in's cache; no sparcom loading policy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # sparcom's own progress line and one-line errors own the terminal
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparcomError(f"cannot load {folder}: {first}") from None
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------
# Derived built-ins: cache, checks, status


def derived_cache_path(name: str, cache_dir: str | Path | None = None) -> Path:
    model = get_derived(name)
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / model.name


def get_derived(name: str) -> DerivedModel:
    try:
        return DERIVED[name]
    except KeyError:
        raise SparcomError(f"unknown derived model {name!r}; known: {', '.join(DERIVED)}") from None


def _parent_record(model: DerivedModel, cache_dir: str | Path | None, verify: Verify) -> dict:
    """The parent's cache folder (converted if needed) and the sha256 of its weights, from its own manifest."""
    from sparcom.zoo.builtin import resolve_builtin

    folder = resolve_builtin(model.parent, cache_dir, verify)
    files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    return {"name": model.parent, "folder": folder,
            "weights": {rel: info["sha256"] for rel, info in files.items() if Path(rel).suffix in _WEIGHT_SUFFIXES}}


def check_derived(name: str, folder: str | Path, verify: Verify = "full", parent_weights: dict | None = None) -> str:
    """Why ``folder`` is not a valid build of derived model ``name`` ("" when it is).

    ``quick``: manifest, builder version, settings, every recorded file's size (and the parent's weights hashes
    when given); ``full`` also recomputes every file's sha256.
    """
    model = get_derived(name)
    folder = Path(folder)
    manifest = read_cache_manifest(folder)
    if isinstance(manifest, str):
        return manifest
    if manifest.get("builder_version") != BUILDER_VERSION:
        return f"built by builder version {manifest.get('builder_version')}, now {BUILDER_VERSION}"
    if manifest.get("name") != model.name or manifest.get("settings") != model.settings.to_dict():
        return "built with other settings"
    if parent_weights is not None and manifest.get("parent", {}).get("weights") != parent_weights:
        return f"built from a different {model.parent}"
    return recorded_files_problem(folder, manifest["files"], verify)


def resolve_derived(name: str, cache_dir: str | Path | None = None, verify: Verify = "full",
                    progress: bool = True) -> Path:
    """The folder of derived built-in ``name`` (e.g. ``smollm2-135m-moe``), built from its parent on first use.

    Like :func:`sparcom.zoo.builtin.resolve_builtin`: later calls check the cache (``full``: every file's sha256;
    ``quick``: sizes) against the settings and the parent's weights, and rebuild a stale or damaged one with a
    warning on stderr. One process builds under a lock; others wait and then find it built.
    """
    model = get_derived(name)
    target = derived_cache_path(name, cache_dir)
    parent = _parent_record(model, cache_dir, verify)
    problem = check_derived(name, target, verify, parent["weights"])
    if not problem:
        return target
    with lock(target, wait=True):
        problem = check_derived(name, target, verify, parent["weights"])  # another process may have built it
        if not problem:
            return target
        for pattern in (f".{model.name}.*.partial", f".{model.name}.build-*"):  # from a killed build; we hold the lock
            for leftover in target.parent.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        if problem == "not built":
            print(f"sparcom: building {name} from {model.parent} into {target} (once, several minutes)",
                  file=sys.stderr)
        else:
            print(f"sparcom: warning: cached {name} at {target} is invalid ({problem}); rebuilding", file=sys.stderr)
        dense, tokenizer = load_dense_folder(parent["folder"])
        extra = {"name": model.name, "role": model.role,
                 "parent": {"name": model.parent, "weights": parent["weights"]},
                 "source": {"spec": model.parent, "folder": str(parent["folder"])}}
        write_moe_folder(dense, tokenizer, target, model.settings, model.calibration, extra,
                         source_folder=parent["folder"], overwrite=True, marker=None, progress=progress)
    return target


def derived_statuses(cache_dir: str | Path | None = None,
                     parent_status: Callable[[str], BuiltinStatus] | None = None) -> list[BuiltinStatus]:
    """What ``sparcom models list`` shows for each derived model (installed = its parent's package is)."""
    statuses = []
    for model in DERIVED.values():
        path = derived_cache_path(model.name, cache_dir)
        parent = parent_status(model.parent) if parent_status is not None else None
        stale = check_derived(model.name, path, "quick")
        statuses.append(BuiltinStatus(
            name=model.name,
            role=model.role,
            package=parent.package if parent else "",
            version=parent.version if parent else "",
            installed=bool(parent and (parent.installed or parent.cached)),
            cached=not stale,
            path=path,
            pip_command=parent.pip_command if parent else "",
            description=model.description,
            detail="; ".join(part for part in ((parent.detail if parent else ""),
                                               "" if stale in ("", "not built") else stale) if part),
        ))
    return statuses
