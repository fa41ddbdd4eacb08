"""ALS artist factors as a ranking feature: one listener's factor folded in from their history.

Implicit-feedback ALS (Hu, Koren & Volinsky, 2008; fitted with ``implicit`` in training) ships
only its artist factors ``Y`` and the weighting it was fitted with. Any listener, known or new,
gets the factor that ALS's own user step would give their history: with confidences
``c = alpha * bm25(plays)``, ``x = (Y^T Y + reg I + sum_i (c_i - 1) y_i y_i^T)^-1
sum_i c_i y_i`` (``implicit``'s ``recalculate_user``), a ``factors x factors`` solve. Its score
of a candidate is ``x . y``. ALS is not a candidate source: that would scan the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf as _potrf
from scipy.linalg.lapack import dpotrs as _potrs

from core.similarity import as_csr

BM25_K1, BM25_B = 100.0, 0.8  # as training/models/als.py weights plays


@dataclass(frozen=True)
class AlsFactors:
    """Artist factors and the play weighting they were fitted with."""

    item_factors: np.ndarray  # float32 (artists, factors)
    idf: np.ndarray  # float32 (artists,)
    mean_length: float  # mean plays per training user (BM25's length normaliser)
    alpha: float
    regularization: float

    def __post_init__(self) -> None:
        if self.item_factors.shape[0] != self.idf.shape[0]:
            raise ValueError(f"{self.item_factors.shape[0]} factor rows for {len(self.idf)} "
                             "artists")  # fmt: skip
        yty = self.item_factors.T.astype(np.float64) @ self.item_factors.astype(np.float64)
        object.__setattr__(self, "_gram", yty + self.regularization * np.eye(len(yty)))

    @property
    def n_artists(self) -> int:
        return self.item_factors.shape[0]

    def confidences(self, artists: np.ndarray, plays: np.ndarray) -> np.ndarray:
        """``alpha * bm25`` of one listener's plays (as the factors were fitted)."""
        plays = np.asarray(plays, np.float64)
        norm = (1.0 - BM25_B) + BM25_B * plays.sum() / self.mean_length
        weighted = plays * (BM25_K1 + 1.0) / (BM25_K1 * norm + plays) * self.idf[artists]
        return self.alpha * weighted

    def user_factor(self, history: sp.csr_matrix) -> np.ndarray:
        """The factor ALS's user step gives a 1 x artists history (zeros for an empty one)."""
        history = as_csr(history)
        artists, plays = history.indices, history.data
        if len(artists) == 0:
            return np.zeros(self.item_factors.shape[1])
        c = self.confidences(artists, plays)
        y = self.item_factors[artists].astype(np.float64)
        a = self._gram + y.T @ ((c - 1.0)[:, None] * y)  # symmetric positive definite
        # LAPACK's Cholesky factor and solve (what cho_factor / cho_solve call), without their
        # Python wrappers' checks: a request's fold-in is a 64 x 64 system
        factor, info = _potrf(a, lower=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"ALS fold-in: matrix not positive definite ({info})")
        solution, info = _potrs(factor, y.T @ c, lower=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"ALS fold-in: solve failed ({info})")
        return solution

    def scores(self, factor: np.ndarray, artists: np.ndarray) -> np.ndarray:
        """``factor . y`` of the given artists."""
        return self.item_factors[artists].astype(np.float64) @ factor

    def save(self, path: Path) -> None:
        settings = np.array([self.mean_length, self.alpha, self.regularization])
        np.savez(path, item_factors=self.item_factors, idf=self.idf, settings=settings)

    @classmethod
    def load(cls, path: Path) -> AlsFactors:
        with np.load(path) as f:
            mean_length, alpha, reg = (float(v) for v in f["settings"])
            return cls(f["item_factors"].astype(np.float32), f["idf"].astype(np.float32),
                       mean_length, alpha, reg)  # fmt: skip

    @classmethod
    def empty(cls, n_artists: int) -> AlsFactors:
        """No factors (versions exported before ALS): every score 0."""
        return cls(np.zeros((n_artists, 1), np.float32), np.zeros(n_artists, np.float32),
                   1.0, 1.0, 1.0)  # fmt: skip
