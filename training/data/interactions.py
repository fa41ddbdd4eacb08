"""User x artist interaction matrix and the vocabulary (``core.vocabulary``) that goes with it."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.contract import MAX_PLAYS
from core.tag_profile import TagAssignments
from core.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interactions:
    """A sparse user x artist matrix of play counts plus its vocabulary, and the tag
    assignments when the source has them (``None``: no tags, so no tag features)."""

    matrix: sp.csr_matrix
    vocab: Vocabulary
    source: str = ""
    tags: TagAssignments | None = None

    def __post_init__(self) -> None:
        if self.matrix.shape != (self.vocab.n_users, self.vocab.n_artists):
            raise ValueError(
                f"matrix shape {self.matrix.shape} does not match vocabulary "
                f"({self.vocab.n_users} users x {self.vocab.n_artists} artists)"
            )

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def fingerprint(self) -> str:
        """Hash of the vocabulary and the matrix contents: identifies the training data."""
        m = self.matrix
        h = hashlib.sha256(self.vocab.fingerprint().encode())
        for arr in (m.indptr, m.indices, m.data):
            h.update(np.ascontiguousarray(arr).tobytes())
        if self.tags is not None:  # data without tags keeps its earlier fingerprint
            for arr in (self.tags.users, self.tags.artists, self.tags.tags):
                h.update(np.ascontiguousarray(arr, np.int64).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, float | int | str]:
        """Counts worth printing or storing with a run."""
        n_u, n_a = self.matrix.shape
        tags = {"tag_assignments": len(self.tags)} if self.tags is not None else {}
        return {
            "source": self.source,
            "users": n_u,
            "artists": n_a,
            "pairs": self.nnz,
            "plays": float(self.matrix.sum()),
            "density": self.nnz / max(1, n_u * n_a),
            **tags,
        }


def from_frame(
    frame: pd.DataFrame,
    *,
    user_col: str = "user_id",
    artist_col: str = "artist_id",
    count_col: str | None = "count",
    artist_names: dict[str, str] | None = None,
    source: str = "",
) -> Interactions:
    """Build :class:`Interactions` from a long frame of (user, artist[, count]) rows.

    Duplicate (user, artist) rows are summed. Users and artists are indexed in sorted key order,
    so the same data always gives the same vocabulary.
    """
    users = frame[user_col].astype(str)
    artists = frame[artist_col].astype(str)
    counts = (  # float64: counts past float32's range (3.4e38) stay finite until capped
        frame[count_col].to_numpy(np.float64)
        if count_col is not None
        else np.ones(len(frame), np.float64)
    )
    if len(counts) and (not np.all(np.isfinite(counts)) or counts.min() <= 0):
        bad = counts[~(np.isfinite(counts) & (counts > 0))][:3]
        raise ValueError(f"play counts must be finite and positive, found {bad.tolist()}")
    u_codes, u_keys = pd.factorize(users, sort=True)
    a_codes, a_keys = pd.factorize(artists, sort=True)
    summed = sp.csr_matrix(
        (counts, (u_codes, a_codes)), shape=(len(u_keys), len(a_keys)), dtype=np.float64
    )
    summed.sum_duplicates()  # in float64, then capped: no sum overflows float32 to inf
    summed.data = np.minimum(summed.data, MAX_PLAYS)
    matrix = sp.csr_matrix(summed, dtype=np.float32)
    names = artist_names or {}
    vocab = Vocabulary(
        tuple(u_keys),
        tuple(a_keys),
        tuple(names.get(a, a) for a in a_keys),
    )
    return Interactions(matrix, vocab, source)


def filter_min_counts(
    data: Interactions, *, min_user_artists: int = 1, min_artist_users: int = 1
) -> Interactions:
    """Drop artists with fewer than ``min_artist_users`` users, then users with fewer than
    ``min_user_artists`` artists (one pass each, in that order), keeping vocabularies aligned."""
    m = data.matrix
    keep_a = np.flatnonzero(np.diff(m.tocsc().indptr) >= min_artist_users)
    m = m[:, keep_a]
    keep_u = np.flatnonzero(np.diff(m.indptr) >= min_user_artists)
    m = m[keep_u]
    v = data.vocab
    vocab = Vocabulary(
        tuple(v.user_ids[i] for i in keep_u),
        tuple(v.artist_ids[i] for i in keep_a),
        tuple(v.artist_names[i] for i in keep_a),
    )
    dropped = (data.matrix.shape[0] - len(keep_u), data.matrix.shape[1] - len(keep_a))
    if dropped != (0, 0):
        log.info("min-count filter dropped %d users and %d artists", *dropped)
    tags = None
    if data.tags is not None:
        tags = data.tags.reindexed(_index_map(keep_u, data.matrix.shape[0]),
                                   _index_map(keep_a, data.matrix.shape[1]))  # fmt: skip
    return Interactions(sp.csr_matrix(m), vocab, data.source, tags)


def _index_map(kept: np.ndarray, n: int) -> np.ndarray:
    """Old index -> new index among ``kept`` (sorted), ``-1`` for an index dropped."""
    out = np.full(n, -1, np.int64)
    out[kept] = np.arange(len(kept))
    return out
