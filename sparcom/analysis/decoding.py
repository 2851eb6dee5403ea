"""Decoding an instruction's category from its per-instruction frequencies on component sets.

Both decoders work on standardised frequencies z = (x − μ) / σ, μ and σ (ddof = 1) taken over the *training*
instructions of all categories (z = 0 where σ = 0: a component constant in training carries no information).

- **set-score**: score_c(g) = mean over S_c of z_g; predict argmax_c. It uses the per-category structure: the
  set of c should light up on instructions of c. A category with an empty set scores −∞ (never predicted).
- **nearest centroid**: centroids are the training mean of z per category; predict the category whose centroid
  is nearest in Euclidean distance on the components of one set U (the union of the S_c, or all components):
  argmin_c Σ_{n∈U} (z_gn − μ_cn)² = argmin_c [Σ_U μ_cn² − 2 Σ_U z_gn μ_cn].

Ties go to the first category (argmax / argmin). With nothing to decode on (all sets empty) the prediction is −1
(undecided), which counts as wrong. Every function is vectorised over R sets given as [R, m] index arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Budget of one temporary array (elements) of the gathers.
BLOCK_ELEMENTS = 1 << 22
#: Sets larger than N / DENSE_SHARE are averaged by a matrix product instead of a gather (set-score).
DENSE_SHARE = 16


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, order: str = "C") -> np.ndarray:
    """(x − mean) / std, 0 where std = 0 (a new array in memory ``order``; "F" suits the decoders)."""
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    z = np.array(x, dtype=np.float64, order=order)
    z -= mean
    z *= scale
    return z


def _columns(values: np.ndarray) -> np.ndarray:
    """[N, A] contiguous: gathering whole rows of this is far faster than gathering columns of [A, N].

    Free when ``values`` is already Fortran-ordered (see :func:`standardise`).
    """
    return np.ascontiguousarray(np.atleast_2d(np.asarray(values, dtype=np.float64)).T)


def _chunks(sets: np.ndarray, width: int) -> list[slice]:
    replicates, m = sets.shape
    step = max(1, BLOCK_ELEMENTS // max(1, m * width))
    return [slice(start, min(start + step, replicates)) for start in range(0, replicates, step)]


def sums_over_sets(values: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """[A, R]: Σ_{n ∈ set r} values[a, n] for index sets ``sets[R, m]``."""
    columns = _columns(values)
    sets = np.atleast_2d(np.asarray(sets, dtype=np.int64))
    out = np.zeros((sets.shape[0], columns.shape[1]))
    if sets.shape[1]:
        for part in _chunks(sets, columns.shape[1]):
            out[part] = columns[sets[part]].sum(axis=1)  # [r, m, A] -> [r, A]
    return out.T


def _indicators(members: np.ndarray, size: int):
    """Yield (replicate slice, [r, N] 0/1 float indicator of the sets) in blocks within the memory budget."""
    step = max(1, BLOCK_ELEMENTS // max(1, size))
    for start in range(0, members.shape[0], step):
        block = members[start:start + step]
        indicator = np.zeros((block.shape[0], size))
        np.put_along_axis(indicator, block, 1.0, axis=1)
        yield slice(start, start + block.shape[0]), indicator


def _means_by_product(z: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[G, R] mean of z over each set, as z @ indicator / m (faster than gathering once sets are a large share)."""
    out = np.empty((z.shape[0], members.shape[0]))
    for part, indicator in _indicators(members, z.shape[1]):
        out[:, part] = (z @ indicator.T) / members.shape[1]
    return out


def _centroid_by_product(z: np.ndarray, centroids: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """[G, R] nearest centroid on each set, Σ_U μ² − 2 Σ_U z μ computed with the sets' indicators."""
    predicted = np.empty((z.shape[0], sets.shape[0]), dtype=np.int64)
    squares = (centroids * centroids).T  # [N, K]
    for part, indicator in _indicators(sets, z.shape[1]):
        distance = np.empty((z.shape[0], indicator.shape[0], centroids.shape[0]))
        own = indicator @ squares  # [r, K]
        for k in range(centroids.shape[0]):
            distance[:, :, k] = own[None, :, k] - 2.0 * ((z * centroids[k]) @ indicator.T)
        predicted[:, part] = np.argmin(distance, axis=2)
    return predicted


def set_score_predict(z: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
    """[G, R] predicted category index with the K category sets ``sets[c]`` ([R, m_c] each); −1 if all empty.

    Sets holding more than 1/:data:`DENSE_SHARE` of the components are averaged by a matrix product with their
    indicator, smaller ones by gathering their columns (the same means up to the order of summation).
    """
    columns = _columns(z)
    replicates = np.atleast_2d(sets[0]).shape[0]
    scores = np.full((columns.shape[1], len(sets), replicates), -np.inf)
    for c, members in enumerate(sets):
        members = np.atleast_2d(np.asarray(members, dtype=np.int64))
        if members.shape[1] * DENSE_SHARE > columns.shape[0]:
            scores[:, c, :] = _means_by_product(np.asarray(z, dtype=np.float64), members)
        elif members.shape[1]:
            for part in _chunks(members, columns.shape[1]):
                scores[:, c, part] = columns[members[part]].mean(axis=1).T
    predicted = np.argmax(scores, axis=1)
    return np.where(np.isneginf(scores).all(axis=1), -1, predicted)


def centroid_predict(z: np.ndarray, centroids: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """[G, R] nearest training centroid on each of the sets ``sets[R, m]``; −1 when the set is empty.

    Large sets (over 1/:data:`DENSE_SHARE` of the components) go through matrix products with their indicators,
    small ones through gathers (the same distances up to the order of summation).
    """
    columns, centres = _columns(z), _columns(centroids)  # [N, G], [N, K]
    sets = np.atleast_2d(np.asarray(sets, dtype=np.int64))
    replicates = sets.shape[0]
    if sets.shape[1] == 0:
        return np.full((columns.shape[1], replicates), -1, dtype=np.int64)
    if sets.shape[1] * DENSE_SHARE > columns.shape[0]:
        return _centroid_by_product(np.asarray(z, dtype=np.float64), np.asarray(centroids, dtype=np.float64), sets)
    predicted = np.empty((columns.shape[1], replicates), dtype=np.int64)
    for part in _chunks(sets, columns.shape[1] + centres.shape[1]):
        zs, cs = columns[sets[part]], centres[sets[part]]  # [r, m, G], [r, m, K]
        distance = (cs * cs).sum(axis=1)[:, None, :] - 2.0 * (zs.transpose(0, 2, 1) @ cs)  # [r, G, K]
        predicted[:, part] = np.argmin(distance, axis=2).T
    return predicted


def centroid_predict_all(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[G] nearest training centroid on all components (the same rule as :func:`centroid_predict`)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    distance = (centroids * centroids).sum(axis=1)[None, :] - 2.0 * (z @ centroids.T)
    return np.argmin(distance, axis=1)


def confusion(true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """[K, K] counts, rows the true category, columns the predicted one (undecided predictions left out)."""
    matrix = np.zeros((k, k), dtype=np.int64)
    decided = predicted >= 0
    np.add.at(matrix, (true[decided], predicted[decided]), 1)
    return matrix
