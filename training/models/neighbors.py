"""Neighbourhood baselines: user-KNN (the seed's new-user method) and item-KNN."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from core.similarity import SimilarityIndex, l2_normalize_rows, log_weights, user_vectors
from training.models.base import Recommender

_BATCH = 1024


def neighbour_sum(neighbours: np.ndarray, weights: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
    """``sum_j weights[i, j] * rows[neighbours[i, j]]`` for each i (index -1 = no neighbour)."""
    n, k = neighbours.shape
    valid = neighbours >= 0
    mix = sp.csr_matrix(
        (weights[valid], (np.repeat(np.arange(n), k)[valid.ravel()], neighbours[valid])),
        shape=(n, rows.shape[0]),
    )
    return (mix @ rows).toarray().astype(np.float32)


class UserKNN(Recommender):
    """Cosine similarity over artist histories; the top-``k`` similar users' (normalised)
    artist vectors, similarity-weighted and summed. With ``k=10`` this is the seed's method."""

    name = "user_knn"

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def params(self) -> dict[str, object]:
        return {"k": self.k}

    def fit(self, train: sp.csr_matrix) -> Self:
        self.train_ = sp.csr_matrix(train)
        self.vectors_ = user_vectors(self.train_)
        self.index_ = SimilarityIndex(self.train_)
        return self

    def _score(self, queries: sp.csr_matrix, exclude: np.ndarray | None) -> np.ndarray:
        out = []
        for s in range(0, queries.shape[0], _BATCH):
            ex = None if exclude is None else exclude[s : s + _BATCH]
            idx, sims = self.index_.query(queries[s : s + _BATCH], self.k, exclude=ex)
            out.append(neighbour_sum(idx, sims, self.vectors_))
        return np.vstack(out) if out else np.zeros((0, self.train_.shape[1]), np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._score(self.train_[users], exclude=np.asarray(users))

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._score(sp.csr_matrix(histories), exclude=None)


class ItemKNN(Recommender):
    """Cosine item-item similarity over ``log1p`` play counts, pruned to each artist's ``k``
    nearest neighbours; a user's score is the similarity mass from the artists they play."""

    name = "item_knn"

    def __init__(self, k: int = 200) -> None:
        self.k = k

    def params(self) -> dict[str, object]:
        return {"k": self.k}

    def fit(self, train: sp.csr_matrix) -> Self:
        self.train_ = sp.csr_matrix(train)
        items = l2_normalize_rows(log_weights(self.train_).T.tocsr())
        sim = (items @ items.T).tocsr()
        sim.setdiag(0)
        sim.eliminate_zeros()
        self.sim_ = self._prune(sim)
        return self

    def _prune(self, sim: sp.csr_matrix) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for i in range(sim.shape[0]):
            lo, hi = sim.indptr[i], sim.indptr[i + 1]
            if hi - lo > self.k:
                keep = lo + np.argpartition(-sim.data[lo:hi], self.k - 1)[: self.k]
            else:
                keep = np.arange(lo, hi)
            rows.append(np.full(len(keep), i))
            cols.append(sim.indices[keep])
            vals.append(sim.data[keep])
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=sim.shape
        )

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        return (log_weights(sp.csr_matrix(histories)) @ self.sim_).toarray().astype(np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.score_histories(self.train_[users])
