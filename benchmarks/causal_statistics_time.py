"""Wall time of the causal check's statistics (sparcom.causal.statistics) at realistic sizes.

Usage: python benchmarks/causal_statistics_time.py [--quick]

Synthetic per-row NLL sums for six categories (no model): for each size, the full ``causal_statistics`` call (cells,
p-values, Holm, B bootstrap replicates over rows with the same resample for every condition) is timed, and against
it the cells alone two ways: as causal_statistics computes them (bincount weights, one matrix product per category)
and as a per-replicate loop (one gather of the resampled rows and one pooled sum per replicate, vectorised over
conditions — the obvious implementation; timed on 250 replicates and scaled), checked equal, so the speed-up is a
ratio within one run. The machine's
load average is printed: other jobs share the two cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sparcom.causal import statistics as st
from sparcom.causal.statistics import category_members, causal_statistics, resample_indices

CATS = ["cls", "code", "qa", "gen", "math", "sum"]


def data(per: int, r: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = [c for c in CATS for _ in range(per)]
    n = len(labels)
    tokens = rng.integers(3, 300, n)
    base = rng.uniform(0.5, 2.5, n) * tokens
    selected = base[None] + rng.normal(0.3, 0.3, (6, n)) * tokens
    random = base[None, None] + rng.normal(0.05, 0.3, (6, r, n)) * tokens
    return base, selected, random, tokens, labels


def looped_cells(base, selected, random, tokens, labels, replicates: int, seed: int) -> np.ndarray:
    """The per-replicate loop: gather the resampled rows, pool per category. [B, A, 1 + R, C]."""
    members = category_members(labels, CATS)
    diff = np.concatenate([selected[:, None], random], axis=1) - base
    indices = resample_indices(labels, replicates, seed)
    out = np.empty((replicates, *diff.shape[:2], len(CATS)))
    for b in range(replicates):
        for j, idx in enumerate(members):
            rows = indices[b, idx]
            out[b, :, :, j] = diff[:, :, rows].sum(axis=-1) / tokens[rows].sum()
    return out


def vectorised_cells(base, selected, random, tokens, labels, replicates: int, seed: int) -> np.ndarray:
    """What causal_statistics does for the cells: resample weights (bincount) and one matrix product per category."""
    members = category_members(labels, CATS)
    diff = np.concatenate([selected[:, None], random], axis=1) - base
    indices = resample_indices(labels, replicates, seed)
    tokens = tokens.astype(np.float64)
    return np.concatenate([st.pooled_cells(diff, tokens, members, st.resample_weights(indices[s:s + st.CHUNK],
                                                                                       len(labels)))
                           for s in range(0, replicates, st.CHUNK)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two smaller sizes")
    args = parser.parse_args()
    sizes = [(8, 20, 1000), (50, 100, 1000), (200, 120, 2000)]
    if not args.quick:
        sizes.append((200, 100, 2000))
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print(f"{'rows':>6} {'R':>4} {'B':>5} {'conditions':>10} {'all statistics s':>16} {'cells s':>8} "
          f"{'cells, loop over B s':>21} {'loop / vectorised':>18}")
    for per, r, b in sizes:
        base, selected, random, tokens, labels = data(per, r)
        started = time.perf_counter()
        causal_statistics(base, selected, random, tokens, labels, CATS, replicates=b, seed=1)
        vectorised = time.perf_counter() - started
        started = time.perf_counter()
        fast = vectorised_cells(base, selected, random, tokens, labels, b, seed=1)
        cells = time.perf_counter() - started
        sample = min(b, 250)
        started = time.perf_counter()
        slow = looped_cells(base, selected, random, tokens, labels, sample, seed=1)
        looped = (time.perf_counter() - started) * b / sample
        assert np.allclose(fast[:sample], slow)
        print(f"{6 * per:>6} {r:>4} {b:>5} {6 * (1 + r):>10} {vectorised:>16.2f} {cells:>8.2f} {looped:>21.2f} "
              f"{looped / cells:>18.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
