"""Implicit-feedback ALS (Hu, Koren & Volinsky, 2008) through the ``implicit`` library."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from core.als_factors import AlsFactors
from training.models.base import Recommender


class ALS(Recommender):
    """Matrix factorisation on BM25-weighted play counts (``implicit``'s CPU solver).

    Defaults were picked on the validation slice of HetRec (factors 32/64/128, regularisation
    0.01-1, alpha 0.25-5): lower confidence scaling (alpha 0.25) ranked best.
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        iterations: int = 15,
        alpha: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.factors, self.regularization = factors, regularization
        self.iterations, self.alpha, self.seed = iterations, alpha, seed

    def params(self) -> dict[str, object]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "alpha": self.alpha,
            "weighting": "bm25",
        }

    def _weight(self, plays: sp.csr_matrix) -> sp.csr_matrix:
        """BM25 (K1=100, B=0.8) with IDF and mean length from the training data, so new
        listeners' histories are weighted on the scale the factors were fitted on."""
        x = sp.coo_matrix(plays, dtype=np.float32)
        rows = np.asarray(x.sum(axis=1)).ravel()
        norm = (1.0 - 0.8) + 0.8 * rows / self.mean_length_
        data = x.data * 101.0 / (100.0 * norm[x.row] + x.data) * self.idf_[x.col]
        return sp.csr_matrix((data.astype(np.float32), (x.row, x.col)), shape=x.shape)

    def fit(self, train: sp.csr_matrix) -> Self:
        train = sp.csr_matrix(train)
        active = np.diff(train.indptr) > 0
        self.idf_ = (np.log(active.sum()) - np.log1p(np.diff(train.tocsc().indptr))).astype(
            np.float32
        )
        self.mean_length_ = float(np.asarray(train.sum(axis=1)).ravel()[active].mean())
        self.weighted_ = self._weight(train)
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS's would fight
            self.model_ = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                calculate_training_loss=False,
            )
            self.model_.fit(self.weighted_, show_progress=False)
        return self

    def score_users(self, users: np.ndarray) -> np.ndarray:
        m = self.model_
        return (m.user_factors[users] @ m.item_factors.T).astype(np.float32)

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        m = self.model_
        weighted = self._weight(histories)
        factors = m.recalculate_user(np.arange(weighted.shape[0]), weighted)
        return (np.atleast_2d(factors) @ m.item_factors.T).astype(np.float32)


def fit_als_factors(plays: sp.csr_matrix) -> AlsFactors:
    """ALS (default settings) fitted on ``plays``, as the artist factors stage 2 ships."""
    model = ALS().fit(plays)
    return AlsFactors(np.asarray(model.model_.item_factors, np.float32), model.idf_,
                      model.mean_length_, model.alpha, model.regularization)  # fmt: skip
