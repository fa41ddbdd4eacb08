"""Canary routing, interleaving and shadow traffic: the recommender service, split by the
repository's rollout file (``core/traffic_split.py``), which the version tracker reads at every
poll.

**Canary.** A listener whose stable hash falls in the canary's share is answered by the canary
version, once that version is ready on every Triton replica and its artifacts are loaded. A
canary request that fails for any reason the stack caused (Triton's error, UNAVAILABLE, the
version no longer ready, a deadline the caller still has time after) is answered again by the
serving version, so the client sees no error. Each such retry is counted in
``musicrec_gateway_canary_retries_total{version,code}``, and the failed attempt also under the
canary's version and code in ``musicrec_gateway_requests_by_version_total`` (so those count a
version's attempts: the RPC's answer is counted under the serving version too), where the
alert rules and the canary watcher (``serving/canary_watch.py``) see the canary's errors
although no client saw one, with the attempt's own time (never under the serving version).

A listener's key is a known user's id, or the artist ids their history resolves to in the
serving version (:func:`listener_key`): the same listener by ids, by names or by padded names
lands on the same side. A canary attempt gets :data:`CANARY_SHARE` of the RPC's time left
(``gateway/recommender.py``'s :class:`Deadline`: one budget for every attempt), so its retry
on the serving version still has the rest; a caller's deadline that passes during the attempt
fails the RPC as DEADLINE_EXCEEDED, charged to the canary. After :data:`BREAKER_FAILURES`
failures of the stack in a row the canary's breaker opens (:class:`Breaker`): for a back-off
its share goes straight to the serving version, each such request counted in
``musicrec_gateway_canary_diverted_total`` and as the canary's UNAVAILABLE by version (the
watcher keeps seeing a dead canary as failing), trips in
``musicrec_gateway_canary_breaker_trips_total``; failure warnings are logged at most once per
:data:`CANARY_LOG_INTERVAL_S`. ``musicrec_gateway_rollout_percent{role,version}`` says what
this gateway routes now (0 while the canary is not loaded or its breaker is open), which
``deploy abort`` waits on.

**Interleave.** A listener in the ``interleave_percent`` share (the canary's sticky hash, of
the candidate version) is asked of both versions at once, each for ``k`` artists within the
RPC's one budget (the candidate gets :data:`INTERLEAVE_SHARE` of the time left, so the answer
still leaves in time when it is slow), and answered with their team-draft interleaving
(``core/interleaving.py``), seeded by the answer's recommendation id: an
:class:`InterleavedResult`, whose id, per-position teams and versions the servicer keeps for
Feedback. ``k`` from each list always suffices: a team's cursor passes its own picks and the
other team's (each list gives at most ``k``). A candidate that fails, times out or whose
breaker is open (the canary's :class:`Breaker`) leaves the serving list alone, counted in
``musicrec_gateway_interleave_fallbacks_total{candidate_version,reason}``; never a failed
Recommend. Its attempts count under its version and code by version (the watcher's error
ratio and p99), interleaved answers in ``musicrec_gateway_interleaved_total``.

**Shadow.** A ``shadow_percent`` share of the requests the serving version answered is sent
again to the shadow version by a task of its own, after the answer is ready and off its path:
at most ``shadow_max_in_flight`` (default :data:`SHADOW_MAX_IN_FLIGHT`) at once per gateway,
and only while no other served request is in flight on it; a request beyond that is dropped
(counted), so shadow load never queues in front of served requests and takes the gateway's
spare time, never its busy time: under saturation the shadow samples fewer requests. The
shadow's answer is discarded; its latency, its outcome and its agreement with the served top
10 (overlap@10, Spearman's rho and Kendall's tau-b over the two lists) are recorded in the
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass

import numpy as np

from core import traffic_split
from core.interleaving import team_draft
from core.vocabulary import name_key
from gateway.artifacts import ModelVersion
from gateway.errors import DeadlineExceeded, GatewayError
from gateway.feedback import new_recommendation_id
from gateway.metrics import GatewayMetrics
from gateway.modes import ModeScorer
from gateway.recommender import (
    KNOWN_CACHE,
    Deadline,
    Listener,
    Query,
    RecommendationService,
    RecommendResult,
    is_heavy,
)
from gateway.versions import VersionTracker

log = logging.getLogger(__name__)
SHADOW_MAX_IN_FLIGHT = 1  # shadow calls at once per gateway; more are dropped, never queued
AGREEMENT_K = 10
# Failures of the stack, not of the caller: a canary failing with these is retried on the
# serving version. The caller's own mistakes (INVALID_ARGUMENT, NOT_FOUND) are retried too,
# since the canary's vocabulary may differ, but are not the canary's errors.
CANARY_ERRORS = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED",
                 "DATA_LOSS", "UNIMPLEMENTED"}  # fmt: skip
CANARY_SHARE = 0.5  # of the RPC's time left, a canary attempt's: the serving retry gets the rest
BREAKER_FAILURES = 5  # canary failures of the stack in a row that open its breaker
BREAKER_BACKOFF_S, BREAKER_MAX_BACKOFF_S = 2.0, 30.0  # open this long, doubling while failing
CANARY_LOG_INTERVAL_S = 5.0  # at most one warning about a failing canary per interval
INTERLEAVE_SHARE = 0.8  # of the RPC's time left, the candidate's: the answer leaves in the rest


@dataclass(frozen=True)
class InterleavedResult(RecommendResult):
    """A team-draft interleaving of the serving and the candidate version's answers: the
    servicer keeps its ``recommendation_id`` (the draft's seed), each position's team and
    version, and the candidate, for Feedback (``gateway/feedback.py``)."""

    recommendation_id: str = ""
    teams: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    candidate_version: int | None = None


def listener_key(listener: Listener, mv: ModelVersion) -> str:
    """The listener's stable key for the split (``core.traffic_split.listener_key``): a known
    user's id, or the artist ids the history resolves to in ``mv`` (the serving version), so
    one listener sent by ids, by names or by padded or differently normalised names gets one
    key; an item ``mv`` does not know keys as its trimmed, NFC-normalised, case-folded text."""
    if listener.user_id is not None:
        return traffic_split.listener_key(listener.user_id)
    ids = mv.vocab.artist_ids
    keys = []
    for item in listener.history or ():
        if item.id is not None:
            col = mv.artists.by_artist_id(item.id)
            keys.append(item.id if col is not None else "\x00id:" + name_key(item.id))
        else:
            col = mv.artists.by_artist_name(item.name or "")
            keys.append(ids[col] if col is not None else "\x00name:" + name_key(item.name or ""))
    return traffic_split.listener_key(None, keys)


def agreement(served: list[str], other: list[str], k: int = AGREEMENT_K) -> tuple[float, ...]:
    """``(overlap@k, spearman, kendall)`` of two ranked lists of artist ids: the share of the
    served top k the other holds, and Spearman's rho and Kendall's tau-b over the union of
    both top k, an artist missing from a list ranked k+1 there (nan when undefined). NumPy on
    a few ranks (``scipy.stats`` gives the same, tests check, at ~2 ms a pair on the loop)."""
    a, b = served[:k], other[:k]
    if not a:
        return (float("nan"),) * 3
    overlap = len(set(a) & set(b)) / len(a)
    union = list(dict.fromkeys(a + b))
    pos_a, pos_b = {x: i for i, x in enumerate(a)}, {x: i for i, x in enumerate(b)}
    rank_a = np.array([pos_a.get(x, k) for x in union], np.float64)
    rank_b = np.array([pos_b.get(x, k) for x in union], np.float64)
    return overlap, _spearman(rank_a, rank_b), _kendall(rank_a, rank_b)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean (``scipy.stats.rankdata``)."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = _average_ranks(x) - 0, _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else float("nan")


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either list)."""
    upper = np.triu_indices(len(x), 1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    denominator = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


@dataclass
class Breaker:
    """A canary's failures in a row: after ``threshold`` it opens for a back-off (doubling up
    to ``max_backoff_s`` while it keeps failing), during which its share is answered by the
    serving version; the first request after the back-off tries the canary again, and a
    success closes it."""

    threshold: int = BREAKER_FAILURES
    backoff_s: float = BREAKER_BACKOFF_S
    max_backoff_s: float = BREAKER_MAX_BACKOFF_S
    failures: int = 0
    trips: int = 0
    open_until: float = 0.0

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def failed(self, now: float) -> bool:
        """Count a failure; True when it opens the breaker."""
        self.failures += 1
        if self.failures < self.threshold or self.is_open(now):
            return False
        self.trips += 1
        self.open_until = now + min(self.max_backoff_s, self.backoff_s * 2 ** (self.trips - 1))
        return True

    def succeeded(self) -> None:
        self.failures = self.trips = 0


@dataclass
class ThrottledLog:
    """One warning per ``interval_s`` at most; the lines held back are counted into the next."""

    interval_s: float = CANARY_LOG_INTERVAL_S
    last: float = -math.inf
    held: int = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.held += 1
            return
        held, self.held, self.last = self.held, 0, now
        suffix = f" ({held} more such failures in the last {self.interval_s:g} s)" if held else ""
        log.warning(message + suffix, *args)


class RolloutService(RecommendationService):
    """:class:`RecommendationService` with the rollout's canary and shadow (see the module)."""

    def __init__(self, tracker: VersionTracker, modes: dict[str, ModeScorer],
                 metrics: GatewayMetrics, *, shadow_limit: int = SHADOW_MAX_IN_FLIGHT,
                 triton_timeout_s: float = 10.0,
                 known_cache: int = KNOWN_CACHE) -> None:  # fmt: skip
        super().__init__(tracker, modes, metrics, known_cache)
        self.shadow_limit = shadow_limit
        self.triton_timeout_s = triton_timeout_s
        self._shadows: set[asyncio.Task] = set()
        self._random = random.Random()
        self._serving_now = 0  # Recommend calls in flight on this gateway
        self._breakers: dict[int, Breaker] = {}
        self._canary_log = ThrottledLog()
        self._published: set[tuple[str, str]] = set()  # rollout_percent labels set so far

    def _routable_canary(self) -> ModelVersion | None:
        """The canary version this gateway may route to now (loaded, not its own)."""
        rollout = self.tracker.rollout
        if rollout is None or rollout.canary is None or rollout.percent <= 0:
            return None
        canary = self.tracker.loaded(rollout.canary)
        return None if canary is None or canary is self.tracker.current else canary

    async def _canary(self, listener: Listener) -> ModelVersion | None:
        """The canary if this listener is in its share (a long history keyed off the loop)."""
        canary, serving = self._routable_canary(), self.tracker.current
        if canary is None or serving is None:
            return None
        key = await self._key(listener, serving)
        return canary if traffic_split.in_canary(self.tracker.rollout, key) else None

    def _routable_interleave(self) -> ModelVersion | None:
        """The interleave candidate this gateway may ask now (loaded, not its own)."""
        rollout = self.tracker.rollout
        if rollout is None or rollout.interleave is None or rollout.interleave_percent <= 0:
            return None
        candidate = self.tracker.loaded(rollout.interleave)
        return None if candidate is None or candidate is self.tracker.current else candidate

    async def _key(self, listener: Listener, serving: ModelVersion) -> str:
        if is_heavy(listener):
            return await asyncio.to_thread(listener_key, listener, serving)
        return listener_key(listener, serving)

    async def _interleave_candidate(self, listener: Listener) -> ModelVersion | None:
        """The candidate if this listener is in the interleaved share."""
        candidate, serving = self._routable_interleave(), self.tracker.current
        if candidate is None or serving is None:
            return None
        key = await self._key(listener, serving)
        return candidate if traffic_split.in_interleave(self.tracker.rollout, key) else None

    def routed(self) -> dict[tuple[str, str], float]:
        """``(role, version) -> percent`` this gateway routes now (a canary whose breaker is
        open, or not yet loaded, gets 0)."""
        rollout, out = self.tracker.rollout, {}
        if rollout is None:
            return out
        if rollout.canary is not None:
            breaker = self._breakers.get(rollout.canary)
            closed = breaker is None or not breaker.is_open(time.monotonic())
            routable = self._routable_canary() is not None and closed
            out[("canary", str(rollout.canary))] = rollout.percent if routable else 0.0
        if rollout.interleave is not None:
            breaker = self._breakers.get(rollout.interleave)
            closed = breaker is None or not breaker.is_open(time.monotonic())
            routable = self._routable_interleave() is not None and closed
            percent = rollout.interleave_percent if routable else 0.0
            out[("interleave", str(rollout.interleave))] = percent
        if rollout.shadow is not None:
            loaded = self.tracker.loaded(rollout.shadow) is not None
            out[("shadow", str(rollout.shadow))] = rollout.shadow_percent if loaded else 0.0
        return out

    def publish_split(self) -> None:
        """Set the rollout gauges from :meth:`routed` (every poll); labels of an ended rollout
        read 0."""
        now = self.routed()
        for labels in self._published - set(now):
            self.metrics.rollout_percent.labels(*labels).set(0)
        for labels, percent in now.items():
            self.metrics.rollout_percent.labels(*labels).set(percent)
        self._published |= set(now)
        self.metrics.rollout_error.set(1 if self.tracker.rollout_error else 0)
        for version, breaker in self._breakers.items():
            is_open = breaker.is_open(time.monotonic())
            self.metrics.canary_breaker_open.labels(str(version)).set(1 if is_open else 0)

    async def recommend(self, query: Query, deadline: Deadline) -> RecommendResult:
        self._serving_now += 1
        try:
            return await self._recommend_routed(query, deadline)
        finally:
            self._serving_now -= 1

    async def _recommend_routed(self, query: Query, deadline: Deadline) -> RecommendResult:
        candidate = await self._interleave_candidate(query.listener)
        if candidate is not None:
            return await self._interleaved(candidate, query, deadline)
        canary = await self._canary(query.listener)
        if canary is not None:
            answer = await self._try_canary(canary, query, deadline)
            if answer is not None:
                return answer
        result = await super().recommend(query, deadline)
        self._maybe_shadow(query, result)
        return result

    async def _try_canary(self, canary: ModelVersion, query: Query,
                          deadline: Deadline) -> RecommendResult | None:  # fmt: skip
        """The canary's answer, or None for the serving version to answer: the canary failed
        (within :data:`CANARY_SHARE` of the time left, so the retry has the rest) or its
        breaker is open. A caller's deadline that passed fails the RPC, charged to the canary."""
        breaker = self._breaker(canary.version)
        if breaker.is_open(time.monotonic()):
            self.metrics.canary_diverted.labels(str(canary.version)).inc()
            self.metrics.requests_by_version.labels("Recommend", "UNAVAILABLE",
                                                    str(canary.version)).inc()  # fmt: skip
            return None
        start = time.perf_counter()
        try:
            answer = await self.answer(canary, query, deadline.part(CANARY_SHARE))
        except GatewayError as exc:
            if isinstance(exc, DeadlineExceeded) and deadline.expired():
                self._stack_failed(canary.version, exc.code.name, exc)
                raise  # the RPC fails: counted under the canary, the version attempting
            self._canary_failed(canary.version, exc.code.name, time.perf_counter() - start, exc)
        except Exception as exc:  # a bug on the canary's data: the serving version answers
            self._canary_failed(canary.version, "UNKNOWN", time.perf_counter() - start, exc)
            log.exception("canary version %d failed (%s)", canary.version, exc)
        else:
            breaker.succeeded()
            return answer
        self.metrics.attempt(0)  # what follows is the serving version's
        return None

    def _breaker(self, version: int) -> Breaker:
        """``version``'s breaker (one rollout at a time: earlier ones are forgotten)."""
        breaker = self._breakers.setdefault(version, Breaker())
        if len(self._breakers) > 1:
            self._breakers = {version: breaker}
        return breaker

    # ------------------------------------------------------------------ interleave

    async def _interleaved(self, candidate: ModelVersion, query: Query,
                           deadline: Deadline) -> RecommendResult:  # fmt: skip
        """Both versions at once; their team draft, or the serving list alone when the
        candidate fails (see the module). The serving version's failure fails the RPC."""
        label = str(candidate.version)
        breaker = self._breaker(candidate.version)
        if breaker.is_open(time.monotonic()):
            self.metrics.interleave_fallbacks.labels(label, "breaker_open").inc()
            self.metrics.requests_by_version.labels("Recommend", "UNAVAILABLE", label).inc()
            return await super().recommend(query, deadline)
        task = asyncio.get_running_loop().create_task(
            self._candidate_answer(candidate, query, deadline.part(INTERLEAVE_SHARE))
        )
        try:
            served = await super().recommend(query, deadline)
        except BaseException:
            task.cancel()
            raise
        other = await task
        if other is None:
            return served
        return self._merge(served, other, query.k)

    async def _candidate_answer(self, candidate: ModelVersion, query: Query,
                                deadline: Deadline) -> RecommendResult | None:  # fmt: skip
        """The candidate's answer, or None (counted as a fallback and under its version)."""
        start, version = time.perf_counter(), candidate.version
        try:
            answer = await self.answer(candidate, query, deadline, counted=False)
        except GatewayError as exc:
            self._candidate_failed(version, exc.code.name, time.perf_counter() - start, exc)
        except Exception as exc:  # a bug on the candidate's data: the serving list answers
            self._candidate_failed(version, "UNKNOWN", time.perf_counter() - start, exc)
            log.exception("interleave candidate version %d failed (%s)", version, exc)
        else:
            self._breaker(version).succeeded()
            self.metrics.attempt_counted(version, "OK", time.perf_counter() - start)
            return answer
        return None

    def _candidate_failed(self, version: int, code: str, seconds: float, exc: Exception) -> None:
        """A fallback, the candidate's attempt under its version and code, and its breaker."""
        self.metrics.interleave_fallbacks.labels(str(version), code).inc()
        self.metrics.attempt_counted(version, code, seconds)
        self._stack_failed(version, code, exc)

    def _merge(self, served: RecommendResult, other: RecommendResult, k: int) -> InterleavedResult:
        """The team draft of the two answers, seeded by a fresh recommendation id."""
        rec_id = new_recommendation_id()
        by_id = {a.id: a for a in other.artists} | {a.id: a for a in served.artists}
        merged = team_draft([a.id for a in served.artists], [a.id for a in other.artists], k,
                            rec_id)  # fmt: skip
        versions = tuple(served.version if t == "serving" else other.version
                         for t in merged.teams)  # fmt: skip
        self.metrics.interleaved.labels(str(other.version)).inc()
        return InterleavedResult(
            [by_id[a] for a in merged.items], served.version, served.similar_users,
            served.fallback, served.unknown_artists, served.mode, served.all_played,
            recommendation_id=rec_id, teams=merged.teams, versions=versions,
            candidate_version=other.version,
        )  # fmt: skip

    def _canary_failed(self, version: int, code: str, seconds: float, exc: Exception) -> None:
        """Count the canary's failed attempt: as a retry, and under its own version and code
        (and its time) by version, beside the serving version's answer to the same RPC, so
        that the canary's error ratio there (ops/alerts.yml, the watcher) shows it."""
        self.metrics.canary_retries.labels(str(version), code).inc()
        self.metrics.attempt_failed(version, code, seconds)
        self._stack_failed(version, code, exc)

    def _stack_failed(self, version: int, code: str, exc: Exception) -> None:
        """A failure of the stack (not the caller's mistake) is logged, at most once per
        :data:`CANARY_LOG_INTERVAL_S`, and counts towards the canary's breaker."""
        if code not in CANARY_ERRORS:
            return
        self._canary_log.warning("rollout version %d failed (%s: %s); answering with the "
                                 "serving version", version, code, exc)  # fmt: skip
        breaker = self._breakers.setdefault(version, Breaker())
        if breaker.failed(time.monotonic()):
            self.metrics.canary_breaker_trips.labels(str(version)).inc()
            self.metrics.canary_breaker_open.labels(str(version)).set(1)
            log.warning("canary version %d failed %d times in a row: its share goes to the "
                        "serving version for %.0f s", version, breaker.failures,
                        breaker.open_until - time.monotonic())  # fmt: skip

    # ------------------------------------------------------------------ shadow

    def _maybe_shadow(self, query: Query, served: RecommendResult) -> None:
        rollout = self.tracker.rollout
        if rollout is None or rollout.shadow is None or served.fallback:
            return
        if self._random.random() * 100 >= rollout.shadow_percent:
            return
        shadow = self.tracker.loaded(rollout.shadow)
        if shadow is None or shadow.version == served.version:
            return
        label = str(shadow.version)
        if len(self._shadows) >= self.shadow_limit or self._serving_now > 1:
            self.metrics.shadow_requests.labels(label, "dropped").inc()  # full, or busy
            return
        task = asyncio.get_running_loop().create_task(self._shadow(shadow, query, served))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, shadow: ModelVersion, query: Query, served: RecommendResult) -> None:
        label = str(shadow.version)
        await asyncio.sleep(0)  # let the served answer leave first
        start = time.perf_counter()
        try:
            answer = await self.answer(shadow, query, Deadline(None, self.triton_timeout_s),
                                       counted=False)  # fmt: skip
        except Exception as exc:  # discarded: a shadow never affects a caller
            self.metrics.shadow_requests.labels(label, "error").inc()
            log.debug("shadow version %s failed: %s", label, exc)
            return
        self.metrics.shadow_seconds.labels(label).observe(time.perf_counter() - start)
        self.metrics.shadow_requests.labels(label, "ok").inc()
        overlap, rho, tau = agreement([a.id for a in served.artists],
                                      [a.id for a in answer.artists])  # fmt: skip
        if not np.isnan(overlap):
            self.metrics.shadow_overlap.labels(label).observe(overlap)
        for method, value in (("spearman", rho), ("kendall", tau)):
            if not np.isnan(value):
                self.metrics.shadow_rank_correlation.labels(label, method).observe(value)
