"""Offline evaluation of any :class:`~training.models.base.Recommender` on a :class:`Split`."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from core.ranking import top_k_excluding
from training.metrics import ranking_metrics
from training.models.base import Recommender
from training.split import Split

_BATCH = 256


def recommend_users(
    model: Recommender, users: np.ndarray, exclude: sp.csr_matrix, k: int = 10
) -> np.ndarray:
    """Top-``k`` artists for known users, excluding the artists in their ``exclude`` rows."""
    out = [
        top_k_excluding(model.score_users(users[s : s + _BATCH]), exclude[users[s : s + _BATCH]], k)
        for s in range(0, len(users), _BATCH)
    ]
    return np.vstack(out) if out else np.zeros((0, k), np.int64)


def recommend_histories(model: Recommender, histories: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """Top-``k`` artists for listeners given by their histories, excluding what they played."""
    out = []
    for s in range(0, histories.shape[0], _BATCH):
        batch = histories[s : s + _BATCH]
        out.append(top_k_excluding(model.score_histories(batch), batch, k))
    return np.vstack(out) if out else np.zeros((0, k), np.int64)


def evaluate_known_users(model: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    """Metrics on the per-user holdout: rank everything the user has not played in train/val."""
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    t0 = time.perf_counter()
    top = recommend_users(model, users, split.train_full, k)
    result = ranking_metrics(top, split.test[users], n_items=split.test.shape[1])
    result["eval_seconds"] = time.perf_counter() - t0
    return result


def evaluate_new_users(model: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    """Metrics for held-out users: recommend from their history, score against their targets."""
    users = split.new_users
    t0 = time.perf_counter()
    top = recommend_histories(model, split.new_user_history[users], k)
    result = ranking_metrics(top, split.new_user_targets[users], n_items=split.test.shape[1])
    result["eval_seconds"] = time.perf_counter() - t0
    return result
