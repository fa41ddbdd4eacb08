"""Recommendations from a saved run: the offline reference that serving must reproduce, over the
whole catalogue (``all_artists``) or through stage-1 candidates (``two_stage``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from core.candidates import TwoStageSettings
from core.ranking import top_k_excluding
from core.vocabulary import ArtistLookup, ScoredArtist
from training.models.base import Recommender
from training.models.dnn import NetworkRecommender
from training.run import Run
from training.two_stage import TwoStageRecommender


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
        self._two_stage: TwoStageRecommender | None = None

    @property
    def two_stage(self) -> TwoStageRecommender:
        """The run's network behind stage-1 candidates, with the run's tuned blend."""
        if self._two_stage is None:
            settings = self.run.two_stage or TwoStageSettings()
            self._two_stage = TwoStageRecommender(self.model, settings).fit(self.run.plays)
        return self._two_stage

    def _model(self, two_stage: bool) -> Recommender:
        return self.two_stage if two_stage else self.model

    def for_user(self, user_id: str, k: int = 10, *, two_stage: bool = False) -> list[ScoredArtist]:
        """Top-``k`` unplayed artists for a user the model was trained on."""
        u = self._users.get(user_id)
        if u is None or self.run.plays[u].nnz == 0:
            raise KeyError(f"unknown user {user_id!r}: not among the model's training users")
        scores = self._model(two_stage).score_users(np.array([u]))[0]
        top = top_k_excluding(scores[None, :], self.run.plays[u], k)[0]
        top = top[top >= 0]  # fewer candidates than k
        return self.artists.named(top, scores[top])

    def for_history(
        self, artists: Sequence[str], k: int = 10, *, two_stage: bool = False
    ) -> list[ScoredArtist]:
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
        scores = self._model(two_stage).score_histories(history)[0]
        top = top_k_excluding(scores[None, :], history, k)[0]
        top = top[top >= 0]
        return self.artists.named(top, scores[top])
