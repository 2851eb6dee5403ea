"""What every artifact records about where it came from: file hashes and software versions."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
from pathlib import Path

_BLOCK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (weights files are gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions(*extra: str) -> dict[str, str]:
    """Versions of Python, sparcom, torch and transformers (and any ``extra`` installed packages)."""
    versions = {"python": platform.python_version()}
    for name in ("sparcom", "torch", "transformers", *extra):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions
