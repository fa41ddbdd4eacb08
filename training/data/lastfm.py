"""Loaders for Last.fm-derived data sets: HetRec 2011 Last.fm 2K and Audioscrobbler 2005."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from training.data.interactions import Interactions, from_frame


def load_hetrec(directory: Path | str) -> Interactions:
    """Load HetRec 2011 Last.fm 2K (``user_artists.dat`` + ``artists.dat``).

    Play counts are the ``weight`` column; artists are keyed by HetRec's ``artistID`` and named
    from ``artists.dat``.
    """
    directory = Path(directory)
    plays_path = directory / "user_artists.dat"
    if not plays_path.is_file():
        raise FileNotFoundError(f"HetRec Last.fm directory lacks user_artists.dat: {directory}")
    plays = pd.read_csv(plays_path, sep="\t", dtype={"userID": str, "artistID": str})
    names = pd.read_csv(
        directory / "artists.dat",
        sep="\t",
        quoting=csv.QUOTE_NONE,
        usecols=["id", "name"],
        dtype=str,
        keep_default_na=False,
    )
    return from_frame(
        plays,
        user_col="userID",
        artist_col="artistID",
        count_col="weight",
        artist_names=dict(zip(names["id"], names["name"], strict=True)),
        source=f"hetrec:{directory}",
    )


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
    plays["count"] = plays["count"].astype("float32")

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
        artist_names=dict(zip(names["id"], names["name"].str.strip(), strict=True)),
        source=f"audioscrobbler:{directory}",
    )
