"""What the gateway does for one request, independent of gRPC.

A known user (one the served model was trained on) is scored with their own embedding, a group
of one. A new listener's history goes through the similar-user lookup: their ``neighbours``
most similar known users, whose scores are summed weighted by similarity, as in the seed. A
history with no artist the model knows gets the most-listened artists instead, flagged as a
popularity fallback (or INVALID_ARGUMENT when the caller asked for ``strict``).

In the ``ranked`` (default) and ``two_stage`` modes the listener's similar users (a known
user's own, never themselves) also give stage 1's candidates (``core.candidates``), which
Triton ranks: ``ranked`` with the version's learned ranker inside ``candidate_ranker``,
``two_stage`` with the version's blend for known users or for histories (both tuned on
validation at training).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from core.candidates import Candidates
from core.modes import DEFAULT_MODE, MODES
from core.vocabulary import ScoredArtist
from gateway.artifacts import ArtistRef, ModelVersion
from gateway.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
    VersionRetired,
)
from gateway.metrics import GatewayMetrics
from gateway.modes import ModeScorer, ScoringRequest
from gateway.versions import VersionTracker

INLINE_HISTORY = 64  # longer histories are resolved and matched off the event loop
KNOWN_CACHE = 4096  # known users whose stage 1 is kept (GatewayConfig.known_user_cache)


@dataclass(frozen=True)
class Listener:
    """Who a request is about: a known ``user_id`` or an artist ``history``."""

    user_id: str | None = None
    history: tuple[ArtistRef, ...] | None = None


@dataclass(frozen=True)
class Query:
    listener: Listener
    k: int = 10
    exclude_played: bool = True
    strict: bool = False
    mode: str = DEFAULT_MODE
    neighbours: int = 10


@dataclass(frozen=True)
class Neighbour:
    """A known user similar to the listener, and how similar."""

    user_id: str
    similarity: float


@dataclass(frozen=True)
class RecommendResult:
    """What the gateway answers a Recommend with, before it becomes a proto message.
    ``all_played``: ``exclude_played`` left fewer than k artists of the catalogue (the history
    plays the rest), so the answer is short or empty for that reason."""

    artists: list[ScoredArtist]
    version: int
    similar_users: list[Neighbour]
    fallback: bool
    unknown_artists: tuple[str, ...]
    mode: str
    all_played: bool = False


@dataclass(frozen=True)
class SimilarUsersResult:
    users: list[Neighbour]
    version: int
    unknown_artists: tuple[str, ...]


@dataclass(frozen=True)
class _Group:
    """Known users to score for a listener, their weights, and what the listener plays."""

    users: np.ndarray
    weights: np.ndarray
    played: np.ndarray
    unknown: tuple[str, ...]
    candidates: Candidates | None = None
    known_user: bool = False


class Deadline:
    """The time an RPC's Triton calls may take, every attempt together (a canary's, its retry
    on the serving version, a retired version's retry): what is left of the caller's deadline
    (if any), and never past ``cap_s`` (``triton_timeout_s``) from the RPC's start."""

    def __init__(self, remaining_s: float | None, cap_s: float, *,
                 until: float | None = None) -> None:  # fmt: skip
        now = time.monotonic()
        self.caller_until = None if remaining_s is None else now + remaining_s
        self.cap_s = cap_s
        self.until = now + cap_s if until is None else until  # the gateway's own budget

    def expired(self) -> bool:
        """Whether the caller's deadline passed (not the gateway's budget)."""
        return self.caller_until is not None and time.monotonic() >= self.caller_until

    def _end(self) -> float:
        return self.until if self.caller_until is None else min(self.until, self.caller_until)

    def left(self) -> float:
        """Seconds left for the next Triton call; :class:`DeadlineExceeded` when none."""
        left = self._end() - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed while the request was being served")
        return left

    def part(self, share: float) -> Deadline:
        """A deadline for one attempt that keeps the rest for a retry: ``share`` of the time
        left, the caller's deadline unchanged."""
        now = time.monotonic()
        part = Deadline(None, self.cap_s, until=now + share * max(0.0, self._end() - now))
        part.caller_until = self.caller_until
        return part


