"""The catalogues the serving benchmarks run on, exported as a model repository with a network
of random weights, a learned ranker of the production size and real ALS factors (speed does
not depend on training).

* ``hetrec``: HetRec 2011 (real plays, 1,892 users x 17,632 artists);
* ``290k``: a Spotify-scale synthetic one (15,918 users x 290,000 artists, 12.9M plays from
  the project's generator).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import scipy.sparse as sp

from core.paths import HETREC_DIR
from core.vocabulary import Vocabulary
from training.data import load_hetrec
from training.data.generator import GeneratorConfig, artist_names, generate_play_matrix, user_ids

SPOTIFY_SCALE = GeneratorConfig(rows=12_900_000, users=15_918, artists=290_000, communities=200)
CATALOGUES = ("hetrec", "290k")


@dataclass(frozen=True)
class ExportedCatalogue:
    """A catalogue's plays and vocabulary, the repository exported over it, and how long the
    export's parts took."""

    plays: sp.csr_matrix
    vocab: Vocabulary
    repository: Path
    als_seconds: float
    export_seconds: float

    def describe(self) -> dict:
        n_users, n_artists = self.plays.shape
        return {"users": n_users, "artists": n_artists, "plays": int(self.plays.nnz)}


def catalogue(name: str) -> tuple[sp.csr_matrix, Vocabulary]:
    """The plays and vocabulary of catalogue ``name`` (one of :data:`CATALOGUES`)."""
    if name == "hetrec":
        data = load_hetrec(HETREC_DIR)
        return data.matrix, data.vocab
    if name != "290k":
        raise ValueError(f"catalogue must be one of {', '.join(CATALOGUES)}, got {name!r}")
    plays = generate_play_matrix(SPOTIFY_SCALE)
    n_users, n_artists = plays.shape
    names = tuple(artist_names(n_artists))
    return plays, Vocabulary(tuple(user_ids(n_users, SPOTIFY_SCALE.seed)),
                             tuple(f"a{i}" for i in range(n_artists)), names)  # fmt: skip


def export_in_child(name: str, root: Path) -> ExportedCatalogue:
    """:func:`export_catalogue` in a child interpreter: TensorFlow's threads and memory never
    enter the process that then drives and measures the load."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(export_catalogue, (name, root))


def export_catalogue(name: str, root: Path) -> ExportedCatalogue:
    """Export version 1 of every served model over catalogue ``name`` into
    ``root/model_repository``."""
    from benchmarks.common import random_network, synthetic_ranker  # TensorFlow, LightGBM
    from export.repository import export_network
    from training.models.als import fit_als_factors

    plays, vocab = catalogue(name)
    vocab.save(root / "vocab")
    t0 = time.perf_counter()
    als = fit_als_factors(plays)
    als_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_users, n_artists = plays.shape
    export_network(random_network(n_users, n_artists), root / "model_repository",
                   vocab_dir=root / "vocab", plays=plays, ranker=synthetic_ranker(), als=als,
                   provenance={"source_run": "benchmark (random weights)"})  # fmt: skip
    return ExportedCatalogue(plays, vocab, root / "model_repository", als_seconds,
                             time.perf_counter() - t0)  # fmt: skip
