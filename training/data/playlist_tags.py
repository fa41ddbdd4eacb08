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
    pairs = np.unique(np.stack([np.asarray(users, np.int64), np.asarray(artists, np.int64),
                                np.asarray(playlists, np.int64)]), axis=1)  # fmt: skip
    u, a, p = pairs
    per_row = lengths[p]
    starts = np.repeat(offsets[p], per_row)
    within = np.arange(per_row.sum()) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    triples = np.unique(np.stack([np.repeat(u, per_row), np.repeat(a, per_row),
                                  flat[starts + within]]), axis=1)  # fmt: skip
    return TagAssignments(triples[0], triples[1], triples[2])
