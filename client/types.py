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
    recommendation_id: str = ""  # what Feedback names this answer by ("" from an old gateway)

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
            recommendation_id=r.recommendation_id,
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


_ACTION_PREFIX = "FEEDBACK_ACTION_"
# Feedback actions by name, as the generated API defines them ("played" -> enum value).
FEEDBACK_ACTIONS: dict[str, int] = {
    name.removeprefix(_ACTION_PREFIX).lower(): value
    for name, value in pb.FeedbackAction.items()
    if value != pb.FEEDBACK_ACTION_UNSPECIFIED
}


@dataclass(frozen=True)
class FeedbackEvent:
    """What a listener did with one served artist, given by ``artist_id`` or ``name``;
    ``action`` one of :data:`FEEDBACK_ACTIONS` (played, skipped, saved, dismissed);
    ``play_count`` for PLAYED (None: 1)."""

    action: str = "played"
    artist_id: str | None = None
    name: str | None = None
    play_count: float | None = None

    def __post_init__(self) -> None:
        if (self.artist_id is None) == (self.name is None):
            raise ValueError("give either artist_id or name")
        if self.action not in FEEDBACK_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(FEEDBACK_ACTIONS)}, "
                             f"got {self.action!r}")  # fmt: skip
        if self.play_count is not None and not self.play_count > 0:
            raise ValueError(f"play_count must be > 0, got {self.play_count}")

    def to_proto(self) -> pb.FeedbackEvent:
        artist = {"id": self.artist_id} if self.artist_id is not None else {"name": self.name}
        return pb.FeedbackEvent(**artist, action=FEEDBACK_ACTIONS[self.action],
                                play_count=self.play_count)  # fmt: skip


@dataclass(frozen=True)
class Attribution:
    """Where the gateway credited an event: the version (and interleaving team, "" when not
    interleaved) that placed the artist, at 1-based ``rank``."""

    artist_id: str
    model_version: int
    rank: int
    team: str = ""

    @classmethod
    def from_proto(cls, a: pb.Attribution) -> Attribution:
        return cls(a.artist_id, a.model_version, a.rank, a.team)
