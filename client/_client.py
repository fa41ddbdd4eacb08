"""Sync and asyncio clients with the same methods; requests are checked before they are sent.

Calls carry a deadline (``timeout_s``) and an ``x-request-id`` (the gateway logs it on every line
and hands it to Triton), and are retried by gRPC itself on UNAVAILABLE (a gateway restarting, a
redeploy), with exponential backoff, through the channel's service config.

Checked here: what the generated API defines (a known scoring mode, one listener, counts of at
least 1). The gateway's configurable limits (``--max-k``, ``--max-neighbours``...) are checked
by the gateway, which answers INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.types import (
    SCORING_MODES,
    Attribution,
    Credentials,
    FeedbackEvent,
    Recommendation,
    RecommenderError,
    ServingInfo,
    SimilarUsers,
)
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
REQUEST_ID_HEADER = "x-request-id"
_RETRY = {
    "methodConfig": [{
        "name": [{"service": "musicrec.v1.Recommender"}, {"service": "grpc.health.v1.Health"}],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
    # Retries stop after a net 50 failed attempts (each success earns back a tenth): an outage
    # is not multiplied, but a gateway dying under 16+ calls in flight retries them all (with
    # 10 tokens, retries stopped after the first 5 and the rest failed).
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    # A target naming several gateways spreads calls over the healthy ones.
    "loadBalancingConfig": [{"round_robin": {}}],
}  # fmt: skip
CHANNEL_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(_RETRY))]

Artists = Sequence[str] | Mapping[str, float] | None


def _history(artists: Artists, artist_ids: Artists) -> pb.History:
    items = []
    for key, given in (("name", artists), ("id", artist_ids)):
        plays = given if isinstance(given, Mapping) else dict.fromkeys(given or (), 0.0)
        for value, count in plays.items():
            items.append(pb.ArtistPlay(**{key: value}, plays=count))
    return pb.History(items=items)


def _listener(user_id: str | None, artists: Artists, artist_ids: Artists) -> dict:
    if (user_id is None) == (artists is None and artist_ids is None):
        raise ValueError("give either user_id or artists/artist_ids")
    return {"user_id": user_id} if user_id is not None else {
        "history": _history(artists, artist_ids)}  # fmt: skip


def recommend_request(
    user_id: str | None = None,
    artists: Artists = None,
    *,
    artist_ids: Artists = None,
    k: int = 10,
    exclude_played: bool = True,
    strict: bool = False,
    scoring: str | None = None,
    neighbours: int = 0,
) -> pb.RecommendRequest:
    """Build and check a request: ``artists`` are names (optionally ``{name: plays}``);
    ``scoring`` is a mode name (None: the gateway's default)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if scoring is not None and scoring not in SCORING_MODES:
        raise ValueError(f"scoring must be one of {', '.join(SCORING_MODES)}, got {scoring!r}")
    return pb.RecommendRequest(
        **_listener(user_id, artists, artist_ids), k=k, exclude_played=exclude_played,
        strict=strict, neighbours=neighbours,
        scoring=pb.SCORING_MODE_UNSPECIFIED if scoring is None else SCORING_MODES[scoring],
    )  # fmt: skip


def similar_users_request(
    user_id: str | None = None, artists: Artists = None, *, artist_ids: Artists = None, n: int = 10
) -> pb.SimilarUsersRequest:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return pb.SimilarUsersRequest(**_listener(user_id, artists, artist_ids), n=n)


MAX_FEEDBACK_EVENTS = 500


def feedback_request(recommendation_id: str, events: Sequence[FeedbackEvent]) -> pb.FeedbackRequest:
    """Build and check a Feedback request (1..500 events for one answer's id)."""
    if not recommendation_id:
        raise ValueError("recommendation_id is empty: the answer came from a gateway without "
                         "Feedback")  # fmt: skip
    if not 1 <= len(events) <= MAX_FEEDBACK_EVENTS:
        raise ValueError(f"give 1..{MAX_FEEDBACK_EVENTS} events, got {len(events)}")
    return pb.FeedbackRequest(recommendation_id=recommendation_id,
                              events=[e.to_proto() for e in events])  # fmt: skip


def _attributions(reply: pb.FeedbackResponse) -> list[Attribution]:
    return [Attribution.from_proto(a) for a in reply.attributions]


def _status_name(reply: health_pb2.HealthCheckResponse) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _metadata(request_id: str | None, token: str | None) -> tuple[tuple[str, str], ...]:
    rid = ((REQUEST_ID_HEADER, request_id or uuid.uuid4().hex),)
    return (*rid, ("authorization", f"Bearer {token}")) if token else rid


def _channel(address: str, credentials: Credentials, aio: bool):
    grpc_ = grpc.aio if aio else grpc
    if credentials.uses_tls:
        return grpc_.secure_channel(address, credentials.channel_credentials(),
                                    options=CHANNEL_OPTIONS)  # fmt: skip
    return grpc_.insecure_channel(address, options=CHANNEL_OPTIONS)


class RecommenderClient:
    """Blocking client; use as a context manager or call :meth:`close`. ``address`` may name
    several gateways (``ipv4:10.0.0.1:50051,10.0.0.2:50051`` or ``dns:///gateway:50051``);
    ``credentials`` turn on TLS, mutual TLS and a bearer token."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float = 5.0,
                 credentials: Credentials | None = None) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self.credentials = credentials or Credentials()
        self._channel = _channel(address, self.credentials, aio=False)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, method, request, timeout_s: float | None, request_id: str | None = None):
        try:
            return method(request, timeout=timeout_s or self.timeout_s,
                          metadata=_metadata(request_id, self.credentials.token))  # fmt: skip
        except grpc.RpcError as exc:
            raise RecommenderError.from_rpc(exc) from None

    def recommend(self, user_id: str | None = None, artists: Artists = None, *,
                  timeout_s: float | None = None, request_id: str | None = None,
                  **options) -> Recommendation:  # fmt: skip
        """Top-k artists for a known ``user_id`` or a new listener's ``artists`` (names) /
        ``artist_ids``; options: ``k``, ``exclude_played``, ``strict``, ``scoring``,
        ``neighbours``. ``request_id`` tags the call in the gateway's logs (default: a fresh
        one). Raises :class:`RecommenderError` or ``ValueError``."""
        request = recommend_request(user_id, artists, **options)
        reply = self._call(self._stub.Recommend, request, timeout_s, request_id)
        return Recommendation.from_proto(reply)

    def similar_users(self, user_id: str | None = None, artists: Artists = None, *,
                      timeout_s: float | None = None, request_id: str | None = None,
                      **options) -> SimilarUsers:  # fmt: skip
        """The known users most similar to a user or a history (``n``, ``artist_ids``)."""
        request = similar_users_request(user_id, artists, **options)
        reply = self._call(self._stub.SimilarUsers, request, timeout_s, request_id)
        return SimilarUsers.from_proto(reply)

    def feedback(self, recommendation_id: str, events: Sequence[FeedbackEvent], *,
                 timeout_s: float | None = None,
                 request_id: str | None = None) -> list[Attribution]:  # fmt: skip
        """Tell the gateway what the listener did with an answer (``Recommendation
        .recommendation_id``); returns where each event was credited. NOT_FOUND: the id is
        unknown or expired; INVALID_ARGUMENT: an artist not in that answer (nothing recorded)."""
        request = feedback_request(recommendation_id, events)
        return _attributions(self._call(self._stub.Feedback, request, timeout_s, request_id))

    def serving_info(self, timeout_s: float | None = None) -> ServingInfo:
        """The model version the gateway answers with now (0: none yet)."""
        reply = self._call(self._stub.ServingInfo, pb.ServingInfoRequest(), timeout_s)
        return ServingInfo.from_proto(reply)

    def health(self, timeout_s: float | None = None) -> str:
        """``SERVING``, ``NOT_SERVING``... from the standard gRPC health service."""
        request = health_pb2.HealthCheckRequest()
        return _status_name(self._call(self._health.Check, request, timeout_s))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRecommenderClient:
    """asyncio client with the methods of :class:`RecommenderClient` (see there)."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float = 5.0,
                 credentials: Credentials | None = None) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self.credentials = credentials or Credentials()
        self._channel = _channel(address, self.credentials, aio=True)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def _call(self, method, request, timeout_s: float | None,
                    request_id: str | None = None):  # fmt: skip
        try:
            return await method(request, timeout=timeout_s or self.timeout_s,
                                metadata=_metadata(request_id, self.credentials.token))  # fmt: skip
        except grpc.RpcError as exc:
            raise RecommenderError.from_rpc(exc) from None

    async def recommend(self, user_id: str | None = None, artists: Artists = None, *,
                        timeout_s: float | None = None, request_id: str | None = None,
                        **options) -> Recommendation:  # fmt: skip
        """See :meth:`RecommenderClient.recommend`."""
        request = recommend_request(user_id, artists, **options)
        reply = await self._call(self._stub.Recommend, request, timeout_s, request_id)
        return Recommendation.from_proto(reply)

    async def similar_users(self, user_id: str | None = None, artists: Artists = None, *,
                            timeout_s: float | None = None, request_id: str | None = None,
                            **options) -> SimilarUsers:  # fmt: skip
        """See :meth:`RecommenderClient.similar_users`."""
        request = similar_users_request(user_id, artists, **options)
        reply = await self._call(self._stub.SimilarUsers, request, timeout_s, request_id)
        return SimilarUsers.from_proto(reply)

    async def feedback(self, recommendation_id: str, events: Sequence[FeedbackEvent], *,
                       timeout_s: float | None = None,
                       request_id: str | None = None) -> list[Attribution]:  # fmt: skip
        """See :meth:`RecommenderClient.feedback`."""
        request = feedback_request(recommendation_id, events)
        reply = await self._call(self._stub.Feedback, request, timeout_s, request_id)
        return _attributions(reply)

    async def serving_info(self, timeout_s: float | None = None) -> ServingInfo:
        """See :meth:`RecommenderClient.serving_info`."""
        reply = await self._call(self._stub.ServingInfo, pb.ServingInfoRequest(), timeout_s)
        return ServingInfo.from_proto(reply)

    async def health(self, timeout_s: float | None = None) -> str:
        """See :meth:`RecommenderClient.health`."""
        request = health_pb2.HealthCheckRequest()
        return _status_name(await self._call(self._health.Check, request, timeout_s))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
