"""The user and artist vocabulary that travels with every model version, and artist lookup.

One code path for naming artists and resolving what a caller typed (an artist id or a
display name, case-insensitive), shared by offline recommendations and the gateway.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Vocabulary:
    """Index <-> key mappings for users and artists.

    ``artist_ids`` are the source's stable artist keys (HetRec's numeric id, or the artist name
    for the Spotify CSV, which has no ids); ``artist_names`` are display names, index-aligned.
    """

    user_ids: tuple[str, ...]
    artist_ids: tuple[str, ...]
    artist_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.artist_ids) != len(self.artist_names):
            raise ValueError(
                f"artist_ids ({len(self.artist_ids)}) and artist_names "
                f"({len(self.artist_names)}) must have the same length"
            )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_artists(self) -> int:
        return len(self.artist_ids)

    def user_index(self) -> dict[str, int]:
        """Map user id -> row index."""
        return {u: i for i, u in enumerate(self.user_ids)}

    def artist_index(self) -> dict[str, int]:
        """Map artist id -> column index."""
        return {a: i for i, a in enumerate(self.artist_ids)}

    def fingerprint(self) -> str:
        """A short hash identifying this exact vocabulary (order matters)."""
        h = hashlib.sha256()
        for part in (self.user_ids, self.artist_ids, self.artist_names):
            h.update("\x1f".join(part).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def save(self, directory: Path) -> None:
        """Write ``users.json`` and ``artists.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "users.json").write_text(json.dumps(list(self.user_ids)))
        artists = {"ids": list(self.artist_ids), "names": list(self.artist_names)}
        (directory / "artists.json").write_text(json.dumps(artists, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        users = json.loads((directory / "users.json").read_text())
        artists = json.loads((directory / "artists.json").read_text())
        return cls(tuple(users), tuple(artists["ids"]), tuple(artists["names"]))


@dataclass(frozen=True)
class ScoredArtist:
    """One ranked artist: its column, stable id, display name and score."""

    index: int
    id: str
    name: str
    score: float


def name_key(name: str) -> str:
    """How display names are compared: NFC-normalised, trimmed, case-folded."""
    return unicodedata.normalize("NFC", name.strip()).casefold()


@dataclass(frozen=True)
class ArtistLookup:
    """Artist columns by id and by case-insensitive name (the first artist of a name wins)."""

    vocab: Vocabulary
    by_id: dict[str, int] = field(repr=False)
    by_name: dict[str, int] = field(repr=False)

    @classmethod
    def of(cls, vocab: Vocabulary) -> ArtistLookup:
        by_name: dict[str, int] = {}
        for i, name in enumerate(vocab.artist_names):
            by_name.setdefault(name_key(name), i)
        return cls(vocab, vocab.artist_index(), by_name)

    def by_artist_id(self, artist_id: str) -> int | None:
        return self.by_id.get(artist_id)

    def by_artist_name(self, name: str) -> int | None:
        return self.by_name.get(name_key(name))

    def by_id_or_name(self, key: str) -> int | None:
        """An id first, else a display name."""
        key = key.strip()
        found = self.by_id.get(key)
        return found if found is not None else self.by_artist_name(key)

    def named(self, artists: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
              ) -> list[ScoredArtist]:  # fmt: skip
        """Artists (columns, -1 skipped) with their scores, as :class:`ScoredArtist`."""
        v = self.vocab
        return [
            ScoredArtist(int(a), v.artist_ids[a], v.artist_names[a], float(s))
            for a, s in zip(np.asarray(artists).tolist(), np.asarray(scores).tolist(), strict=True)
            if a >= 0
        ]
