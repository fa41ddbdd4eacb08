"""Most-popular baseline: the same ranking for everyone."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from training.models.base import Recommender


class Popularity(Recommender):
    """Artists ranked by how many training users play them."""

    name = "popularity"

    def fit(self, train: sp.csr_matrix) -> Self:
        self.counts_ = np.diff(sp.csc_matrix(train).indptr).astype(np.float32)
        return self

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.counts_, (len(users), 1))

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.counts_, (histories.shape[0], 1))
