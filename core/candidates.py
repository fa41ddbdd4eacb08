"""Two-stage recommendation, stage 1 and the blend: shared by offline evaluation and the gateway.

Stage 1 picks a few hundred candidate artists cheaply, from four sources:

* **neighbourhood**: the artists the listener's most similar known users play, each scored
  ``sum_j similarity_j * v_j[artist]`` (``v``: the users' ``log1p``, L2-normalised vectors,
  the user-kNN score);
* **item neighbours**: the nearest artists of each artist the listener plays, from a sparse
  top-N item-item table computed at export (:mod:`core.item_tables`: cosine by default, or
  RP3beta's random-walk weights), scored ``log1p(plays) @ table`` (the item-kNN score);
* **popularity**: the most-listened artists, always considered;
* **EASE**: a pruned top-N table of EASE's item weights (:mod:`core.ease_table`), scored
  ``binary(plays) @ table``; the large-catalogue approximation is described there.

The capped candidates also get their ALS score (:mod:`core.als_factors`), a feature only, and,
in versions whose data had tags, their tag similarity to the listener (:mod:`core.tag_profile`).

The union, without what the listener plays, is capped at ``max_candidates`` by a cheap score
(each source's score scaled by its maximum, summed). Stage 2 scores only those: the learned
ranker (``core.ranker_features``, Triton's ``candidate_ranker``) or, in the ``two_stage``
mode, :class:`Blend`, which combines the DNN score with the stage-1 scores, each z-scored over
the listener's candidates, with weights tuned on validation data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.als_factors import AlsFactors
from core.ease_table import ease_neighbour_table
from core.item_tables import item_neighbour_table, rp3beta_neighbour_table
from core.similarity import as_csr, user_vectors, weighted_rows
from core.tag_profile import ArtistTags

# Stage-1 scores, in this order; ALS scores only the capped candidates (not a source).
FEATURES = ("neighbourhood", "item_knn", "popularity", "ease", "als")
ITEM_SIMILARITIES = ("cosine", "rp3beta")  # the item-item table's weights (core.item_tables)
LISTENER = ("log_history", "similarity_mass", "top_similarity", "neighbours")  # per listener


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates stage 1 gives and from where (stored in each version's manifest)."""

    neighbours: int = 10  # similar known users whose artists become candidates
    item_neighbours: int = 50  # neighbours per artist in the item-item table
    item_similarity: str = "cosine"  # that table's weights: "cosine" or "rp3beta"
    rp3_beta: float = 0.5  # RP3beta's popularity penalty (listeners ** -beta)
    table_user_artists: int = 200  # a user's most-played artists that count in that table
    popular: int = 100  # most-listened artists always considered
    max_candidates: int = 500  # the cap, by the cheap score
    popularity_weight: float = 0.1  # of popularity in the cheap score (the others count 1)
    ease_neighbours: int = 200  # weights kept per artist in the EASE table (by magnitude)
    ease_items: int = 10_000  # most-listened artists in EASE's dense inverse (cube cost)
    ease_l2: float = 200.0  # EASE's regularisation

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type == "int" and getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1")
        if not self.popularity_weight >= 0:
            raise ValueError("popularity_weight must be >= 0")
        if self.item_similarity not in ITEM_SIMILARITIES:
            raise ValueError(f"item_similarity must be one of {ITEM_SIMILARITIES}, not "
                             f"{self.item_similarity!r}")  # fmt: skip
        if not self.rp3_beta >= 0:
            raise ValueError("rp3_beta must be >= 0")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def item_table(self, plays: sp.csr_matrix) -> sp.csr_matrix:
        """The item-item table these settings call for, computed from ``plays``."""
        if self.item_similarity == "cosine":
            return item_neighbour_table(plays, self.item_neighbours, self.table_user_artists)
        return rp3beta_neighbour_table(plays, self.item_neighbours, self.rp3_beta,
                                       self.table_user_artists)  # fmt: skip

    def ease_table(self, plays: sp.csr_matrix) -> sp.csr_matrix:
        """The pruned EASE table these settings call for, computed from ``plays``."""
        return ease_neighbour_table(plays, self.ease_neighbours, self.ease_l2, self.ease_items)


