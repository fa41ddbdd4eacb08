"""Two-stage recommendation offline: stage-1 candidates (``core.candidates``), the trained
network ranking only those, and the blend weights tuned on the validation slice.

:class:`TwoStageRecommender` is the offline reference of the gateway's ``two_stage`` mode: the
same candidates, the same network scores and the same blend, so the two rank alike.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp

from core.als_factors import AlsFactors
from core.candidates import (
    FEATURES,
    Blend,
    CandidateConfig,
    CandidateIndex,
    Candidates,
    TwoStageSettings,
    zscore,
)
from core.similarity import SimilarityIndex
from core.tag_profile import ArtistTags, TagAssignments
from training.metrics import ranking_metrics
from training.models.als import fit_als_factors
from training.models.base import Recommender
from training.models.dnn import NetworkRecommender

# Blend weights tried on validation: the DNN's weight, then each stage-1 feature's.
DNN_GRID = (0.0, 1.0)
FEATURE_GRID = {"neighbourhood": (0.0, 0.25, 0.5, 1.0, 2.0), "item_knn": (0.0, 0.25, 0.5, 1.0, 2.0),
                "popularity": (0.0, 0.25, 0.5), "ease": (0.0, 0.5, 1.0, 2.0),
                "als": (0.0,)}  # fmt: skip


@dataclass(frozen=True)
class _Stage1:
    """Candidates and network scores of a batch of listeners."""

    candidates: list[Candidates]
    dnn: list[np.ndarray]


class TwoStageRecommender(Recommender):
    """Candidates from similar users, item neighbours and popularity; the network ranks them."""

    name = "dnn_two_stage"

    def __init__(self, network: NetworkRecommender, settings: TwoStageSettings | None = None,
                 item_table: sp.csr_matrix | None = None,
                 ease_table: sp.csr_matrix | None = None,
                 als: AlsFactors | None = None,
                 tags: ArtistTags | TagAssignments | None = None) -> None:  # fmt: skip
        """``tags``: a tag table, or assignments to fit one on the plays :meth:`fit` is given
        (``None``: the data has no tags, the candidates carry none)."""
        self.network = network
        self.settings = settings or TwoStageSettings()
        self._item_table = item_table
        self._ease_table = ease_table
        self._als = als
        self._tags = tags

    def params(self) -> dict[str, object]:
        return self.settings.to_dict()

    def fit(self, train: sp.csr_matrix) -> Self:
        """Index ``train`` as the known plays (the network must already be trained)."""
        self.train_ = sp.csr_matrix(train)
        table = self._item_table
        if table is None:
            table = self.settings.candidates.item_table(self.train_)
        self.item_table_ = table
        ease = self._ease_table
        if ease is None:
            ease = self.settings.candidates.ease_table(self.train_)
        self.ease_table_ = ease
        self.als_ = self._als if self._als is not None else fit_als_factors(self.train_)
        tags = self._tags
        if isinstance(tags, TagAssignments):  # only the assignments on these plays count
            tags = ArtistTags.fit(tags, self.train_)
        self.tag_table_ = tags
        self.index_ = CandidateIndex(self.train_, table, self.settings.candidates, ease, self.als_,
                                     tags)  # fmt: skip
        self.similarity_ = SimilarityIndex(self.train_)
        return self

    def stage1_users(self, users: np.ndarray) -> _Stage1:
        """Known users: their own embedding ranks candidates drawn from their neighbours."""
        users = np.asarray(users, np.int64)
        rows = self.train_[users]
        idx, sims = self.similarity_.query(rows, self.settings.candidates.neighbours,
                                           exclude=users)  # fmt: skip
        scores = self.network.score_users(users)
        return self._stage1(rows, idx, sims, scores)

    def stage1_histories(self, histories: sp.csr_matrix) -> _Stage1:
        """New listeners: their similar users' weighted scores rank the candidates."""
        histories = sp.csr_matrix(histories)
        idx, sims = self.similarity_.query(histories, self.settings.candidates.neighbours)
        scores = self.network.scorer_.score_groups(idx, sims)
        return self._stage1(histories, idx, sims, scores)

    def _stage1(self, rows: sp.csr_matrix, idx: np.ndarray, sims: np.ndarray,
                scores: np.ndarray) -> _Stage1:  # fmt: skip
        found = [self.index_.candidates(rows[i], idx[i], sims[i]) for i in range(rows.shape[0])]
        return _Stage1(found, [scores[i, c.artists] for i, c in enumerate(found)])

    def _dense(self, stage1: _Stage1, blend: Blend) -> np.ndarray:
        out = np.full((len(stage1.candidates), self.train_.shape[1]), -np.inf, np.float32)
        for i, (c, dnn) in enumerate(zip(stage1.candidates, stage1.dnn, strict=True)):
            out[i, c.artists] = blend.score(dnn, c.features)
        return out

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Blended scores on each user's candidates, ``-inf`` elsewhere."""
        return self._dense(self.stage1_users(users), self.settings.known)

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._dense(self.stage1_histories(histories), self.settings.history)


def candidate_recall(stage1: _Stage1, targets: sp.csr_matrix) -> dict[str, float]:
    """Share of each listener's held-out artists among their candidates (mean over listeners
    with targets), and the median number of candidates."""
    targets = sp.csr_matrix(targets)
    recalls = []
    for i, c in enumerate(stage1.candidates):
        wanted = targets.indices[targets.indptr[i] : targets.indptr[i + 1]]
        if len(wanted):
            recalls.append(np.isin(wanted, c.artists).mean())
    counts = [len(c.artists) for c in stage1.candidates]
    return {"candidate_recall": float(np.mean(recalls)) if recalls else 0.0,
            "median_candidates": float(np.median(counts)) if counts else 0.0}  # fmt: skip


