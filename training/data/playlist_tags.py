"""Playlist names as side information: each word of the name of a playlist an artist is in
becomes a tag of that artist by that user (``core.tag_profile.TagAssignments``).

A playlist called "Chill Sunday Morning" by user ``u`` holding artist ``a`` yields the
assignments ``(u, a, "chill")``, ``(u, a, "sunday")`` and ``(u, a, "morning")``: the same shape
as HetRec's user-tagged artists, so the same tag table, features and leak guard apply (only a
training play's assignments are counted, ``ArtistTags.fit``). Words are lower-cased runs of two
or more letters; digits, punctuation and emoji carry none. An assignment is counted once however
many of the user's tracks or playlists repeat it.
"""

from __future__ import annotations

import re

import numpy as np

from core.tag_profile import TagAssignments

_WORD = re.compile(r"[^\W\d_]{2,}")


def playlist_words(name: str) -> list[str]:
    """The words of a playlist name that become tags (lower case, letters only, >= 2 long)."""
    return _WORD.findall(name.lower())


def playlist_tag_assignments(users: np.ndarray, artists: np.ndarray, playlists: np.ndarray,
                             names: list[str]) -> TagAssignments:  # fmt: skip
    """Distinct (user, artist, word) assignments of rows ``(users[i], artists[i])`` in the
    playlist named ``names[playlists[i]]``; word codes index the sorted distinct words."""
    words = [playlist_words(name) for name in names]
    vocabulary = sorted({w for ws in words for w in ws})
    code = {w: i for i, w in enumerate(vocabulary)}
    lengths = np.array([len(ws) for ws in words], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.array([code[w] for ws in words for w in ws], np.int64)
    u, a, p = _distinct(users, artists, playlists, len(names))
    per_row = lengths[p]
    starts = np.repeat(offsets[p], per_row)
    within = np.arange(per_row.sum()) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    u, a, w = _distinct(np.repeat(u, per_row), np.repeat(a, per_row), flat[starts + within],
                        len(vocabulary))  # fmt: skip
    return TagAssignments(u, a, w)


def _distinct(users: np.ndarray, artists: np.ndarray, third: np.ndarray,
              n_third: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The distinct ``(user, artist, third)`` triples, sorted, as three int64 arrays: one
    int64 key per triple (a 1-D ``np.unique``, ten times faster than ``axis=1``) when the key
    space fits, else the column-wise unique."""
    users, artists, third = (np.asarray(x, np.int64) for x in (users, artists, third))
    if not len(users):
        return users, artists, third
    n_artists, n_third = int(artists.max()) + 1, max(n_third, 1)
    if (int(users.max()) + 1) * n_artists * n_third < 2**62:
        keys = np.unique((users * n_artists + artists) * n_third + third)
        pair, third = np.divmod(keys, n_third)
        users, artists = np.divmod(pair, n_artists)
        return users, artists, third
    triples = np.unique(np.stack([users, artists, third]), axis=1)
    return triples[0], triples[1], triples[2]