class RecommendationService:
    """Resolve the listener, find similar users, score through Triton, rank and name."""

    def __init__(
        self,
        tracker: VersionTracker,
        modes: dict[str, ModeScorer],
        metrics: GatewayMetrics,
        known_cache: int = KNOWN_CACHE,
    ) -> None:
        self.tracker = tracker
        self.modes = modes
        self.metrics = metrics
        self.known_cache = known_cache
        self._known: OrderedDict[tuple, Candidates] = OrderedDict()

    async def recommend(self, query: Query, deadline: Deadline) -> RecommendResult:
        """Top-``k`` artists; retried once on a fresh version if a swap retired the pinned one.
        Triton timing out before the caller's deadline is UNAVAILABLE (worth a retry), after
        it DEADLINE_EXCEEDED."""
        try:
            try:
                return await self.answer(self.tracker.serving(), query, deadline)
            except VersionRetired:
                await self.tracker.refresh()
                return await self.answer(self.tracker.serving(), query, deadline)
        except DeadlineExceeded:
            if deadline.expired():
                raise
            raise Unavailable(f"Triton did not answer within {deadline.cap_s:g} s") from None

    async def answer(self, mv: ModelVersion, q: Query, deadline: Deadline, *,
                     counted: bool = True) -> RecommendResult:  # fmt: skip
        """One attempt at ``q`` on ``mv``: the RPC's outcome and time from here are ``mv``'s
        (``GatewayMetrics.attempt``) unless not ``counted`` (a shadow's copy)."""
        if counted:
            self.metrics.attempt(mv.version)
        return await self._recommend(mv, q, deadline)

    async def similar_users(self, listener: Listener, n: int) -> SimilarUsersResult:
        """The ``n`` known users most similar to the listener, best first (a long history is
        resolved off the event loop)."""
        if is_heavy(listener):
            return await asyncio.to_thread(self._similar_users, listener, n)
        return self._similar_users(listener, n)

    def _similar_users(self, listener: Listener, n: int) -> SimilarUsersResult:
        """The ``n`` known users most similar to the listener, best first."""
        mv = self.tracker.serving()
        if listener.user_id is not None:
            u = self._known_user(mv, listener.user_id)
            if mv.user(listener.user_id) is None:  # listed without plays: nobody is similar
                return SimilarUsersResult([], mv.version, ())
            idx, sims = self._lookup(mv, mv.plays[u], n, exclude=u)
            return SimilarUsersResult(_similar(mv, idx, sims), mv.version, ())
        resolved = mv.resolve(listener.history or ())
        idx, sims = self._lookup(mv, resolved.row, n)
        return SimilarUsersResult(_similar(mv, idx, sims), mv.version, resolved.unknown)

    async def _recommend(self, mv: ModelVersion, q: Query, deadline: Deadline) -> RecommendResult:
        if is_heavy(q.listener):  # CPU work that would stall health checks: a worker thread
            group = await asyncio.to_thread(self._group, mv, q)
        else:
            group = self._group(mv, q)
        exclude = group.played if q.exclude_played else np.zeros(0, np.int64)
        all_played = mv.n_artists - len(exclude) < q.k  # group.played holds distinct columns
        if len(group.users) == 0:
            if q.strict:
                raise InvalidArgument(_no_match_message(q, mv))
            return self._popular(mv, q, exclude, group.unknown, all_played)
        self.tracker.check_mode(mv.version, q.mode)  # UNAVAILABLE naming a model not ready
        blend = mv.two_stage.known if group.known_user else mv.two_stage.history
        request = ScoringRequest(mv.version, mv.n_artists, group.users, group.weights, q.k,
                                 exclude, deadline.left(), group.candidates, blend,
                                 group.known_user)  # fmt: skip
        with self.metrics.triton_seconds.labels(q.mode).time(), self.metrics.stage("triton"):
            ranked = await self.modes[q.mode].top_k(request)
        if len(ranked.artists) == 0 and not all_played and not q.strict:
            # stage 1 left no candidate the listener does not play, the catalogue still has some
            return self._popular(mv, q, exclude, group.unknown, all_played)
        similar = _similar(mv, group.users, group.weights)
        return RecommendResult(mv.artists.named(ranked.artists, ranked.scores), mv.version,
                               similar, False, group.unknown, q.mode, all_played)  # fmt: skip

    def _popular(self, mv: ModelVersion, q: Query, exclude: np.ndarray,
                 unknown: tuple[str, ...], all_played: bool) -> RecommendResult:  # fmt: skip
        """The most-listened artists the listener does not play: the popularity fallback."""
        self.metrics.fallbacks.inc()
        top = mv.popular[~np.isin(mv.popular, exclude)][: q.k]
        return RecommendResult(mv.artists.named(top, mv.listeners[top]), mv.version, [], True,
                               unknown, "popularity", all_played)  # fmt: skip

    def _group(self, mv: ModelVersion, q: Query) -> _Group:
        staged = MODES[q.mode].uses_candidates
        if q.listener.user_id is not None:
            u = self._known_user(mv, q.listener.user_id)
            if mv.user(q.listener.user_id) is None:  # listed without plays: as an empty history
                return _Group(np.zeros(0, np.int64), np.zeros(0, np.float32),
                              np.zeros(0, np.int64), ())  # fmt: skip
            played = mv.plays.indices[mv.plays.indptr[u] : mv.plays.indptr[u + 1]]
            # candidates from the user's neighbours; their own embedding ranks
            candidates = self._known_candidates(mv, q, u) if staged else None
            return _Group(np.array([u]), np.ones(1, np.float32), played.astype(np.int64), (),
                          candidates, known_user=True)  # fmt: skip
        with self.metrics.stage("resolve"):
            resolved = mv.resolve(q.listener.history or ())
        if resolved.row.nnz == 0:
            return _Group(np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros(0, np.int64), resolved.unknown)  # fmt: skip
        idx, sims = self._lookup(mv, resolved.row, q.neighbours)
        keep = idx >= 0
        candidates = self._candidates(mv, q, resolved.row, idx, sims) if staged else None
        return _Group(idx[keep], sims[keep], resolved.artists.astype(np.int64), resolved.unknown,
                      candidates)  # fmt: skip

    def _known_candidates(self, mv: ModelVersion, q: Query, u: int) -> Candidates:
        """A known user's stage 1 depends only on the version and the request's neighbours
        and exclusion: computed once, then kept (least recently used out, at most
        ``known_cache`` users)."""
        key = (mv.version, u, q.neighbours, q.exclude_played)
        found = self._known.get(key)
        if found is not None:
            self._known.move_to_end(key)
            return found
        row = mv.plays[u]
        idx, sims = self._lookup(mv, row, q.neighbours, exclude=u)
        found = self._candidates(mv, q, row, idx, sims)
        if self.known_cache:
            self._known[key] = found
            while len(self._known) > self.known_cache:
                self._known.popitem(last=False)
        return found

    def _candidates(self, mv: ModelVersion, q: Query, row, idx, sims) -> Candidates:
        exclude = None if q.exclude_played else np.zeros(0, np.int64)
        with self.metrics.stage("candidates"):
            return mv.candidates.candidates(row, idx, sims, exclude)

    def _lookup(self, mv: ModelVersion, row, n: int, exclude: int | None = None):
        with self.metrics.similarity_seconds.time(), self.metrics.stage("similarity"):
            ex = None if exclude is None else np.array([exclude])
            idx, sims = mv.similarity.query(row, n, exclude=ex)
        return idx[0], sims[0]

    @staticmethod
    def _known_user(mv: ModelVersion, user_id: str) -> int:
        """The user's row; NOT_FOUND when ``mv``'s vocabulary does not list them."""
        u = mv.users.get(user_id)
        if u is None:
            raise NotFound(f"user_id {user_id!r} is not a known user of model version "
                           f"{mv.version}; send their artist history instead")  # fmt: skip
        return u


def is_heavy(listener: Listener) -> bool:
    """Whether the listener's history is long enough to be handled off the event loop."""
    return len(listener.history or ()) > INLINE_HISTORY


def _similar(mv: ModelVersion, idx: np.ndarray, sims: np.ndarray) -> list[Neighbour]:
    return [
        Neighbour(mv.vocab.user_ids[u], float(s))
        for u, s in zip(idx.tolist(), sims.tolist(), strict=True)
        if u >= 0
    ]


def _no_match_message(q: Query, mv: ModelVersion) -> str:
    if q.listener.user_id is not None:
        return (f"user_id {q.listener.user_id!r} has no plays in model version {mv.version} "
                "(strict: no popularity fallback)")  # fmt: skip
    items = q.listener.history or ()
    if not items:
        return "history is empty (strict: no popularity fallback)"
    return (f"history: none of its {len(items)} artists is known to model version {mv.version}, "
            "or no known user plays them (strict: no popularity fallback)")  # fmt: skip
