"""The ``musicrec.v1.Recommender`` servicer: validate, call the service, translate errors.

Each Recommend answer gets a ``recommendation_id`` and is kept for ``Feedback``
(``gateway/feedback.py``), which is answered on the event loop without a model call.

Every bad field is an INVALID_ARGUMENT naming the field; no bad input reaches INTERNAL. A long
history (more than ``INLINE_HISTORY`` items, up to 10,000 / 4 MiB) is checked in a worker
thread, so its per-item checks never stall the event loop (health checks, other requests).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import unicodedata
from pathlib import Path

import grpc

from core.modes import MODES
from gateway.artifacts import ArtistRef
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, InvalidArgument
from gateway.feedback import (
    ACTIONS,
    Event,
    FeedbackService,
    ImpressionStore,
    check_events,
    new_recommendation_id,
)
from gateway.recommender import (
    INLINE_HISTORY,
    Deadline,
    Listener,
    Neighbour,
    Query,
    RecommendationService,
    RecommendResult,
)
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
# The registry's modes by their proto enum value (a mode missing from the proto fails here).
MODE_BY_ENUM = {pb.ScoringMode.Value(m.proto_name): name for name, m in MODES.items()}
ENUM_BY_MODE = {name: value for value, name in MODE_BY_ENUM.items()}
MAX_ID_LENGTH = 1024
# Unicode's category Cc (control characters) is exactly these code points; one regular
# expression scans a name in C instead of a Python call per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_ASCII = bytes([*range(0x20), 0x7F])  # the same, within ASCII
MAX_UNKNOWN_LISTED = 100  # unknown artists named in an answer; the count says how many in all


def _in_range(field: str, value: int, default: int, limit: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= limit:
        raise InvalidArgument(f"{field} must be in 1..{limit}, got {value}")
    return value


def _text(field: str, value: str) -> str:
    """A non-empty id or name without control characters, NFC-normalised."""
    if not value.strip():
        raise InvalidArgument(f"{field} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{field} is longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidArgument(f"{field} contains control characters")
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


def _plain(value: str) -> bool:
    """An ASCII text without control characters, not blank and not too long: valid and NFC
    as it is (checked ~5x faster than by the regular expression)."""
    if not (value.isascii() and len(value) <= MAX_ID_LENGTH and value.strip()):
        return False
    return len(value.encode("ascii").translate(None, _CONTROL_ASCII)) == len(value)


def parse_listener(request: pb.RecommendRequest | pb.SimilarUsersRequest, max_history: int):
    """The request's ``user_id`` or ``history`` as a :class:`Listener`."""
    which = request.WhichOneof("listener")
    if which is None:
        raise InvalidArgument("set user_id or history")
    if which == "user_id":
        return Listener(user_id=_text("user_id", request.user_id))
    items = request.history.items
    if len(items) > max_history:
        raise InvalidArgument(f"history has {len(items)} items; at most {max_history} allowed")
    return Listener(history=_history(items))


def _history(items) -> tuple[ArtistRef, ...]:
    """The history's items as :class:`ArtistRef`, each checked (an ASCII text is NFC as it
    is); the error names the first bad item."""
    refs = []
    for i, item in enumerate(items):
        key = item.WhichOneof("artist")
        if key is None:
            raise InvalidArgument(f"history.items[{i}]: set id or name")
        plays = item.plays
        if not math.isfinite(plays) or plays < 0:
            raise InvalidArgument(f"history.items[{i}].plays must be finite and >= 0, got {plays}")
        value = getattr(item, key)
        if not _plain(value):
            value = _text(f"history.items[{i}].{key}", value)  # raises, or NFC-normalises
        if key == "id":
            refs.append(ArtistRef(id=value, plays=plays or 1.0))
        else:
            refs.append(ArtistRef(name=value, plays=plays or 1.0))
    return tuple(refs)


