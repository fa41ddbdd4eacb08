"""Data sources: real listening data sets, the Spotify Playlists CSV, and a seeded generator."""

from __future__ import annotations

from pathlib import Path

from training.data.interactions import Interactions, Vocabulary, filter_min_counts, from_frame
from training.data.lastfm import load_audioscrobbler, load_hetrec
from training.data.spotify import LoadReport, load_spotify_playlists

KINDS = ("hetrec", "spotify", "audioscrobbler")


def detect_kind(path: Path) -> str:
    """Guess a source's kind from what is at ``path``."""
    if path.is_file():
        return "spotify"
    if (path / "user_artists.dat").is_file():
        return "hetrec"
    if any(path.glob("user_artist_data*.txt")):
        return "audioscrobbler"
    raise ValueError(
        f"cannot tell what data set {path} is: expected a Spotify Playlists CSV file, a HetRec "
        "directory (user_artists.dat) or an Audioscrobbler directory (user_artist_data*.txt); "
        "prefix the path with 'hetrec:', 'spotify:' or 'audioscrobbler:'"
    )


def load_dataset(
    spec: str, *, progress: bool = False, playlist_tags: bool = False
) -> tuple[Interactions, dict[str, object]]:
    """Load ``[kind:]path`` (kind one of :data:`KINDS`, guessed when absent); with
    ``playlist_tags`` (the Spotify format only) playlist names' words become artist tags.

    Returns the interactions and a load report (rows skipped and why; empty for clean formats).
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        path = Path(rest)
    else:
        kind, path = "", Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    kind = kind or detect_kind(path)
    if kind == "spotify":
        data, report = load_spotify_playlists(path, progress=progress, playlist_tags=playlist_tags)
        return data, report.as_dict()
    if playlist_tags:
        raise ValueError(f"playlist tags need the Spotify Playlists format; {path} is {kind}")
    loader = load_hetrec if kind == "hetrec" else load_audioscrobbler
    return loader(path), {}


__all__ = [
    "KINDS",
    "Interactions",
    "LoadReport",
    "Vocabulary",
    "detect_kind",
    "filter_min_counts",
    "from_frame",
    "load_audioscrobbler",
    "load_dataset",
    "load_hetrec",
    "load_spotify_playlists",
]
