"""EASE (Steck, 2019): a closed-form item-item linear model, strong on small catalogues."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from training.models.base import Recommender


class EASE(Recommender):
    """``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` over binary plays ``X``.

    Only artists with at least ``min_item_users`` training users, and at most the
    ``max_items`` most played of those, enter the dense Gram matrix (the rest score -inf). The
    cap keeps memory (8 bytes x items^2, twice) and the O(items^3) inverse tractable: HetRec's
    7k eligible artists take ~12 s on two cores; the full Spotify catalogue would not fit.
    """

    name = "ease"

    def __init__(self, l2: float = 200.0, min_item_users: int = 2, max_items: int = 20_000) -> None:
        self.l2 = l2
        self.min_item_users = min_item_users
        self.max_items = max_items

    def params(self) -> dict[str, object]:
        return {"l2": self.l2, "min_item_users": self.min_item_users, "max_items": self.max_items}

    def fit(self, train: sp.csr_matrix) -> Self:
        self.train_ = sp.csr_matrix(train)
        x = (self.train_ > 0).astype(np.float32).tocsc()
        users_per_item = np.diff(x.indptr)
        eligible = np.flatnonzero(users_per_item >= self.min_item_users)
        if len(eligible) > self.max_items:
            eligible = eligible[np.argsort(-users_per_item[eligible], kind="stable")]
        self.items_ = np.sort(eligible[: self.max_items])
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