def _top_k_sorted(scores: np.ndarray, artists: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((artists, -scores), axis=1)[:, :k]
    return np.where(np.isfinite(np.take_along_axis(scores, order, 1)),
                    np.take_along_axis(artists, order, 1), -1)  # fmt: skip


def top_k_ordered(scores: np.ndarray, artists: np.ndarray, k: int, spare: int = 8) -> np.ndarray:
    """Each row's ``k`` best ``artists`` by ``scores`` (ties to the lower artist id; -1 where
    the score is not finite): a whole-row ``np.lexsort``'s answer, sorting only a partition of
    the ``k + spare`` best. Rows whose k-th score ties the partition's last are sorted whole."""
    width = scores.shape[1]
    m = min(width, k + spare)
    if m >= width:
        return _top_k_sorted(scores, artists, k)
    part = np.argpartition(scores, width - m, axis=1)[:, width - m :]  # no negated copy
    ps, pa = np.take_along_axis(scores, part, 1), np.take_along_axis(artists, part, 1)
    order = np.lexsort((pa, -ps), axis=1)[:, :k]
    kth, top = np.take_along_axis(ps, order, 1), np.take_along_axis(pa, order, 1)
    top = np.where(np.isfinite(kth), top, -1)
    tied = (kth[:, -1] == ps.min(axis=1)) & np.isfinite(kth[:, -1])  # a tie may run past m
    if tied.any():
        top[tied] = _top_k_sorted(scores[tied], artists[tied], k)
    return top


def _tune(stage1: _Stage1, targets: sp.csr_matrix, k: int,
          threads: int | None = None) -> tuple[Blend, dict[str, float]]:  # fmt: skip
    """The grid's best blend by NDCG@``k`` on ``targets`` (the first of ties, in grid order);
    returns it and the figures seen. The grid's points are scored on ``threads`` threads
    (default: the cores this process may use; numpy's partition releases the GIL)."""
    width = max((len(c.artists) for c in stage1.candidates), default=1)
    n = len(stage1.candidates)
    z = np.zeros((n, width, 1 + len(FEATURES)))
    artists = np.full((n, width), -1, np.int64)
    for i, (c, dnn) in enumerate(zip(stage1.candidates, stage1.dnn, strict=True)):
        z[i, : len(c.artists)] = zscore(np.column_stack([dnn, c.features]))
        artists[i, : len(c.artists)] = c.artists
    columns, padding = np.ascontiguousarray(z.reshape(n * width, -1).T), artists < 0
    grid = [Blend(w[0], **dict(zip(FEATURE_GRID, w[1:], strict=True)))
            for w in itertools.product(DNN_GRID, *FEATURE_GRID.values()) if any(w)]  # fmt: skip

    def ndcg(blend: Blend) -> float:
        scores = (blend.weights @ columns).reshape(n, width)
        scores[padding] = -np.inf
        return ranking_metrics(top_k_ordered(scores, artists, k), targets)[f"ndcg@{k}"]

    with ThreadPoolExecutor(threads or len(os.sched_getaffinity(0))) as pool:
        figures = list(pool.map(ndcg, grid))
    best, best_ndcg = Blend(), -1.0
    for blend, figure in zip(grid, figures, strict=True):
        if figure > best_ndcg + 1e-9:
            best, best_ndcg = blend, figure
    dnn_only = figures[grid.index(Blend())] if Blend() in grid else 0.0
    return best, {"ndcg_blend": best_ndcg, "ndcg_dnn_only": dnn_only, "users": n}


def tune_two_stage(
    network: NetworkRecommender,
    train: sp.csr_matrix,
    val: sp.csr_matrix,
    config: CandidateConfig | None = None,
    k: int = 10,
) -> TwoStageSettings:
    """Blend weights for known users and for listeners given by history, chosen on ``val``
    alone: validation users are ranked from ``train`` (as known users, and again as if new,
    through their similar users other than themselves)."""
    config = config or CandidateConfig()
    model = TwoStageRecommender(network, TwoStageSettings(config)).fit(train)
    return tune_on(model, val, k)


def tune_on(model: TwoStageRecommender, val: sp.csr_matrix, k: int = 10) -> TwoStageSettings:
    """:func:`tune_two_stage` on an already fitted recommender (its stage 1 reused)."""
    network, config = model.network, model.settings.candidates
    users = np.flatnonzero(np.diff(sp.csr_matrix(val).indptr) > 0)
    targets = sp.csr_matrix(val)[users]
    known = model.stage1_users(users)
    blend_known, seen_known = _tune(known, targets, k)
    rows = model.train_[users]
    idx, sims = model.similarity_.query(rows, config.neighbours, exclude=users)
    as_new = model._stage1(rows, idx, sims, network.scorer_.score_groups(idx, sims))
    blend_history, seen_history = _tune(as_new, targets, k)
    validation = {"known": {**seen_known, **candidate_recall(known, targets)},
                  "history": {**seen_history, **candidate_recall(as_new, targets)}}  # fmt: skip
    return TwoStageSettings(config, blend_known, blend_history, validation)
