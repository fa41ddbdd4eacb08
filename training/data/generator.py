"""Seeded generator of synthetic listening data in the Spotify Playlists CSV format.

The data have the structure a recommender needs to find: power-law artist popularity, taste
communities (each user listens mostly inside one or two of them, so similar users exist),
log-normal user activity, repeated artists within a user's playlists, and optionally a small
share of malformed rows like the ones in the real file. The same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

_ADJECTIVES = (
    "Silver Electric Midnight Velvet Broken Golden Neon Hollow Crimson Quiet Wild Paper Frozen "
    "Burning Lonely Cosmic Northern Savage Gentle Rusty Blue Black White Young Ancient Lucky "
    "Secret Static Sonic Stone Glass Iron Lunar Solar Royal Little Modern Honey Violet Faded"
).split()
_NOUNS = (
    "Foxes Engines Harbour Kings Rivers Wolves Lanterns Machines Saints Echoes Tigers Ghosts "
    "Mountains Pilots Sparrows Daughters Monks Satellites Horses Orchids Arrows Drifters Canyons "
    "Tides Comets Ravens Owls Valleys Thieves Giants Dreamers Shadows Sailors Poets Hearts"
).split()
_TRACK_WORDS = (
    "Love Night Fire Rain Heart Road Light Dance Summer Home Dream Time Gold Ocean Star City "
    "Run Falling Waiting Alive Forever Tonight Yesterday Stranger Paradise Runaway Shine Holding"
).split()
_PLAYLISTS = (
    "Starred",
    "Favorites",
    "Summer",
    "Workout",
    "Chill",
    "Road Trip",
    "Party",
    "Focus",
    "Throwbacks",
    "Running",
    "Sleep",
    "Sunday Morning",
    "Best of 2014",
    "Discover",
    "Late Night",
)


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the synthetic data set. Defaults give a quick demo-sized file."""

    rows: int = 200_000
    users: int = 2_000
    artists: int = 5_000
    communities: int = 24
    popularity_exponent: float = 1.0  # Zipf exponent of artist popularity
    in_community_share: float = 0.85  # share of a user's plays inside their communities
    tracks_per_artist: int = 12
    malformed_rate: float = 1e-4  # share of rows written with a stray quote
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.rows, self.users, self.artists, self.communities) < 1:
            raise ValueError("rows, users, artists and communities must all be >= 1")
        if self.communities > self.artists:
            raise ValueError("communities must not exceed artists")
        if not 0.0 <= self.malformed_rate < 1.0 or not 0.0 <= self.in_community_share <= 1.0:
            raise ValueError("malformed_rate must be in [0, 1) and in_community_share in [0, 1]")


def artist_names(n: int) -> list[str]:
    """``n`` distinct, deterministic band names."""
    names: list[str] = []
    n_base = len(_ADJECTIVES) * len(_NOUNS)
    for i in range(n):
        adjective = _ADJECTIVES[i % len(_ADJECTIVES)]
        base = f"The {adjective} {_NOUNS[(i // len(_ADJECTIVES)) % len(_NOUNS)]}"
        names.append(base if i < n_base else f"{base} {i // n_base + 1}")
    return names


def user_ids(n: int, seed: int) -> list[str]:
    """32-character hex ids, as in the real file."""
    return [hashlib.md5(f"{seed}:{i}".encode()).hexdigest() for i in range(n)]


def _sample_rows(cfg: GeneratorConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (user, artist) indices for ``cfg.rows`` plays."""
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=cfg.users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * cfg.rows)).astype(np.int64)
    users = np.repeat(np.arange(cfg.users), per_user)[: cfg.rows]
    if len(users) < cfg.rows:  # rounding shortfall goes to random users
        users = np.concatenate([users, rng.integers(0, cfg.users, cfg.rows - len(users))])

    popularity = 1.0 / np.arange(1, cfg.artists + 1) ** cfg.popularity_exponent
    popularity = popularity[rng.permutation(cfg.artists)]
    community_of_artist = rng.integers(0, cfg.communities, cfg.artists)
    primary = rng.integers(0, cfg.communities, cfg.users)
    secondary = rng.integers(0, cfg.communities, cfg.users)

    draw = rng.random(len(users))
    community = np.where(draw < 0.7 * cfg.in_community_share, primary[users], secondary[users])
    global_pick = draw >= cfg.in_community_share
    artists = np.empty(len(users), np.int64)

    def pick(mask: np.ndarray, candidates: np.ndarray) -> None:
        cdf = np.cumsum(popularity[candidates])
        u = rng.random(int(mask.sum())) * cdf[-1]
        artists[mask] = candidates[np.minimum(np.searchsorted(cdf, u), len(cdf) - 1)]

    pick(global_pick, np.arange(cfg.artists))
    for c in range(cfg.communities):
        members = np.flatnonzero(community_of_artist == c)
        mask = (community == c) & ~global_pick
        if mask.any():
            pick(mask, members if len(members) else np.arange(cfg.artists))
    order = rng.permutation(len(users))  # the real file is not grouped by user
    return users[order], artists[order]


def generate_play_matrix(cfg: GeneratorConfig) -> sp.csr_matrix:
    """The same plays as :func:`generate_spotify_csv` writes, as a users x artists count
    matrix (for benchmarks at the full Spotify scale, without writing and parsing the CSV)."""
    users, artists = _sample_rows(cfg, np.random.default_rng(cfg.seed))
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, artists)),
                      shape=(cfg.users, cfg.artists))  # fmt: skip
    m.sum_duplicates()
    return m


def generate_spotify_csv(
    path: Path | str, cfg: GeneratorConfig = GeneratorConfig(), *, progress: bool = False
) -> Path:
    """Write a synthetic Spotify Playlists CSV to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    users, artists = _sample_rows(cfg, rng)
    uids = user_ids(cfg.users, cfg.seed)
    names = artist_names(cfg.artists)
    tracks = rng.integers(0, cfg.tracks_per_artist, len(users))
    playlists = rng.integers(0, len(_PLAYLISTS), len(users))
    broken = rng.random(len(users)) < cfg.malformed_rate
    tw = _TRACK_WORDS
    chunk = 500_000
    tmp = path.with_suffix(path.suffix + ".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write('"user_id", "artistname", "trackname", "playlistname"\n')
        for start in tqdm(range(0, len(users), chunk), disable=not progress, desc="generate"):
            lines = []
            for i in range(start, min(start + chunk, len(users))):
                a, t = artists[i], tracks[i]
                track = f"{tw[(a * 7 + t) % len(tw)]} {tw[(a * 13 + t * 5) % len(tw)]} {t + 1}"
                playlist = _PLAYLISTS[playlists[i]]
                if broken[i]:
                    playlist = f'My "{playlist}" mix'  # an unescaped quote, as in the real file
                lines.append(f'"{uids[users[i]]}", "{names[a]}", "{track}", "{playlist}"\n')
            fh.write("".join(lines))
    tmp.replace(path)
    return path
