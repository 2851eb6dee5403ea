"""Stable seeds from labels, so random draws do not depend on visiting order or on numpy's global state.

Shared by the causal random control sets and the analysis's random sets and folds (it imports nothing heavy).
"""

from __future__ import annotations

import hashlib


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any values (stable across runs, platforms and Python hash randomisation)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
