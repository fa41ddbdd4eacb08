"""Recommendations from a saved run: the offline reference that serving must reproduce, over the
whole catalogue (``all_artists``) or through stage-1 candidates (``two_stage`` with the blend,
``ranked`` with the learned ranker)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from core.candidates import TwoStageSettings
from core.ranking import top_k_excluding
from core.vocabulary import ArtistLookup, ScoredArtist
from training.models.base import Recommender
from training.models.dnn import NetworkRecommender
from training.ranker import RankedRecommender
from training.run import Run
from training.two_stage import TwoStageRecommender

OFFLINE_MODES = ("all_artists", "two_stage", "ranked")


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
        self._staged: dict[str, TwoStageRecommender] = {}

    def _model(self, mode: str) -> Recommender:
        """The network over the whole catalogue, or behind stage-1 candidates with the run's
        tuned blend (``two_stage``) or learned ranker (``ranked``)."""
        if mode not in OFFLINE_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(OFFLINE_MODES)}")
        if mode == "all_artists":
            return self.model
        if mode not in self._staged:
            settings = self.run.two_stage or TwoStageSettings()
            if mode == "ranked" and self.run.ranker is None:
                raise ValueError(f"run {self.run.path} has no learned ranker")
            als = self.run.als  # the run's own factors, as export ships them
            if mode == "ranked":
                staged = RankedRecommender(self.model, self.run.ranker, settings, als=als,
                                           tags=self.run.tags)  # fmt: skip
            else:
                staged = TwoStageRecommender(self.model, settings, als=als)
            self._staged[mode] = staged.fit(self.run.plays)
        return self._staged[mode]

    def for_user(
        self, user_id: str, k: int = 10, *, mode: str = "all_artists"
    ) -> list[ScoredArtist]:
        """Top-``k`` unplayed artists for a user the model was trained on."""
        u = self._users.get(user_id)
        if u is None or self.run.plays[u].nnz == 0:
            raise KeyError(f"unknown user {user_id!r}: not among the model's training users")
        scores = self._model(mode).score_users(np.array([u]))[0]
        top = top_k_excluding(scores[None, :], self.run.plays[u], k)[0]
        top = top[top >= 0]  # fewer candidates than k
        return self.artists.named(top, scores[top])

    def for_history(
        self, artists: Sequence[str], k: int = 10, *, mode: str = "all_artists"
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
        scores = self._model(mode).score_histories(history)[0]
        top = top_k_excluding(scores[None, :], history, k)[0]
        top = top[top >= 0]
        return self.artists.named(top, scores[top])