@dataclass(frozen=True)
class Candidates:
    """One listener's candidate artists, best first by the cheap score, and their features."""

    artists: np.ndarray  # int64 artist columns, (C,)
    features: np.ndarray  # float32 (C, len(FEATURES))
    listener: np.ndarray = field(default_factory=lambda: np.zeros(len(LISTENER), np.float32))
    tags: np.ndarray | None = None  # float32 (C, 2): tag_sim, tagged; None without a tag table


@dataclass(frozen=True)
class Blend:
    """Final score = ``dnn * z(dnn score) + sum_f weight_f * z(feature f)``, z-scored over one
    listener's candidates. ``Blend()`` is the DNN alone."""

    dnn: float = 1.0
    neighbourhood: float = 0.0
    item_knn: float = 0.0
    popularity: float = 0.0
    ease: float = 0.0
    als: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict | None) -> Blend:
        return cls(**{f.name: float(raw[f.name]) for f in fields(cls) if f.name in raw}) if raw \
            else cls()  # fmt: skip

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def weights(self) -> np.ndarray:
        """Weights of ``[dnn, *FEATURES]``."""
        return np.array([self.dnn, *(getattr(self, f) for f in FEATURES)], np.float64)

    def score(self, dnn_scores: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Blended scores of one listener's candidates (float32, higher is better)."""
        columns = np.column_stack([np.asarray(dnn_scores, np.float64), features])
        return (zscore(columns) @ self.weights).astype(np.float32)


@dataclass(frozen=True)
class TwoStageSettings:
    """What a run stores and each version's manifest carries: candidates and the two blends."""

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    known: Blend = field(default_factory=Blend)  # users the network has an embedding for
    history: Blend = field(default_factory=Blend)  # listeners scored through similar users
    validation: dict[str, Any] = field(default_factory=dict)  # what the tuning saw

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates.as_dict(), "known": self.known.as_dict(),
                "history": self.history.as_dict(), "validation": self.validation}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TwoStageSettings:
        raw = raw or {}
        return cls(CandidateConfig(**raw.get("candidates", {})), Blend.from_dict(raw.get("known")),
                   Blend.from_dict(raw.get("history")), raw.get("validation", {}))  # fmt: skip