def parse_recommend(request: pb.RecommendRequest, cfg: GatewayConfig) -> Query:
    """Validate a ``RecommendRequest`` into a :class:`Query`."""
    if request.scoring not in (pb.SCORING_MODE_UNSPECIFIED, *MODE_BY_ENUM):
        raise InvalidArgument(f"scoring: unknown mode {request.scoring}")
    return Query(
        listener=parse_listener(request, cfg.max_history),
        k=_in_range("k", request.k, cfg.default_k, cfg.max_k),
        exclude_played=request.exclude_played if request.HasField("exclude_played") else True,
        strict=request.strict,
        mode=MODE_BY_ENUM.get(request.scoring, cfg.scoring),
        neighbours=_in_range("neighbours", request.neighbours, cfg.neighbours, cfg.max_neighbours),
    )


def _users(users: list[Neighbour]) -> list[pb.SimilarUser]:
    return [pb.SimilarUser(user_id=u.user_id, similarity=u.similarity) for u in users]


def to_response(result: RecommendResult, rec_id: str = "") -> pb.RecommendResponse:
    return pb.RecommendResponse(
        recommendation_id=rec_id,
        artists=[pb.ScoredArtist(id=a.id, name=a.name, score=a.score) for a in result.artists],
        model_version=result.version,
        similar_users=_users(result.similar_users),
        fallback=pb.FALLBACK_POPULARITY if result.fallback else pb.FALLBACK_NONE,
        unknown_artists=list(result.unknown_artists[:MAX_UNKNOWN_LISTED]),
        unknown_artist_count=len(result.unknown_artists),
        scoring=ENUM_BY_MODE.get(result.mode, pb.SCORING_MODE_UNSPECIFIED),
        all_played=result.all_played,
    )


# FeedbackAction enum values by the action names of gateway/feedback.py
ACTION_BY_ENUM = {pb.FeedbackAction.Value(f"FEEDBACK_ACTION_{a.upper()}"): a for a in ACTIONS}


def parse_feedback(request: pb.FeedbackRequest) -> tuple[str, list[Event]]:
    """Validate a ``FeedbackRequest``: its id and :class:`Event` s (the error names the field)."""
    rec_id = request.recommendation_id
    if not rec_id:
        raise InvalidArgument("recommendation_id must be set (RecommendResponse's)")
    if len(rec_id) > 64 or not rec_id.isascii():
        raise InvalidArgument("recommendation_id is not one this gateway gives")
    check_events(len(request.events))
    return rec_id, [_event(i, e) for i, e in enumerate(request.events)]


def _event(i: int, event: pb.FeedbackEvent) -> Event:
    action = ACTION_BY_ENUM.get(event.action)
    if action is None:
        names = ", ".join(a.upper() for a in ACTIONS)
        raise InvalidArgument(f"events[{i}].action must be one of {names}, got {event.action}")
    key = event.WhichOneof("artist")
    if key is None:
        raise InvalidArgument(f"events[{i}]: set id or name")
    value = getattr(event, key)
    if not _plain(value):
        value = _text(f"events[{i}].{key}", value)
    plays = event.play_count if event.HasField("play_count") else 1.0
    if not (math.isfinite(plays) and plays > 0):
        raise InvalidArgument(f"events[{i}].play_count must be finite and > 0, got {plays}")
    return Event(action, **{"artist_id" if key == "id" else "name": value}, play_count=plays)


def listener_log_key(listener: Listener) -> str:
    """The listener as the event log records them: ``user:<id>`` for a known user, else
    ``history:`` and a hash of the history's distinct case-folded artists (the split's key,
    ``core.traffic_split.listener_key``, hashed so a long history stays short)."""
    if listener.user_id is not None:
        return "user:" + listener.user_id
    items = sorted({(a.id if a.id is not None else a.name or "").casefold()
                    for a in listener.history or ()})  # fmt: skip
    digest = hashlib.blake2b("\x1f".join(items).encode(), digest_size=16).hexdigest()
    return "history:" + digest


def _long(request: pb.RecommendRequest | pb.SimilarUsersRequest) -> bool:
    """Whether the request's history is long enough to be checked off the event loop."""
    return request.WhichOneof("listener") == "history" and (
        len(request.history.items) > INLINE_HISTORY
    )


