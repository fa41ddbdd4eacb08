"""The contract every recommender in this package follows."""

from __future__ import annotations

import abc
from typing import Self

import numpy as np
import scipy.sparse as sp


class Recommender(abc.ABC):
    """Fit on a users x artists play-count matrix; score artists for known users or histories.

    ``score_users`` serves known users (rows of the training matrix); ``score_histories`` serves
    listeners the model never saw, from their artist history alone. Both return dense
    ``(n, n_artists)`` float32 scores, higher is better; callers exclude already-played artists.
    """

    name: str = "base"

    @abc.abstractmethod
    def fit(self, train: sp.csr_matrix) -> Self:
        """Learn from ``train`` (users x artists play counts)."""

    @abc.abstractmethod
    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of every artist for the given known user indices."""

    @abc.abstractmethod
    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores of every artist for listeners given only their play-count rows."""

    def params(self) -> dict[str, object]:
        """Hyper-parameters worth recording with results."""
        return {}