def zscore(columns: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit variance (a constant column becomes zeros)."""
    columns = np.asarray(columns, np.float64)
    std = columns.std(axis=0)
    return np.divide(columns - columns.mean(axis=0), std, out=np.zeros_like(columns),
                     where=std > 0)  # fmt: skip


def rank_candidates(artists: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best candidates, ties towards the lower artist index (as
    :func:`core.ranking.top_k_excluding` breaks them)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) > k > 0 and not np.isnan(scores).any():  # only what can reach the top k
        # (every tie of the k-th score included, so the order is the full sort's)
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        contenders = np.flatnonzero(scores >= kth)
        return contenders[np.lexsort((artists[contenders], -scores[contenders]))][:k]
    return np.lexsort((artists, -scores))[:k]


class CandidateIndex:
    """What stage 1 needs of one model version: the known users' vectors, the item-item and
    EASE tables, ALS's artist factors, artist popularity (listeners per artist) and, when the
    data had tags, the artist tag table. Without an EASE table or ALS factors (versions
    exported before them) those scores are 0; without a tag table candidates carry no tags."""

    def __init__(self, known_plays: sp.csr_matrix, item_table: sp.csr_matrix,
                 config: CandidateConfig, ease_table: sp.csr_matrix | None = None,
                 als: AlsFactors | None = None,
                 tags: ArtistTags | None = None) -> None:  # fmt: skip
        known_plays = sp.csr_matrix(known_plays)
        square = (known_plays.shape[1],) * 2
        if ease_table is None:
            ease_table = sp.csr_matrix(square, dtype=np.float32)
        for name, table in (("item", item_table), ("EASE", ease_table)):
            if table.shape != square:
                raise ValueError(f"{name} table {table.shape} does not fit {known_plays.shape[1]}"
                                 " artists")  # fmt: skip
        self.config = config
        self.vectors = user_vectors(known_plays)
        self.item_table = sp.csr_matrix(item_table, dtype=np.float32)
        self.ease_table = sp.csr_matrix(ease_table, dtype=np.float32)
        self.als = als if als is not None else AlsFactors.empty(known_plays.shape[1])
        if self.als.n_artists != known_plays.shape[1]:
            raise ValueError(f"ALS factors for {self.als.n_artists} artists, not "
                             f"{known_plays.shape[1]}")  # fmt: skip
        if tags is not None and tags.n_artists != known_plays.shape[1]:
            raise ValueError(f"tag table for {tags.n_artists} artists, not "
                             f"{known_plays.shape[1]}")  # fmt: skip
        self.tags = tags
        listeners = np.diff(known_plays.tocsc().indptr)
        self.log_listeners = np.log1p(listeners).astype(np.float32)
        self.popular = np.argsort(-listeners, kind="stable")[: config.popular].astype(np.int64)
        self.n_artists = known_plays.shape[1]

    def candidates(self, history: sp.csr_matrix, neighbours: np.ndarray, similarities: np.ndarray,
                   exclude: np.ndarray | None = None) -> Candidates:  # fmt: skip
        """Stage 1 for one listener: ``history`` (1 x artists play counts), their similar known
        users (``-1`` = none) and similarities; ``exclude`` defaults to the history's artists."""
        keep = np.asarray(neighbours) >= 0
        users = np.asarray(neighbours)[keep]
        sims = np.asarray(similarities, np.float64)[keep]
        history = as_csr(history)
        played, plays = history.indices, history.data
        # Both scores are weighted sums of a few sparse rows: gathered directly, never a
        # catalogue-wide vector (at 290k artists that allocation is most of the cost).
        nb_cols, nb_vals = weighted_rows(self.vectors, users, sims)
        item_cols, item_vals = weighted_rows(self.item_table, played, np.log1p(plays))
        ease_cols, ease_vals = weighted_rows(self.ease_table, played, np.ones(len(played)))
        exclude = played if exclude is None else np.asarray(exclude)
        # One sort gives the pool and where each source's entry falls in it; each source's
        # scores are then summed per pool column in the order they come (as before: the same
        # sums), and the excluded columns dropped afterwards.
        segments = np.cumsum([len(nb_cols), len(item_cols), len(ease_cols)])
        pool, where = np.unique(np.concatenate([nb_cols, item_cols, ease_cols, self.popular]),
                                return_inverse=True)  # fmt: skip
        n = len(pool)
        sums = [
            np.bincount(where[a:b], weights=v, minlength=n)
            for a, b, v in zip(
                (0, *segments[:2]), segments, (nb_vals, item_vals, ease_vals), strict=True
            )
        ]
        keep = _without(pool, exclude)
        pool = pool[keep].astype(np.int64)
        features = np.column_stack([sums[0][keep], sums[1][keep], self.log_listeners[pool],
                                    sums[2][keep]])  # fmt: skip
        cheap = _scaled(features[:, 0]) + _scaled(features[:, 1]) + _scaled(features[:, 3]) \
            + self.config.popularity_weight * _scaled(features[:, 2])  # fmt: skip
        best = rank_candidates(pool, cheap, self.config.max_candidates)
        als = self.als.scores(self.als.user_factor(history), pool[best])
        listener = np.array([np.log1p(len(played)), sims.sum(), sims.max(initial=0.0),
                             len(users)], np.float32)  # fmt: skip
        tags = self.tags.features(history, pool[best]) if self.tags is not None else None
        return Candidates(pool[best], np.column_stack([features[best], als]).astype(np.float32),
                          listener, tags)  # fmt: skip


def _without(pool: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """A mask of the ``pool`` columns (sorted, distinct) not in ``exclude``."""
    keep = np.ones(len(pool), bool)
    pos = pool.searchsorted(exclude)
    inside = pos < len(pool)
    pos = pos[inside]
    keep[pos[pool[pos] == exclude[inside]]] = False
    return keep


def _scaled(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else np.zeros_like(values)
