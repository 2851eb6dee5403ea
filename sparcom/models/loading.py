"""Load a causal LM and its tokenizer from a hub id, a local folder, a GGUF file, a built-in name or a LoRA folder.

Loading problems become one-line :class:`SparcomError` messages; an architecture sparcom does not support is refused
from its config before any weights load, and a loaded model's site map is built once to check that its family entry
fits (:mod:`sparcom.models.sites`). Identity fingerprints (weights and tokenizer) go into the manifest so that runs
of different models are never merged or compared by accident.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from sparcom.errors import SparcomError
from sparcom.models.families import family_for
from sparcom.models.lora import ADAPTER_WEIGHTS, base_spec_of, check_adapter_folder, is_adapter_folder, merge_adapter
from sparcom.models.sites import model_sites
from sparcom.provenance import file_sha256

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_EDGE_BYTES = 1 << 20


@dataclass
class LoadedModel:
    """A model ready for profiling, with what the manifest needs to say about it."""

    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)

    def measurement(self) -> dict[str, Any]:
        """What a selection made on this model records about it (the ablate aspects of
        :data:`sparcom.provenance.MEASUREMENT`): architecture, weights fingerprint, tokenizer hash and sizes."""
        return {"model.architecture": type(self.model).__name__, "model.fingerprint": self.info.get("fingerprint"),
                "tokenizer_hash": tokenizer_fingerprint(self.tokenizer),
                "model.sizes": model_sites(self.model).description(self.model)["sizes"]}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Map a --dtype name to a torch dtype and check that the device can compute in it."""
    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise SparcomError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device == "cpu" and dtype == torch.float16:
        raise SparcomError("dtype float16 is not supported on device cpu (slow and inexact there); "
                           "use --dtype float32 or bfloat16")
    if device.startswith("cuda") and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise SparcomError(f"dtype bfloat16 is not supported on {device}; use --dtype float16 or float32")
    return dtype


def check_device(device: str) -> None:
    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SparcomError(f"device {device!r} is not available (no CUDA GPU found); use --device cpu")
        index = device.split(":", 1)[1] if ":" in device else "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise SparcomError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        return
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise SparcomError("device 'mps' is not available on this machine; use --device cpu")
        return
    raise SparcomError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")


def file_fingerprint(paths: list[Path], root: Path) -> str:
    """Cheap identity of weight files: names, sizes and hashes of their first and last MiB."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root)}:{size}:".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            if size > _EDGE_BYTES:
                handle.seek(max(size - _EDGE_BYTES, _EDGE_BYTES))
                digest.update(handle.read())
    return digest.hexdigest()


def parameter_fingerprint(model: torch.nn.Module, max_parameters: int = 50_000_000) -> str:
    """Hash of the parameters themselves for small in-memory models; 'unhashed' for large ones."""
    if sum(p.numel() for p in model.parameters()) > max_parameters:
        return "unhashed"
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's full definition and chat template."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()


class ModelCatalog(Protocol):
    """Named models that live in a cache (the built-ins of :mod:`sparcom.zoo`): model access asks it to turn a name
    into a folder, so that it never imports the code that builds those folders."""

    def names(self) -> list[str]: ...

    def resolve(self, name: str) -> Path: ...


def _locate(spec: str, catalog: ModelCatalog | None = None) -> tuple[str, Path | None, str | None]:
    """(kind, folder, gguf file name) for a model spec."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise SparcomError(f"{spec}: a model file must be a .gguf; otherwise pass the model folder")
        return "gguf", path.parent, path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return "gguf", path, ggufs[0].name
            raise SparcomError(f"{spec}: folder has no config.json; pass a Hugging Face model folder or a .gguf file")
        return "folder", path, None
    names = sorted(catalog.names()) if catalog is not None else []
    if spec in names:
        return "builtin", catalog.resolve(spec), None
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
    if looks_like_path or "/" not in spec:
        hint = f"; built-in models: {', '.join(names)}" if names else ""
        raise SparcomError(f"model path {spec!r} does not exist; pass a model folder, a .gguf file or a hub id{hint}")
    return "hub", None, None


def load_model(
    spec: str,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    revision: str | None = None,
    max_memory: dict | None = None,
    catalog: ModelCatalog | None = None,
) -> LoadedModel:
    """Load model and fast tokenizer for profiling (eval mode, no gradients).

    ``max_memory`` limits ``device_map`` to some devices (a rank of a torchrun job uses only its own GPUs);
    ``catalog`` resolves built-in names (:func:`sparcom.zoo.catalog.load_model` passes the zoo's).
    """
    from transformers import AutoModelForCausalLM

    check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if is_adapter_folder(spec) and not Path(spec, "config.json").exists():
        return load_adapter_folder(spec, dtype=dtype, device=device, catalog=catalog)  # 'sparcom tune --no-merge'
    kind, folder, gguf = _locate(spec, catalog)
    source = str(folder) if folder is not None else spec
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if gguf:
        kwargs["gguf_file"] = gguf
    if revision:
        kwargs["revision"] = revision
    if device_map:
        kwargs["device_map"] = device_map
        if max_memory:
            kwargs["max_memory"] = max_memory
    with _loading_errors(spec, kind):
        _, tokenizer = _config_and_tokenizer(source, gguf)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if not device_map:
        model = model.to(device)
    model.eval()
    model_sites(model)  # the family entry must fit this model: one line naming a missing path otherwise
    if folder is not None:
        weights = _weight_files(folder, gguf)
        fingerprint = file_fingerprint(weights, folder) if weights else parameter_fingerprint(model)
    else:
        fingerprint = f"revision:{getattr(model.config, '_commit_hash', None) or revision or 'unknown'}"
    info = {
        "name_or_path": spec,
        "source": kind,
        "resolved_path": str(folder) if folder is not None else None,
        "gguf_file": gguf,
        "revision": revision or getattr(model.config, "_commit_hash", None),
        "fingerprint": fingerprint,
        "device_map": device_map,
    }
    return LoadedModel(model, tokenizer, info)


