"""Synthetic run directories that keep counts per instruction (as 'sparcom profile --group-by instruction' does)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_analysis_support import manifest

from sparcom.analysis.groups import GroupCounts
from sparcom.artifacts.run import COUNTS_FILE, MANIFEST_FILE, write_counts_atomic
from sparcom.kinds import GROUP_TOKENS_KEY, count_key, group_key, instructions_key, tokens_key


def write_grouped_run(path: Path, groups: GroupCounts, group_by: str = "instruction", **overrides) -> Path:
    """A complete run whose category counts are the sums of the groups' rows, with the groups in the manifest."""
    path.mkdir(parents=True, exist_ok=True)
    categories = list(groups.category_order)
    counts: dict[str, np.ndarray] = {GROUP_TOKENS_KEY: groups.tokens}
    for j, shape in zip(groups.layout.layers, groups.layout.shapes, strict=True):
        block = groups.counts[:, groups.layout.layer_slice(j)].reshape(groups.size, *shape)
        counts[group_key(groups.kind, j)] = block
        for c in categories:
            rows = np.array([g == c for g in groups.categories])
            counts[count_key(groups.kind, c, j)] = block[rows].sum(axis=0)
    for c in categories:
        rows = np.array([g == c for g in groups.categories])
        counts[tokens_key(c)] = np.array(groups.tokens[rows].sum())
        counts[instructions_key(c)] = np.array(int(rows.sum()))
    write_counts_atomic(path / COUNTS_FILE, counts)
    data = manifest(categories, **overrides)
    if groups.kind == "neuron":  # the manifest records the widths the counts have (loading a run checks them)
        widths = dict(zip(groups.layout.layers, (shape[0] for shape in groups.layout.shapes), strict=True))
        layers = max(widths) + 1
        data["model"] = {**data["model"], "sizes": {**data["model"].get("sizes", {}), "layers": layers,
                                                    "mlp_neurons": [widths.get(j) for j in range(layers)]}}
    data["group_by"] = group_by
    data["groups"] = {"labels": list(groups.labels), "categories": list(groups.categories),
                      "sources": list(groups.sources)}
    data["instruction_ids"] = {c: [label for label, g in zip(groups.labels, groups.categories, strict=True) if g == c]
                               for c in categories}
    (path / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    return path


def by_halves(groups: GroupCounts) -> GroupCounts:
    """The same counts grouped by (category, source) half, as '--group-by source' keeps them."""
    keys = list(dict.fromkeys(zip(groups.categories, groups.sources, strict=True)))
    rows = [[i for i, key in enumerate(zip(groups.categories, groups.sources, strict=True)) if key == k] for k in keys]
    return GroupCounts(groups.kind, groups.layout, tuple(f"{c}/{s}" for c, s in keys), tuple(c for c, _ in keys),
                       tuple(s for _, s in keys), np.stack([groups.counts[r].sum(axis=0) for r in rows]),
                       np.array([groups.tokens[r].sum() for r in rows]))
