"""EASE (Steck, 2019): a closed-form item-item linear model, strong on small catalogues."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from training.models.base import Recommender


class EASE(Recommender):
    """``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` over binary plays ``X``.

    Only artists with at least ``min_item_users`` training users enter the dense Gram matrix
    (the rest score -inf), which keeps the inverse tractable on two cores.
    """

    name = "ease"

    def __init__(self, l2: float = 200.0, min_item_users: int = 2) -> None:
        self.l2 = l2
        self.min_item_users = min_item_users

    def params(self) -> dict[str, object]:
        return {"l2": self.l2, "min_item_users": self.min_item_users}

    def fit(self, train: sp.csr_matrix) -> Self:
        self.train_ = sp.csr_matrix(train)
        x = (self.train_ > 0).astype(np.float32).tocsc()
        self.items_ = np.flatnonzero(np.diff(x.indptr) >= self.min_item_users)
        xs = x[:, self.items_]
        gram = (xs.T @ xs).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.b_ = b.astype(np.float32)
        self.n_items_ = x.shape[1]
        return self

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        x = (sp.csr_matrix(histories)[:, self.items_] > 0).astype(np.float32)
        out = np.full((x.shape[0], self.n_items_), -np.inf, np.float32)
        out[:, self.items_] = x @ self.b_
        return out

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.score_histories(self.train_[users])
