"""Random control sets: the same shape as a selected set, drawn uniformly, reproducible from a seed.

A random set matches the selected set's size in every layer — and, for expert neurons, in every expert of
every layer (the random neurons sit in the same experts, so the control has the same routing exposure). It
is drawn uniformly from all components of that layer (or expert), the selected ones included: the null
hypothesis is "any set of this shape", not "any set avoiding the selection".

Each (seed, label, kind, layer[, expert]) gets its own generator, seeded from a SHA-256 of those values, so a set
does not depend on the order in which layers or categories are visited, nor on numpy's global state.
"""

from __future__ import annotations

import numpy as np

from sparcom.causal.interventions import Ablation
from sparcom.seeding import stream_seed  # re-exported: tests and callers import it from here


def _draw(population: int, count: int, *parts: object) -> np.ndarray:
    rng = np.random.default_rng(stream_seed(*parts))
    return np.sort(rng.choice(population, size=count, replace=False)).astype(np.int64)


def random_like(ablation: Ablation, seed: int, label: str | None = None) -> Ablation:
    """A random set with ``ablation``'s per-layer (and, for expert neurons, per-expert) counts.

    ``label`` names the stream (e.g. ``"neurons/math"``); with the same ``seed`` and ``label`` the set is identical.
    """
    name = ablation.label if label is None else label
    components: dict[str, dict[int, np.ndarray]] = {}
    for kind, layers in ablation.shapes.items():
        components[kind] = {}
        for layer, shape in sorted(layers.items()):
            chosen = np.asarray(ablation.components.get(kind, {}).get(layer, []), dtype=np.int64)
            if len(shape) == 1:
                components[kind][layer] = _draw(shape[0], len(chosen), seed, name, kind, layer)
                continue
            experts, width = shape
            per_expert = np.bincount(chosen.reshape(-1, 2)[:, 0], minlength=experts)
            rows = [np.stack([np.full(n, e, dtype=np.int64), _draw(width, int(n), seed, name, kind, layer, e)], axis=1)
                    for e, n in enumerate(per_expert) if n]
            components[kind][layer] = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)
    return Ablation(components, {k: dict(v) for k, v in ablation.shapes.items()}, f"random:{name}:{seed}")


def random_sets(ablation: Ablation, seeds: int, base_seed: int = 0, label: str | None = None) -> list[Ablation]:
    """``seeds`` random sets for seeds ``base_seed, base_seed + 1, …``."""
    return [random_like(ablation, base_seed + s, label) for s in range(seeds)]
