"""Every built-in model name, whatever makes it: GGUF conversions (:mod:`sparcom.zoo.builtin`) and models derived
from them (:mod:`sparcom.zoo.derived`, e.g. the MoE ``smollm2-135m-moe``).

The one place that turns a built-in name into a cached folder, so that anything that takes a model takes every
built-in: :func:`load_model` (model access with the zoo's names) and ``sparcom models list / prepare`` ask here. It
sits above both registries so that neither imports the other, and above model access, which never imports it.
"""

from __future__ import annotations

from pathlib import Path

from sparcom.errors import SparcomError
from sparcom.models.loading import LoadedModel
from sparcom.models.loading import load_model as load_folder
from sparcom.models.loading import preview_model as preview_folder
from sparcom.zoo.builtin import BUILTINS, BuiltinStatus, Verify, list_builtins, resolve_builtin
from sparcom.zoo.derived import DERIVED, derived_statuses, resolve_derived


def builtin_names() -> list[str]:
    """The GGUF conversions, then the models derived from them."""
    return [*BUILTINS, *DERIVED]


def is_builtin(name: str) -> bool:
    return name in BUILTINS or name in DERIVED


def resolve(name: str, cache_dir: str | Path | None = None, verify: Verify = "full") -> Path:
    """The cached folder of built-in ``name``: converted or built on first use, checked and rebuilt when damaged."""
    if name in DERIVED:
        return resolve_derived(name, cache_dir, verify)
    if name in BUILTINS:
        return resolve_builtin(name, cache_dir, verify)
    raise SparcomError(f"unknown built-in model {name!r}; known: {', '.join(builtin_names())}")


def statuses(cache_dir: str | Path | None = None) -> list[BuiltinStatus]:
    """What ``sparcom models list`` shows: every GGUF built-in, then every derived one (installed = its parent is)."""
    converted = list_builtins(cache_dir)
    by_name = {status.name: status for status in converted}
    return converted + derived_statuses(cache_dir, by_name.get)


class _Catalog:
    """The zoo as :class:`sparcom.models.loading.ModelCatalog`."""

    def names(self) -> list[str]:
        return builtin_names()

    def resolve(self, name: str) -> Path:
        return resolve(name)


CATALOG = _Catalog()


def load_model(spec: str, dtype: str = "auto", device: str = "cpu", device_map: str | None = None,
               revision: str | None = None, max_memory: dict | None = None) -> LoadedModel:
    """:func:`sparcom.models.loading.load_model` that also takes every built-in name (converted or built on first
    use, then cached)."""
    return load_folder(spec, dtype=dtype, device=device, device_map=device_map, revision=revision,
                       max_memory=max_memory, catalog=CATALOG)


def preview_model(spec: str, dtype: str = "auto", device: str = "cpu") -> LoadedModel | None:
    """:func:`sparcom.models.loading.preview_model` (the model without its weights, for checks made before they
    load) that also takes every built-in name."""
    return preview_folder(spec, dtype=dtype, device=device, catalog=CATALOG)