class RecommenderServicer(pb_grpc.RecommenderServicer):
    """gRPC face of :class:`RecommendationService`."""

    def __init__(self, service: RecommendationService, config: GatewayConfig,
                 feedback: FeedbackService | None = None) -> None:  # fmt: skip
        self.service = service
        self.config = config
        self.feedback = feedback or FeedbackService(
            ImpressionStore(config.feedback_max_entries, config.feedback_ttl_s), service.metrics
        )

    async def Recommend(  # gRPC method name
        self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendResponse:
        try:
            if _long(request):
                query = await asyncio.to_thread(parse_recommend, request, self.config)
            else:
                query = parse_recommend(request, self.config)
            deadline = Deadline(context.time_remaining(), self.config.triton_timeout_s)
            result = await self.service.recommend(query, deadline)
            self.service.metrics.served_by(result.version, result.fallback)
            with self.service.metrics.stage("response"):
                return to_response(result, await self._served(query, result, _long(request)))
        except GatewayError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("Recommend failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")

    async def _served(self, query: Query, result: RecommendResult, long: bool) -> str:
        """Keep the answer for Feedback under its id (the listener's key only when an event
        log records it; a long history's hashed off the loop). A result that carries
        ``recommendation_id``, ``teams`` or ``versions`` (an interleaved answer,
        ``gateway/rollout.py``: its id seeds the draft, each position has its team and
        version; ``candidate_version`` names the candidate) is kept with them."""
        rec_id = getattr(result, "recommendation_id", "") or new_recommendation_id()
        listener = ""
        if self.feedback.logs_listeners:
            if long:
                listener = await asyncio.to_thread(listener_log_key, query.listener)
            else:
                listener = listener_log_key(query.listener)
        self.feedback.served(rec_id, result.version, [(a.id, a.name) for a in result.artists],
                             result.mode, listener=listener, teams=getattr(result, "teams", None),
                             versions=getattr(result, "versions", None),
                             candidate=getattr(result, "candidate_version", None))  # fmt: skip
        return rec_id

    async def Feedback(  # gRPC method name
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.FeedbackResponse:
        try:
            try:
                rec_id, events = parse_feedback(request)
            except InvalidArgument:
                self.service.metrics.unattributed("invalid", max(1, len(request.events)))
                raise
            credits = self.feedback.feedback(rec_id, events)
        except GatewayError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("Feedback failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")
        return pb.FeedbackResponse(attributions=[
            pb.Attribution(artist_id=c.artist_id, model_version=c.version, rank=c.rank,
                           team=c.team) for c in credits
        ])  # fmt: skip

    async def ServingInfo(  # gRPC method name
        self, request: pb.ServingInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServingInfoResponse:
        tracker = self.service.tracker
        mv = tracker.current
        info = pb.ServingInfoResponse(
            triton_up=tracker.triton_up,
            default_scoring=ENUM_BY_MODE[self.config.scoring],
        )
        if mv is not None:
            info.model_version = mv.version
            info.users, info.artists = mv.vocab.n_users, mv.n_artists
            info.created = str(mv.manifest.get("created", ""))
            # the run's name only: an absolute path would tell callers about the host
            info.source_run = Path(str(mv.manifest.get("source_run", ""))).name
        return info

    async def SimilarUsers(  # gRPC method name
        self, request: pb.SimilarUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarUsersResponse:
        try:
            limit = self.config.max_history
            if _long(request):
                listener = await asyncio.to_thread(parse_listener, request, limit)
            else:
                listener = parse_listener(request, limit)
            n = _in_range("n", request.n, self.config.neighbours, self.config.max_neighbours)
            result = await self.service.similar_users(listener, n)
            self.service.metrics.served_by(result.version)
        except GatewayError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("SimilarUsers failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the gateway log")
        return pb.SimilarUsersResponse(
            users=_users(result.users),
            model_version=result.version,
            unknown_artists=list(result.unknown_artists[:MAX_UNKNOWN_LISTED]),
            unknown_artist_count=len(result.unknown_artists),
        )
