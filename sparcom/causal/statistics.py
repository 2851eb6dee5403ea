"""Statistics of the causal check, pure numpy: the selected sets' ΔNLL against random sets of the same shape."""

from __future__ import annotations

import numpy as np


def significance(observed: np.ndarray, random: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell of ``observed`` [A, C] against ``random`` [A, N, C]: mean, std, excess, z and empirical p.

    ``p = (1 + #{random ≥ observed}) / (1 + N)`` (one-sided: is the selected set more damaging than random sets?);
    ``z = (observed − mean) / std`` with the sample standard deviation (ddof 1), NaN when N < 2 or std = 0.
    """
    observed = np.asarray(observed, dtype=np.float64)
    random = np.asarray(random, dtype=np.float64)
    n = random.shape[1]
    nan = np.full(observed.shape, np.nan)
    if n == 0:
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "excess": nan, "z": nan.copy(), "p": nan.copy()}
    mean = random.mean(axis=1)
    std = random.std(axis=1, ddof=1) if n > 1 else nan
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (observed - mean) / np.where(std > 0, std, 1.0), np.nan)
    p = (1 + (random >= observed[:, None, :]).sum(axis=1)) / (1 + n)
    return {"mean": mean, "std": std, "min": random.min(axis=1), "max": random.max(axis=1),
            "excess": observed - mean, "z": z, "p": p}
