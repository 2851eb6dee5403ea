"""MoE model folders built from a dense model (:mod:`sparcom.models.moefy`), and built-ins derived that way.

:func:`build_moe` turns any dense Llama model sparcom can load into a GraniteMoE model folder that plain
``AutoModelForCausalLM.from_pretrained`` loads: ``config.json``, ``model.safetensors`` (float32), the source's
tokenizer files copied byte for byte, :data:`SPLIT_FILE` (which dense neuron each expert neuron is, per layer, and
what the build measured) and :data:`MANIFEST`. Like the GGUF conversions in :mod:`sparcom.models.builtin`, it is
built in a temporary folder beside its target and renamed into place, checks itself before the rename (the saved
folder reloads to the same logits; every part but the MLP is bit-identical to the dense model; with all experts
routed it equals the dense model within :data:`DENSE_TOLERANCE`), and records the size and sha256 of every file.

:data:`DERIVED` names built-in entries made this way on first use: ``smollm2-135m-moe`` is
``smollm2-135m-instruct`` split into 16 experts of 96 neurons, top-4, calibrated on ``sparcom-sft``.
:func:`resolve_derived` returns its cache folder, building it once (under a lock) and rebuilding it, with a warning,
when it is damaged or stale. The build is deterministic: the same software and thread count give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparcom.errors import SparcomError
from sparcom.models.builtin import MANIFEST, PROBE_TEXT, BuiltinStatus, Role, Verify, default_cache_dir
from sparcom.outputs import lock
from sparcom.models.moefy import MoefyResult, MoefySettings, moefy, retarget
from sparcom.provenance import file_sha256, software_versions

#: Bump when the build changes what it writes; older caches are then rebuilt.
BUILDER_VERSION = 1
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


DERIVED: dict[str, DerivedModel] = {
    model.name: model
    for model in (
        DerivedModel(
            name="smollm2-135m-moe",
            parent="smollm2-135m-instruct",
            role="instruct",
            description="SmolLM2-135M-Instruct MoEfied: GraniteMoE, 30 layers of 16 experts × 96 neurons, top-4, "
                        "routers fitted on sparcom-sft (built on first use, a few minutes)",
        ),
    )
}


# ---------------------------------------------------------------------------------------------------------
# Calibration rows and source identity


def calibration_rows(calibration: str | Path):
    """(rows, record) of the calibration text: ``sparcom-sft`` or a JSON Lines file; HexaInst rows are refused."""
    from sparcom.tune.trainer import check_not_hexainst, load_training_rows

    rows, record = load_training_rows(calibration)
    check_not_hexainst(rows)
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
    layer = model.model.layers[0]
    block = getattr(layer, "mlp", None) or layer.block_sparse_moe
    seen = []
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


def verify_moe(dense, result: MoefyResult, folder: Path, tokenizer) -> dict:
    """Check a saved MoE folder against the in-memory build and the dense model; the numbers for the manifest."""
    from transformers import AutoModelForCausalLM

    ids = _probe_ids(tokenizer)
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    if type(saved).__name__ != "GraniteMoeForCausalLM":
        raise SparcomError(f"the saved MoE loads as {type(saved).__name__}, not GraniteMoeForCausalLM; this is a bug")
    if dense.config.tie_word_embeddings and saved.lm_head.weight.data_ptr() != saved.model.embed_tokens.weight.data_ptr():
        raise SparcomError("the saved MoE lost the tied input/output embeddings; this is a bug")
    every = retarget(result.model, result.settings.num_experts)
    with torch.no_grad():
        built, reloaded = result.model(ids).logits, saved(ids).logits
        reference, all_experts = dense(ids).logits, every(ids).logits
    reload_diff = float((built - reloaded).abs().max())
    if not torch.allclose(built, reloaded, rtol=0, atol=1e-6):
        raise SparcomError(f"the saved MoE disagrees with the one built in memory (max |Δlogit| {reload_diff:.3g})")
    if not torch.equal(_first_mlp_input(dense, ids), _first_mlp_input(saved, ids)):
        raise SparcomError("the MoE's attention/norms differ from the dense model's (layer 0 MLP input); this is a bug")
    dense_diff = float((reference - all_experts).abs().max())
    relative = dense_diff / float(reference.abs().max())
    if relative > DENSE_TOLERANCE:
        raise SparcomError(f"with all {result.settings.num_experts} experts routed the MoE differs from the dense "
                           f"model by {dense_diff:.3g} (relative {relative:.3g} > {DENSE_TOLERANCE}); this is a bug")
    return {"probe_tokens": int(ids.shape[1]), "reload_max_abs_logit_diff": reload_diff,
            "all_experts_max_abs_logit_diff": dense_diff, "all_experts_relative_logit_diff": relative,
            "non_mlp_bit_identical": True}


# ---------------------------------------------------------------------------------------------------------
# Building a folder


def _split_record(result: MoefyResult) -> dict:
    return {
        "method": "MoEfication (Zhang et al. 2022): balanced co-activation clustering, ridge-regression routers",
        "settings": result.settings.to_dict(),
        "calibration": result.calibration,
        "expert_neuron_is_dense_neuron": "layers[j].members[e][i] is the dense MLP neuron of expert e's neuron i",
        "layers": [{"members": split.members.tolist(), "router_scale": split.scale,
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
    for path in out.iterdir():  # safetensors writes owner-only files; a cache may be shared
        path.chmod(path.stat().st_mode | 0o044)


def _build_into(target: Path, source: str, settings: MoefySettings, calibration: str | Path,
                extra: dict, progress: bool) -> dict:
    """Build in a temporary folder beside ``target``, check it, write the manifest, rename it into place."""
    from sparcom.models.loading import load_model

    started = time.perf_counter()
    loaded = load_model(source, dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    rows, record = calibration_rows(calibration)
    report = None
    if progress:
        def report(done: int, total: int) -> None:
            print(f"\rsparcom: MoEfying layer {done}/{total}", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)
    result = moefy(dense, tokenizer, rows, settings, progress=report)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        out = work / "out"
        out.mkdir()
        folder = Path(loaded.info["resolved_path"]) if loaded.info.get("resolved_path") else None
        _write_folder(result, folder if folder is not None and loaded.info.get("gguf_file") is None else None,
                      tokenizer, out)
        checks = verify_moe(dense, result, out, tokenizer)
        files = {path.relative_to(out).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
                 for path in sorted(out.rglob("*")) if path.is_file()}
        manifest = {
            "format": 1,
            "builder_version": BUILDER_VERSION,
            **extra,
            "source": {"spec": source, "fingerprint": loaded.info.get("fingerprint"),
                       "weights_sha256": source_files_digest(folder) if folder is not None else None},
            "family": "granitemoe",
            "calibration": {**record, **result.calibration},
            "settings": settings.to_dict(),
            "dtype": "float32",
            "threads": torch.get_num_threads(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": {**{k: round(v, 1) for k, v in result.seconds.items()},
                              "total_with_checks": round(time.perf_counter() - started, 1)},
            "checks": checks,
            "versions": software_versions(),
            "files": files,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rename(work / "old")  # removed with the work folder below
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def build_moe(source: str | Path, out: str | Path, settings: MoefySettings | None = None,
              calibration: str | Path = "sparcom-sft", overwrite: bool = False, progress: bool = True) -> Path:
    """Build a MoE model folder at ``out`` from the dense model ``source`` (folder, .gguf, hub id or built-in name).

    ``calibration`` is ``sparcom-sft`` (default) or a JSON Lines file of instruction rows (HexaInst rows are
    refused). Refuses an existing ``out`` unless ``overwrite``. Returns ``out``.
    """
    settings = settings or MoefySettings()
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise SparcomError(f"{target} exists; pass --overwrite to replace it or choose another --out")
    settings.check()
    with lock(target, wait=True):
        _build_into(target, str(source), settings, calibration, {"name": None}, progress)
    return target


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
    from sparcom.models.builtin import resolve_builtin

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
    if not folder.is_dir():
        return "not built"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{MANIFEST} is missing or unreadable"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return f"{MANIFEST} is malformed"
    if manifest.get("builder_version") != BUILDER_VERSION:
        return f"built by builder version {manifest.get('builder_version')}, now {BUILDER_VERSION}"
    if manifest.get("name") != model.name or manifest.get("settings") != model.settings.to_dict():
        return "built with other settings"
    if parent_weights is not None and manifest.get("parent", {}).get("weights") != parent_weights:
        return f"built from a different {model.parent}"
    for rel, info in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != info.get("size"):
            return f"{rel} has size {path.stat().st_size}, recorded {info.get('size')}"
    if verify == "full":
        for rel, info in manifest["files"].items():
            if file_sha256(folder / rel) != info.get("sha256"):
                return f"{rel} does not match its recorded sha256"
    return ""


def resolve_derived(name: str, cache_dir: str | Path | None = None, verify: Verify = "full",
                    progress: bool = True) -> Path:
    """The folder of derived built-in ``name``, built from its parent on first use (see :func:`resolve_builtin`)."""
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
        for leftover in target.parent.glob(f".{model.name}.build-*"):  # from a killed build; we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        if problem == "not built":
            print(f"sparcom: building {name} from {model.parent} into {target} (once, a few minutes)",
                  file=sys.stderr)
        else:
            print(f"sparcom: warning: cached {name} at {target} is invalid ({problem}); rebuilding", file=sys.stderr)
        extra = {"name": model.name, "role": model.role,
                 "parent": {"name": model.parent, "weights": parent["weights"]}}
        _build_into(target, str(parent["folder"]), model.settings, model.calibration, extra, progress)
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
