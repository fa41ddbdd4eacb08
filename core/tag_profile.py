"""Tags as side information: an artist x tag table and each listener's tag profile against their
candidates. One definition for training, offline evaluation and the gateway.

The table (:class:`ArtistTags`) is fitted from tag assignments (user, artist, tag) and the play
matrix being fitted: only assignments whose (user, artist) pair is a play in that matrix count,
so a held-out play's tags are never read. Counts are TF-IDF weighted
(``idf = log((n_artists + 1) / (df + 1))``) and each artist's row L2-normalised. A listener's
profile is ``sum_a log1p(plays_a) * table[a]`` over their history, normalised; a candidate's
``tag_sim`` is ``table[c] . profile`` (0 for an untagged candidate or a profile without tags),
and ``tagged`` says whether the candidate has any tag (``core.ranker_features`` adds z-score and
rank over the listener's candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.similarity import as_csr, weighted_rows


@dataclass(frozen=True)
class TagAssignments:
    """Who tagged which artist with which tag, as row/column indices of a play matrix."""

    users: np.ndarray  # int64 (n,)
    artists: np.ndarray  # int64 (n,)
    tags: np.ndarray  # int64 (n,) tag codes

    def __post_init__(self) -> None:
        if not len(self.users) == len(self.artists) == len(self.tags):
            raise ValueError("tag assignments: users, artists and tags differ in length")

    def __len__(self) -> int:
        return len(self.users)

    def select(self, keep: np.ndarray) -> TagAssignments:
        """The assignments where ``keep`` (a mask or index array) holds."""
        return TagAssignments(self.users[keep], self.artists[keep], self.tags[keep])

    def reindexed(self, user_map: np.ndarray, artist_map: np.ndarray) -> TagAssignments:
        """Indices mapped through ``user_map``/``artist_map`` (old index -> new, ``-1`` dropped);
        the assignments of a dropped user or artist are dropped."""
        users, artists = user_map[self.users], artist_map[self.artists]
        keep = (users >= 0) & (artists >= 0)
        return TagAssignments(users[keep], artists[keep], self.tags[keep])


@dataclass(frozen=True)
class ArtistTags:
    """TF-IDF weighted, L2-normalised artist x tag rows (float64 CSR)."""

    table: sp.csr_matrix

    @property
    def n_artists(self) -> int:
        return self.table.shape[0]

    @property
    def tagged(self) -> np.ndarray:
        """Whether each artist has any tag."""
        return np.diff(self.table.indptr) > 0

    @classmethod
    def fit(cls, assignments: TagAssignments, plays: sp.csr_matrix) -> ArtistTags:
        """The table from the assignments whose (user, artist) pair is a play in ``plays``."""
        plays = sp.csr_matrix(plays)
        n_artists = plays.shape[1]
        if len(assignments):
            played = np.asarray(plays[assignments.users, assignments.artists]).ravel() > 0
        else:
            played = np.zeros(0, bool)
        kept = assignments.select(played)
        tags, codes = np.unique(kept.tags, return_inverse=True)
        counts = sp.csr_matrix((np.ones(len(kept)), (kept.artists, codes.ravel())),
                               shape=(n_artists, len(tags)), dtype=np.float64)  # fmt: skip
        counts.sum_duplicates()
        df = np.diff(counts.tocsc().indptr).astype(np.float64)
        weighted = sp.csr_matrix(counts.multiply(np.log((n_artists + 1) / (df + 1))[None, :]))
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        table = sp.csr_matrix(sp.diags(scale) @ weighted)
        table.eliminate_zeros()
        table.sort_indices()
        return cls(table)

    def profile(self, history: sp.csr_matrix) -> np.ndarray:
        """A 1 x artists history's normalised tag profile (zeros when none of it is tagged)."""
        row = as_csr(history)
        cols, vals = weighted_rows(self.table, row.indices, np.log1p(row.data.astype(np.float64)))
        profile = np.bincount(cols, weights=vals, minlength=self.table.shape[1])
        norm = float(np.sqrt(profile @ profile))
        return profile / norm if norm > 0 else profile

    def features(self, history: sp.csr_matrix, artists: np.ndarray) -> np.ndarray:
        """``(C, 2)`` float32 of ``artists`` for one listener: ``tag_sim`` and ``tagged``
        (sparse rows gathered directly: no SciPy indexing on the request path)."""
        artists = np.asarray(artists, np.int64)
        table = self.table
        lengths = table.indptr[artists + 1] - table.indptr[artists]
        cols, vals = weighted_rows(table, artists, np.ones(len(artists)))
        owner = np.repeat(np.arange(len(artists)), lengths)
        sim = np.bincount(owner, weights=vals * self.profile(history)[cols], minlength=len(artists))
        return np.column_stack([sim, lengths > 0]).astype(np.float32)

    def save(self, path: Path) -> None:
        sp.save_npz(path, self.table, compressed=False)

    @classmethod
    def load(cls, path: Path) -> ArtistTags:
        table = sp.csr_matrix(sp.load_npz(path), dtype=np.float64)
        table.sort_indices()
        return cls(table)
