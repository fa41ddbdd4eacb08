"""What the client returns and raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from musicrec.v1 import recommender_pb2 as pb

_PREFIX = "SCORING_MODE_"
# Scoring modes by name, as the generated API defines them ("all_artists" -> enum value).
SCORING_MODES: dict[str, int] = {
    name.removeprefix(_PREFIX).lower(): value
    for name, value in pb.ScoringMode.items()
    if value != pb.SCORING_MODE_UNSPECIFIED
}
_MODE_NAMES = {value: name for name, value in SCORING_MODES.items()}


@dataclass(frozen=True)
class Credentials:
    """How the client checks the gateway and proves itself: TLS against ``ca_file`` (the
    gateway's CA; the system's roots when None), mutual TLS with ``cert_file``/``key_file``,
    and a bearer ``token``. All None: plaintext (the default on 127.0.0.1 only)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None
    tls: bool = False  # TLS with the system's roots even without ca_file

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file (mutual TLS), or neither")

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file),
                                            read(self.cert_file))  # fmt: skip


class RecommenderError(Exception):
    """A failed call: ``code`` is the gRPC status (e.g. NOT_FOUND), ``details`` the reason."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> RecommenderError:
        return cls(error.code(), error.details() or "")


@dataclass(frozen=True)
class Artist:
    id: str
    name: str
    score: float


@dataclass(frozen=True)
class SimilarUser:
    user_id: str
    similarity: float


@dataclass(frozen=True)
class Recommendation:
    """Ranked artists, the model version that scored them and why (similar users)."""

    artists: list[Artist]
    model_version: int
    similar_users: list[SimilarUser]
    popularity_fallback: bool
    unknown_artists: list[str]  # distinct, at most the first 100
    scoring: str
    unknown_artist_count: int = 0  # distinct unknown items in all
    all_played: bool = False  # the listener plays all but fewer than k artists: a short list

    def names(self) -> list[str]:
        return [a.name for a in self.artists]

    @classmethod
    def from_proto(cls, r: pb.RecommendResponse) -> Recommendation:
        return cls(
            artists=[Artist(a.id, a.name, a.score) for a in r.artists],
            model_version=r.model_version,
            similar_users=[SimilarUser(u.user_id, u.similarity) for u in r.similar_users],
            popularity_fallback=r.fallback == pb.FALLBACK_POPULARITY,
            unknown_artists=list(r.unknown_artists),
            scoring=_MODE_NAMES.get(r.scoring, "popularity"),
            unknown_artist_count=r.unknown_artist_count or len(r.unknown_artists),
            all_played=r.all_played,
        )


@dataclass(frozen=True)
class ServingInfo:
    """The version the gateway serves (0: none yet) and where it came from."""

    model_version: int
    triton_up: bool
    users: int
    artists: int
    created: str
    source_run: str
    default_scoring: str

    @classmethod
    def from_proto(cls, r: pb.ServingInfoResponse) -> ServingInfo:
        return cls(r.model_version, r.triton_up, r.users, r.artists, r.created, r.source_run,
                   _MODE_NAMES.get(r.default_scoring, ""))  # fmt: skip


@dataclass(frozen=True)
class SimilarUsers:
    users: list[SimilarUser]
    model_version: int
    unknown_artists: list[str]  # distinct, at most the first 100
    unknown_artist_count: int = 0

    @classmethod
    def from_proto(cls, r: pb.SimilarUsersResponse) -> SimilarUsers:
        return cls(
            [SimilarUser(u.user_id, u.similarity) for u in r.users],
            r.model_version,
            list(r.unknown_artists),
            r.unknown_artist_count or len(r.unknown_artists),
        )
