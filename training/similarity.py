"""Cosine similarity between listeners' artist histories, without a dense user x user matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.models.base import l2_normalize_rows, log_weights


def user_vectors(plays: sp.csr_matrix) -> sp.csr_matrix:
    """The vectors compared by cosine similarity: ``log1p`` play counts, L2-normalised rows."""
    return l2_normalize_rows(log_weights(plays))


def top_similar_users(
    queries: sp.csr_matrix,
    known: sp.csr_matrix,
    n: int = 10,
    *,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` most similar known users for each query row, best first.

    ``queries`` and ``known`` are raw play-count rows over the same artists; both go through
    :func:`user_vectors`. ``exclude[i]`` (optional) is a known-user index never returned for
    query ``i`` (the user itself). Returns ``(indices, similarities)``, each ``(n_queries, n)``;
    slots without a user of positive similarity hold index -1 and similarity 0.
    """
    q = user_vectors(queries)
    sims = (q @ user_vectors(known).T).toarray()  # n_queries x n_known, sparse product
    if exclude is not None:
        sims[np.arange(len(exclude)), exclude] = 0.0
    n = min(n, sims.shape[1])
    idx = (
        np.argpartition(-sims, n - 1, axis=1)[:, :n]
        if n < sims.shape[1]
        else (np.tile(np.arange(sims.shape[1]), (sims.shape[0], 1)))
    )
    top = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    top = np.take_along_axis(top, order, axis=1)
    idx[top <= 0] = -1
    top[top <= 0] = 0.0
    return idx, top.astype(np.float32)
