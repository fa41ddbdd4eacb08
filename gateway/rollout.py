"""Canary routing and shadow traffic: the recommender service, split by the repository's
rollout file (``core/traffic_split.py``), which the version tracker reads at every poll.

**Canary.** A listener whose stable hash falls in the canary's share is answered by the canary
version, once that version is ready on every Triton replica and its artifacts are loaded. A
canary request that fails for any reason the stack caused (Triton's error, UNAVAILABLE, the
version no longer ready, a deadline the caller still has time after) is answered again by the
serving version, so the client sees no error. Each such retry is counted in
``musicrec_gateway_canary_retries_total{version,code}``, and the failed attempt also under the
canary's version and code in ``musicrec_gateway_requests_by_version_total`` (so those count a
version's attempts: the RPC's answer is counted under the serving version too), where the
alert rules and the canary watcher (``serving/rollout.py``) see the canary's errors although
no client saw one.

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
import random
import time

import numpy as np

from core import traffic_split
from gateway.artifacts import ModelVersion
from gateway.errors import DeadlineExceeded, GatewayError
from gateway.metrics import GatewayMetrics
from gateway.modes import ModeScorer
from gateway.recommender import (
    KNOWN_CACHE,
    Deadline,
    Listener,
    Query,
    RecommendationService,
    RecommendResult,
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


def listener_key(listener: Listener) -> str:
    """The listener's stable key for the split (``core.traffic_split.listener_key``)."""
    artists = (a.id if a.id is not None else a.name or "" for a in listener.history or ())
    return traffic_split.listener_key(listener.user_id, artists)


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

    def _canary(self, listener: Listener) -> ModelVersion | None:
        rollout = self.tracker.rollout
        if rollout is None or rollout.canary is None or rollout.percent <= 0:
            return None
        canary = self.tracker.loaded(rollout.canary)
        if canary is None or canary is self.tracker.current:
            return None
        return canary if traffic_split.in_canary(rollout, listener_key(listener)) else None

    async def recommend(self, query: Query, deadline: Deadline) -> RecommendResult:
        self._serving_now += 1
        try:
            return await self._recommend_routed(query, deadline)
        finally:
            self._serving_now -= 1

    async def _recommend_routed(self, query: Query, deadline: Deadline) -> RecommendResult:
        canary = self._canary(query.listener)
        if canary is not None:
            try:
                return await self._recommend(canary, query, deadline)
            except GatewayError as exc:
                if isinstance(exc, DeadlineExceeded) and deadline.expired():
                    raise
                self._canary_failed(canary.version, exc.code.name)
                code = exc.code.name
                if code in CANARY_ERRORS:
                    log.warning("canary version %d failed (%s: %s); answering with the serving "
                                "version", canary.version, code, exc)  # fmt: skip
            except Exception as exc:  # a bug on the canary's data: the serving version answers
                self._canary_failed(canary.version, "UNKNOWN")
                log.exception("canary version %d failed (%s)", canary.version, exc)
        result = await super().recommend(query, deadline)
        self._maybe_shadow(query, result)
        return result

    def _canary_failed(self, version: int, code: str) -> None:
        """Count the canary's failed attempt: as a retry, and under its own version and code
        in the requests by version (beside the serving version's answer to the same RPC), so
        that the canary's error ratio there (ops/alerts.yml, the watcher) shows it."""
        self.metrics.canary_retries.labels(str(version), code).inc()
        self.metrics.requests_by_version.labels("Recommend", code, str(version)).inc()

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
            answer = await self._recommend(shadow, query, Deadline(None, self.triton_timeout_s))
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
