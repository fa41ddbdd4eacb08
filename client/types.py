"""What the client returns and raises."""

from __future__ import annotations

from dataclasses import dataclass

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
