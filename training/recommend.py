"""Recommendations from a saved run: the offline reference that serving must reproduce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from training.data import Vocabulary
from training.models.dnn import NetworkRecommender
from training.ranking import top_k_excluding
from training.run import Run


@dataclass(frozen=True)
class Recommendation:
    artist_index: int
    artist_id: str
    name: str
    score: float


def resolve_artists(vocab: Vocabulary, items: Sequence[str]) -> tuple[list[int], list[str]]:
    """Map artist ids or names (case-insensitive) to indices; returns (indices, unknown items)."""
    by_id = vocab.artist_index()
    by_name = {n.casefold(): i for i, n in reversed(list(enumerate(vocab.artist_names)))}
    found, unknown = [], []
    for item in items:
        key = item.strip()
        idx = by_id.get(key, by_name.get(key.casefold()))
        (found.append(idx) if idx is not None else unknown.append(item))
    return found, unknown


class RunRecommender:
    """Recommends for known users (their own embedding) and new listeners (similar users)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.vocab = run.vocab
        self.model = NetworkRecommender.from_trained(
            run.load_model(), run.plays, run.config.dnn.neighbours
        )
        self._users = self.vocab.user_index()

    def _named(self, top: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
        v = self.vocab
        return [
            Recommendation(int(i), v.artist_ids[i], v.artist_names[i], float(scores[i]))
            for i in top
            if i >= 0
        ]

    def for_user(self, user_id: str, k: int = 10) -> list[Recommendation]:
        """Top-``k`` unplayed artists for a user the model was trained on."""
        u = self._users.get(user_id)
        if u is None or self.run.plays[u].nnz == 0:
            raise KeyError(f"unknown user {user_id!r}: not among the model's training users")
        scores = self.model.score_users(np.array([u]))
        top = top_k_excluding(scores, self.run.plays[u], k)[0]
        return self._named(top, scores[0])

    def for_history(self, artists: Sequence[str], k: int = 10) -> list[Recommendation]:
        """Top-``k`` artists for a new listener given artist ids or names they play."""
        found, unknown = resolve_artists(self.vocab, artists)
        if not found:
            raise ValueError(f"none of the artists is known to the model: {', '.join(unknown)}")
        history = sp.csr_matrix(
            (np.ones(len(found), np.float32), (np.zeros(len(found), int), found)),
            shape=(1, self.vocab.n_artists),
        )
        history.sum_duplicates()
        scores = self.model.score_histories(history)
        top = top_k_excluding(scores, history, k)[0]
        return self._named(top, scores[0])