def preview_model(spec: str, dtype: str = "auto", device: str = "cpu",
                  catalog: ModelCatalog | None = None) -> LoadedModel | None:
    """The model without its weights: its real config and tokenizer, the fingerprint of its weight files and a
    skeleton on the meta device (architecture, sizes, site shapes, dtype), so that a step refuses what does not fit
    the model (a selection made on other weights, a row longer than its positions) before the weights load. None
    where the identity of the weights needs them loaded (a hub id, an adapter folder, a folder without weight files):
    the step then checks after loading, as it always does."""
    from transformers import AutoModelForCausalLM

    check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if is_adapter_folder(spec) and not Path(spec, "config.json").exists():
        return None
    kind, folder, gguf = _locate(spec, catalog)
    weights = _weight_files(folder, gguf) if folder is not None else []
    if not weights:
        return None
    with _loading_errors(spec, kind):
        config, tokenizer = _config_and_tokenizer(str(folder), gguf)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    skeleton.eval()
    model_sites(skeleton)
    info = {"name_or_path": spec, "source": kind, "resolved_path": str(folder), "gguf_file": gguf, "revision": None,
            "fingerprint": file_fingerprint(weights, folder), "device_map": None, "skeleton": True}
    return LoadedModel(skeleton, tokenizer, info)


def _weight_files(folder: Path, gguf: str | None) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
            and (gguf is None or p.name == gguf)]


def _config_and_tokenizer(source: str, gguf: str | None) -> tuple[Any, Any]:
    """The config (an unsupported family is refused here, before any weights load) and the fast tokenizer."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar and one-line errors own the terminal
    hf_logging.set_verbosity_error()
    extra = {"gguf_file": gguf} if gguf else {}
    config = AutoConfig.from_pretrained(source, **extra)
    family_for(getattr(config, "model_type", "unknown"))
    return config, AutoTokenizer.from_pretrained(source, **extra)


@contextlib.contextmanager
def _loading_errors(spec: str, kind: str) -> Iterator[None]:
    """A model that cannot be read is one line (with a hint about unreachable hubs for a hub id)."""
    try:
        yield
    except SparcomError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        offline = " (model hubs may be unreachable: download the model to a folder and pass its path)" if kind == "hub" else ""
        raise SparcomError(f"cannot load model {spec!r}: {first}{offline}") from None


def load_adapter_folder(path: str | Path, dtype: str = "auto", device: str = "cpu",
                        catalog: ModelCatalog | None = None) -> LoadedModel:
    """Load a base + adapter folder (``sparcom tune --no-merge``) as one model, merged in memory.

    The base is whatever the folder's record names (a built-in name, a folder, a .gguf file, a hub id), loaded
    with :func:`load_model`; the fingerprint combines the base's with the adapter's.
    """
    folder = Path(path)
    record = check_adapter_folder(folder)
    base = load_model(base_spec_of(folder), dtype=dtype, device=device, catalog=catalog)
    model = merge_adapter(base.model, folder).eval()
    tokenizer = base.tokenizer
    if (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    info = {
        **base.info,
        "name_or_path": str(path),
        "source": "adapter",
        "resolved_path": str(folder),
        "base": base.info,
        "adapter_sha256": file_sha256(folder / ADAPTER_WEIGHTS),
        "fingerprint": file_fingerprint([folder / ADAPTER_WEIGHTS], folder) + ":" + base.info["fingerprint"],
    }
    if record:
        info["tune"] = {k: record.get(k) for k in ("method", "seed", "data")}
    return LoadedModel(model, tokenizer, info)


def load_run_tokenizer(model_info: dict, expected_hash: str | None = None):
    """The fast tokenizer a profile run used (the manifest's ``model``: its resolved folder or hub id), checked
    against the run's tokenizer hash, for analyses of the run's own tokens (the lexical baseline)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    source = model_info.get("resolved_path") or model_info.get("name_or_path")
    gguf = model_info.get("gguf_file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), **({"gguf_file": gguf} if gguf else {}))
    except (OSError, ValueError, ImportError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparcomError(f"cannot load the run's tokenizer from {source!r}: {first}") from None
    if expected_hash and tokenizer_fingerprint(tokenizer) != expected_hash:
        raise SparcomError(f"the tokenizer at {source!r} is not the one the run used (its hash differs); the lexical "
                           "baseline needs the run's tokenizer")
    return tokenizer
