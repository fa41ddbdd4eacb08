"""Loaders for Last.fm-derived data sets: HetRec 2011 Last.fm 2K and Audioscrobbler 2005."""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.tag_profile import TagAssignments
from training.data.interactions import Interactions, from_frame

log = logging.getLogger(__name__)


def load_hetrec(directory: Path | str) -> Interactions:
    """Load HetRec 2011 Last.fm 2K (``user_artists.dat`` + ``artists.dat``, and the tag
    assignments of ``user_taggedartists.dat`` when the directory has it).

    Play counts are the ``weight`` column; artists are keyed by HetRec's ``artistID`` and named
    from ``artists.dat``. Tag assignments of users or artists without plays are dropped.
    """
    directory = Path(directory)
    plays_path = directory / "user_artists.dat"
    if not plays_path.is_file():
        raise FileNotFoundError(f"HetRec Last.fm directory lacks user_artists.dat: {directory}")
    plays = pd.read_csv(plays_path, sep="\t", dtype={"userID": str, "artistID": str})
    artists_path = directory / "artists.dat"
    names = pd.read_csv(
        artists_path,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        usecols=["id", "name"],
        dtype=str,
        keep_default_na=False,
    )
    data = from_frame(
        plays,
        user_col="userID",
        artist_col="artistID",
        count_col="weight",
        artist_names=first_names(names["id"], names["name"], artists_path),
        source=f"hetrec:{directory}",
    )
    tags_path = directory / "user_taggedartists.dat"
    if not tags_path.is_file():
        return data
    return dataclasses.replace(data, tags=hetrec_tags(tags_path, data))


def hetrec_tags(path: Path, data: Interactions) -> TagAssignments:
    """``user_taggedartists.dat``'s (user, artist, tag) rows as indices of ``data``."""
    raw = pd.read_csv(path, sep="\t", usecols=["userID", "artistID", "tagID"], dtype=str)
    users = raw["userID"].map(data.vocab.user_index())
    artists = raw["artistID"].map(data.vocab.artist_index())
    known = (users.notna() & artists.notna()).to_numpy()
    tags = pd.to_numeric(raw["tagID"], errors="coerce").to_numpy()[known]
    ok = np.isfinite(tags)
    return TagAssignments(users.to_numpy()[known][ok].astype(np.int64),
                          artists.to_numpy()[known][ok].astype(np.int64),
                          tags[ok].astype(np.int64))  # fmt: skip


def first_names(ids: pd.Series, names: pd.Series, where: Path) -> dict[str, str]:
    """Artist id -> name; an id listed twice keeps its first name (counted in a warning)."""
    out: dict[str, str] = {}
    for artist_id, name in zip(ids, names, strict=True):
        out.setdefault(artist_id, name)
    if len(out) < len(ids):
        log.warning("%s: %d duplicate artist ids; each keeps its first name", where.name,
                    len(ids) - len(out))  # fmt: skip
    return out


def load_audioscrobbler(directory: Path | str) -> Interactions:
    """Load the Audioscrobbler 2005 files (``user_artist_data*.txt``, ``artist_data*.txt``,
    ``artist_alias*.txt``), mapping aliased artist ids to their canonical id."""
    directory = Path(directory)
    found = sorted(directory.glob("user_artist_data*.txt"))
    if not found:
        raise FileNotFoundError(f"no user_artist_data*.txt in {directory}")
    plays = pd.read_csv(
        found[0], sep=" ", header=None, names=["user", "artist", "count"], dtype=str
    )
    plays["count"] = plays["count"].astype("float64")  # float32 would overflow to inf

    def two_columns(pattern: str, names: list[str]) -> pd.DataFrame:
        files = sorted(directory.glob(pattern))
        if not files:
            return pd.DataFrame(columns=names)
        return pd.read_csv(
            files[0],
            sep="\t",
            header=None,
            names=names,
            dtype=str,
            quoting=csv.QUOTE_NONE,
            on_bad_lines="skip",
            keep_default_na=False,
        )

    alias = two_columns("artist_alias*.txt", ["bad", "good"])
    plays["artist"] = plays["artist"].replace(dict(zip(alias["bad"], alias["good"], strict=True)))
    names = two_columns("artist_data*.txt", ["id", "name"])
    plays = plays[plays["count"] > 0]
    return from_frame(
        plays,
        user_col="user",
        artist_col="artist",
        count_col="count",
        artist_names=first_names(names["id"], names["name"].str.strip(), directory),
        source=f"audioscrobbler:{directory}",
    )
