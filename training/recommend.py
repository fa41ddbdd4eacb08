"""Recommendations from a saved run: the offline reference that serving must reproduce."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from core.ranking import top_k_excluding
from core.vocabulary import ArtistLookup, ScoredArtist
from training.models.dnn import NetworkRecommender
from training.run import Run


class RunRecommender:
    """Recommends for known users (their own embedding) and new listeners (similar users)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.vocab = run.vocab
        self.artists = ArtistLookup.of(run.vocab)
        self.model = NetworkRecommender.from_trained(
            run.load_model(), run.plays, run.config.dnn.neighbours
        )
        self._users = self.vocab.user_index()

    def for_user(self, user_id: str, k: int = 10) -> list[ScoredArtist]:
        """Top-``k`` unplayed artists for a user the model was trained on."""
        u = self._users.get(user_id)
        if u is None or self.run.plays[u].nnz == 0:
            raise KeyError(f"unknown user {user_id!r}: not among the model's training users")
        scores = self.model.score_users(np.array([u]))[0]
        top = top_k_excluding(scores[None, :], self.run.plays[u], k)[0]
        return self.artists.named(top, scores[top])

    def for_history(self, artists: Sequence[str], k: int = 10) -> list[ScoredArtist]:
        """Top-``k`` artists for a new listener given artist ids or names they play."""
        columns = [self.artists.by_id_or_name(a) for a in artists]
        found = [c for c in columns if c is not None]
        if not found:
            unknown = [a for a, c in zip(artists, columns, strict=True) if c is None]
            raise ValueError(f"none of the artists is known to the model: {', '.join(unknown)}")
        history = sp.csr_matrix(
            (np.ones(len(found), np.float32), (np.zeros(len(found), int), found)),
            shape=(1, self.vocab.n_artists),
        )
        history.sum_duplicates()
        scores = self.model.score_histories(history)[0]
        top = top_k_excluding(scores[None, :], history, k)[0]
        return self.artists.named(top, scores[top])
