"""One served model version's artifacts, loaded from its Triton version directory.

Export writes, beside each version's ONNX file, the vocabulary and the known users' plays
(``export/repository.py``). The gateway loads them for exactly the version Triton reports
ready, so names, user ids and the similar-user index always match the weights that score.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from core.als_factors import AlsFactors
from core.candidates import CandidateIndex, TwoStageSettings
from core.contract import (
    ALS_FACTORS,
    ARTIFACT_MODEL,
    ARTIST_TAGS,
    EASE_NEIGHBOURS,
    ITEM_NEIGHBOURS,
    MANIFEST,
    MAX_PLAYS,
    PLAYS,
    VOCAB_DIR,
)
from core.files import sha256_of
from core.ranker_features import RANKER_FEATURES, TAG_FEATURES, ranker_features
from core.similarity import ArrayBackend, SimilarityIndex
from core.tag_profile import ArtistTags
from core.vocabulary import ArtistLookup, Vocabulary
from gateway.errors import InvalidArgument

log = logging.getLogger(__name__)

# and VOCAB_DIR's files; ARTIST_TAGS only in versions whose ranker uses tag features
LOADED_FILES = (PLAYS, ITEM_NEIGHBOURS, EASE_NEIGHBOURS, ALS_FACTORS, ARTIST_TAGS)


class ArtifactError(RuntimeError):
    """A version directory is missing files or they disagree with its manifest."""


def verify_loaded_files(directory: Path, manifest: dict, version: int,
                        allow_unverified: bool = False) -> None:  # fmt: skip
    """Check the sha256 the manifest records (export's seal) of every file the gateway loads:
    the vocabulary, the plays and the candidate tables; :class:`ArtifactError` naming the first
    file that differs. A manifest without a ``files`` block (an older export, or a seal
    removed) is refused too, unless ``allow_unverified`` (the gateway's
    ``--allow-unverified-artifacts``, off by default), which loads it with a warning. Run at
    load time only, never on the request path."""
    recorded = manifest.get("files")
    if not recorded:
        if not allow_unverified:
            raise ArtifactError(f"version {version}: its manifest records no file checksums, so "
                                "its files cannot be verified: not loaded (re-export it, or "
                                "start the gateway with --allow-unverified-artifacts)")  # fmt: skip
        log.warning("model version %d: its manifest records no file checksums; loading its "
                    "files unverified (--allow-unverified-artifacts)", version)  # fmt: skip
        return
    if not isinstance(recorded, dict):
        raise ArtifactError(f"version {version}: the manifest's files block is not an object")
    vocab = sorted(p.relative_to(directory).as_posix()
                   for p in (directory / VOCAB_DIR).rglob("*") if p.is_file())  # fmt: skip
    for rel in (*vocab, *LOADED_FILES):
        if not (directory / rel).is_file():
            continue  # the load itself names a missing file
        if rel not in recorded:
            raise ArtifactError(f"version {version}: {rel} is not sealed in its manifest "
                                "(added after export)")  # fmt: skip
        if sha256_of(directory / rel) != recorded[rel]:
            raise ArtifactError(f"version {version}: checksum mismatch in {rel} (its sha256 "
                                "differs from the manifest's): not loaded")  # fmt: skip


def _tag_table(directory: Path, manifest: dict, version: int) -> ArtistTags | None:
    """The version's tag table where its ranker names tag features (``None`` where it names
    none); :class:`ArtifactError` when its features are not ones the gateway computes, or the
    table is missing."""
    ranker = manifest.get("ranker") or {}
    names = tuple(ranker.get("features", RANKER_FEATURES))
    uses_tags = TAG_FEATURES[0] in names
    if names != ranker_features(uses_tags):
        raise ArtifactError(f"version {version}: its ranker's features {list(names)} are not "
                            "ones this gateway computes")  # fmt: skip
    if not uses_tags:
        return None
    if not (directory / ARTIST_TAGS).is_file():
        raise ArtifactError(f"version {version}: its ranker uses tag features but "
                            f"{ARTIST_TAGS} is missing")  # fmt: skip
    return ArtistTags.load(directory / ARTIST_TAGS)


class ArtistRef(NamedTuple):
    """An artist named by a caller: exactly one of ``id``/``name``, and a play count (a named
    tuple: a 10,000-item history makes 10,000 of them, ~10x cheaper than a frozen dataclass)."""

    id: str | None = None
    name: str | None = None
    plays: float = 1.0


@dataclass(frozen=True)
class ResolvedHistory:
    """A caller's history mapped onto the model's artists (duplicates summed)."""

    row: sp.csr_matrix  # 1 x artists play counts
    unknown: tuple[str, ...]

    @property
    def artists(self) -> np.ndarray:
        return self.row.indices


@dataclass(frozen=True)
class ModelVersion:
    """Vocabulary, known plays and similarity index of one served version (immutable)."""

    version: int
    vocab: Vocabulary
    plays: sp.csr_matrix
    similarity: SimilarityIndex
    manifest: dict
    users: dict[str, int] = field(repr=False)
    artists: ArtistLookup = field(repr=False)
    listeners: np.ndarray = field(repr=False)  # known users per artist
    popular: np.ndarray = field(repr=False)  # artist indices, most listeners first
    two_stage: TwoStageSettings = field(repr=False)
    candidates: CandidateIndex = field(repr=False)  # stage 1 of the two_stage mode

    @classmethod
    def load(cls, repository: Path, version: int, backend: str | ArrayBackend,
             allow_unverified: bool = False) -> ModelVersion:  # fmt: skip
        """Read ``<repository>/catalogue_scorer/<version>/``; raise :class:`ArtifactError`
        (``allow_unverified``: see :func:`verify_loaded_files`)."""
        directory = Path(repository) / ARTIFACT_MODEL / str(version)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            verify_loaded_files(directory, manifest, version, allow_unverified)
            vocab = Vocabulary.load(directory / VOCAB_DIR)
            plays = sp.load_npz(directory / PLAYS).tocsr()
            table = sp.load_npz(directory / ITEM_NEIGHBOURS).tocsr()
            ease = sp.load_npz(directory / EASE_NEIGHBOURS).tocsr()
            als = AlsFactors.load(directory / ALS_FACTORS)
            tags = _tag_table(directory, manifest, version)
            two_stage = TwoStageSettings.from_dict(manifest.get("two_stage"))
            candidates = CandidateIndex(plays, table, two_stage.candidates, ease, als, tags)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"version {version} in {directory}: {exc}") from exc
        if plays.shape != (vocab.n_users, vocab.n_artists):
            raise ArtifactError(f"version {version}: plays {plays.shape} do not fit the vocabulary")
        expected = manifest.get("vocab_fingerprint")
        if expected and expected != vocab.fingerprint():
            raise ArtifactError(f"version {version}: vocabulary does not match its manifest")
        listeners = np.diff(plays.tocsc().indptr)
        return cls(
            version=version,
            vocab=vocab,
            plays=plays,
            similarity=SimilarityIndex(plays, backend),
            manifest=manifest,
            users=vocab.user_index(),
            artists=ArtistLookup.of(vocab),
            listeners=listeners.astype(np.float32),
            popular=np.argsort(-listeners, kind="stable"),
            two_stage=two_stage,
            candidates=candidates,
        )

    @property
    def n_artists(self) -> int:
        return self.vocab.n_artists

    @property
    def features(self) -> tuple[str, ...]:
        """The ranker's features this version's candidates give (its manifest's names)."""
        return ranker_features(self.candidates.tags is not None)

    def user(self, user_id: str) -> int | None:
        """Row of a known user who has plays, else None."""
        u = self.users.get(user_id)
        return u if u is not None and self.plays.indptr[u + 1] > self.plays.indptr[u] else None

    def resolve(self, items: Sequence[ArtistRef]) -> ResolvedHistory:
        """Map artist ids / names (case-insensitive) to columns, summing the plays of repeated
        artists in float64 (capped at :data:`MAX_PLAYS`); unknown items are listed once each."""
        sums: dict[int, float] = {}
        unknown: dict[str, None] = {}
        for item in items:
            if item.id is not None:
                col = self.artists.by_artist_id(item.id)
            else:
                col = self.artists.by_artist_name(item.name or "")
            if col is None:
                unknown[item.id if item.id is not None else item.name or ""] = None
                continue
            total = sums.get(col, 0.0) + float(item.plays)
            if not math.isfinite(total):
                raise InvalidArgument(f"history: the plays of {item.id or item.name!r} do not "
                                      "sum to a finite number")  # fmt: skip
            sums[col] = total
        cols = np.fromiter(sums.keys(), np.int64, len(sums))
        plays = np.minimum(np.fromiter(sums.values(), np.float64, len(sums)), MAX_PLAYS)
        order = np.argsort(cols)
        row = sp.csr_matrix((plays[order].astype(np.float32), cols[order], [0, len(cols)]),
                            shape=(1, self.n_artists))  # fmt: skip
        return ResolvedHistory(row, tuple(unknown))
