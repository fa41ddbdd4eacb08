"""Top-K selection over score matrices, excluding what a listener already plays."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k_excluding(scores: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Indices of the ``k`` best-scored artists per row, skipping each row's ``exclude`` entries.

    Ties break towards the lower artist index. Rows with fewer than ``k`` eligible artists are
    padded with -1.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    ex = sp.csr_matrix(exclude)
    rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
    scores[rows, ex.indices] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top[~np.isfinite(np.take_along_axis(part_scores, order, axis=1))] = -1
    return top
