"""The gateway's Prometheus metrics and the interceptor that records every RPC.

Exported on ``--metrics-port`` (``/metrics``), beside Triton's own ``:8002/metrics``:
requests by method and status code, latency of the whole request, of each of its stages
(resolve, similarity, candidates, triton, response), of the Triton call by scoring mode,
popularity fallbacks, and the serving model version.

Per model version: the same requests (by method, code and ``version``), whole-RPC latency and
fallbacks again under ``*_by_version`` names, so that a dashboard or an alert can set one
version against another (a canary against the serving one) while the unlabelled series keep
their names. The version of an RPC is the one its answer names (:meth:`GatewayMetrics.served_by`,
called by the servicer, or by whatever routes a request to a version); an RPC that fails before
a version answered counts under the version the gateway serves. A canary's failed attempt,
answered again by the serving version, counts under the canary too (``gateway/rollout.py``,
with the canary retries and the shadow version's calls, latency and agreement).

With ``--workers N`` (``gateway/workers.py``) each worker writes its values to files of
prometheus_client's multiprocess mode and the parent serves their aggregate: counters,
histograms and the summary add up over workers, dead ones included; a gauge reads the lowest
(``model_version``, ``triton_up``: 0 while any live worker serves none or misses Triton) or the
highest (``triton_replicas``: the most replicas up, or down, that a live worker saw).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    start_http_server,
)

from gateway.logs import REQUEST_ID_HEADER, admit_access, bind_request_id

log = logging.getLogger("gateway.access")
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
NO_VERSION = "none"  # the version label while the gateway serves none
_UNIT_BUCKETS = tuple(i / 10 for i in range(11))  # 0, 0.1, ..., 1
DEADLINE_SLACK_S = 0.01  # a cancelled RPC with at most this left of its deadline timed out


@dataclass
class _Served:
    """What one RPC was served by: set while it runs, read when it is counted. ``started``:
    when the attempt of ``version`` began (its time by version is counted from there)."""

    version: int | None = None
    fallback: bool = False
    started: float | None = None


_SERVED: contextvars.ContextVar[_Served | None] = contextvars.ContextVar(
    "musicrec_served", default=None
)


class GatewayMetrics:
    """One registry per gateway (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("musicrec_gateway_requests", "RPCs by method and status code",
                                ["method", "code"], registry=r)  # fmt: skip
        self.request_seconds = Histogram("musicrec_gateway_request_seconds",
                                         "Whole-RPC latency", ["method"], buckets=_BUCKETS,
                                         registry=r)  # fmt: skip
        self.similarity_seconds = Histogram("musicrec_gateway_similarity_seconds",
                                            "Similar-user lookup latency", buckets=_BUCKETS,
                                            registry=r)  # fmt: skip
        self.triton_seconds = Histogram("musicrec_gateway_triton_seconds",
                                        "Triton scoring latency by mode", ["mode"],
                                        buckets=_BUCKETS, registry=r)  # fmt: skip
        self.stage_seconds = Histogram("musicrec_gateway_stage_seconds",
                                       "Time per request stage: resolve, similarity, candidates, "
                                       "triton, response", ["stage"], buckets=_BUCKETS,
                                       registry=r)  # fmt: skip
        self.triton_call_requests = Histogram(
            "musicrec_gateway_triton_call_requests",
            "Requests joined into each Triton call, by model (gateway/coalescing.py)", ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 16), registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "musicrec_gateway_popularity_fallbacks",
            "Histories answered with the popularity fallback",
            registry=r,
        )
        self.model_version = Gauge(
            "musicrec_gateway_model_version",
            "Model version the gateway serves (0: none)",
            registry=r,
            multiprocess_mode="livemin",  # --workers: 0 while any live worker serves none
        )
        self.triton_up = Gauge("musicrec_gateway_triton_up", "1 when Triton answers", registry=r,
                               multiprocess_mode="livemin")  # fmt: skip
        self.triton_replicas = Gauge("musicrec_gateway_triton_replicas",
                                     "Triton replicas by state at the last poll", ["state"],
                                     registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.version_load_errors = Counter(
            "musicrec_gateway_version_load_errors",
            "Model versions whose artifacts failed to load (each attempt)",
            registry=r,
        )
        self.task_restarts = Counter("musicrec_gateway_task_restarts",
                                     "Background tasks restarted after they ended", ["task"],
                                     registry=r)  # fmt: skip
        self.requests_by_version = Counter(
            "musicrec_gateway_requests_by_version",
            "RPCs by method, status code and the model version that answered",
            ["method", "code", "version"],
            registry=r,
        )
        self.request_seconds_by_version = Histogram(
            "musicrec_gateway_request_seconds_by_version",
            "Whole-RPC latency by the model version that answered", ["method", "version"],
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.fallbacks_by_version = Counter(
            "musicrec_gateway_popularity_fallbacks_by_version",
            "Histories answered with the popularity fallback, by model version",
            ["version"],
            registry=r,
        )
        # Rollouts (gateway/rollout.py): canary requests answered again by the serving version,
        # and the shadow version's calls, latency and agreement with the served answer.
        self.canary_retries = Counter(
            "musicrec_gateway_canary_retries",
            "Canary requests that failed (by the canary's version and status code) and were "
            "answered by the serving version instead", ["version", "code"], registry=r,
        )  # fmt: skip
        self.shadow_requests = Counter(
            "musicrec_gateway_shadow_requests",
            "Requests copied to the shadow version, by outcome: ok, error, dropped (bound full)",
            ["version", "outcome"], registry=r,
        )  # fmt: skip
        self.shadow_seconds = Histogram(
            "musicrec_gateway_shadow_seconds", "Latency of the shadow version's answers",
            ["version"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_overlap = Histogram(
            "musicrec_gateway_shadow_overlap_at_10",
            "Share of the served top 10 that the shadow version's top 10 holds too",
            ["version"], buckets=_UNIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_rank_correlation = Summary(  # a histogram with buckets below 0 has no _sum
            "musicrec_gateway_shadow_rank_correlation",
            "Rank correlation (spearman, kendall) of the served and the shadow top 10",
            ["version", "method"], registry=r,
        )  # fmt: skip
        self.canary_breaker_trips = Counter(
            "musicrec_gateway_canary_breaker_trips",
            "Times a canary's breaker opened after failures in a row (its share answered by "
            "the serving version for a back-off)", ["version"], registry=r,
        )  # fmt: skip
        self.canary_diverted = Counter(
            "musicrec_gateway_canary_diverted",
            "Canary requests answered by the serving version while the canary's breaker was "
            "open (also counted as the canary's UNAVAILABLE by version)", ["version"], registry=r,
        )  # fmt: skip
        self.canary_breaker_open = Gauge(
            "musicrec_gateway_canary_breaker_open", "1 while the canary's breaker is open",
            ["version"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        # What this gateway routes now: abort waits until every gateway reports 0 for the canary
        self.rollout_percent = Gauge(
            "musicrec_gateway_rollout_percent",
            "Percent this gateway routes to a rollout's role (canary: listeners, shadow: "
            "requests copied); 0 when none", ["role", "version"], registry=r,
            multiprocess_mode="livemax",  # --workers: 0 only once no live worker routes to it
        )  # fmt: skip
        self.rollout_error = Gauge(
            "musicrec_gateway_rollout_error",
            "1 while the repository's rollout split (.rollout.json) is unreadable: the gateway "
            "serves one version and routes nobody to a canary or shadow", registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.loop_lag_max = Gauge(
            "musicrec_gateway_event_loop_lag_max_seconds",
            "Longest event-loop stall (a probe's wake that came late) in the last two windows "
            "of --loop-probe-window-s", registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.loop_busy_max = Gauge(
            "musicrec_gateway_event_loop_busy_max_seconds",
            "Longest CPU time the event loop's thread spent between two of the probe's wakes "
            "(code on the loop), in the last two windows", registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self._feedback_metrics(r)
        self._interleave_metrics(r)
        self.serving = 0  # the version the gateway serves (0: none), the label of early errors
        self._stages: dict[str, Any] = {}

    def _feedback_metrics(self, r: CollectorRegistry) -> None:
        """Online quality (``gateway/feedback.py``) and the event log (``gateway/event_log.py``);
        the names are read by the canary watcher: keep them."""
        self.impressions = Counter("musicrec_gateway_impressions",
                                   "Lists served with a recommendation_id, by version",
                                   ["version"], registry=r)  # fmt: skip
        self.impression_hits = Counter(
            "musicrec_gateway_impression_hits",
            "Impressions with at least one PLAYED artist (counted once, at the first play)",
            ["version"], registry=r,
        )  # fmt: skip
        self.feedback_events = Counter(
            "musicrec_gateway_feedback_events",
            "Feedback events by the version that placed the artist and action",
            ["version", "action"], registry=r,
        )  # fmt: skip
        # a summary: its _sum is the sum of 1/rank, its _count the hits
        self.first_play_rank = Summary(
            "musicrec_gateway_first_play_reciprocal_rank",
            "Reciprocal rank of each impression's first played artist (sum / impressions: MRR)",
            ["version"], registry=r,
        )  # fmt: skip
        self.feedback_unattributed = Counter(
            "musicrec_gateway_feedback_unattributed",
            "Feedback events not credited: unknown_id, expired, not_served, invalid",
            ["reason"], registry=r,
        )  # fmt: skip
        self.impression_store_entries = Gauge(
            "musicrec_gateway_impression_store_entries",
            "Served lists kept for feedback", registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.events_written = Counter("musicrec_gateway_events_written",
                                      "Event-log rows committed, by table", ["table"],
                                      registry=r)  # fmt: skip
        self.events_dropped = Counter(
            "musicrec_gateway_events_dropped",
            "Event-log rows dropped: queue_full, write_error (a full disk, an unwritable "
            "directory), writer_down, writer_died, shutdown", ["reason"], registry=r,
        )  # fmt: skip
        self.events_writer_up = Gauge(
            "musicrec_gateway_events_writer_up",
            "1 while the event log's writer thread runs and its last write succeeded",
            registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self.events_flush_seconds = Histogram("musicrec_gateway_events_flush_seconds",
                                              "Time of one event-log commit", buckets=_BUCKETS,
                                              registry=r)  # fmt: skip

    def _interleave_metrics(self, r: CollectorRegistry) -> None:
        """Interleaving (``gateway/rollout.py``, ``gateway/feedback.py``); the names are read
        by the watcher and ``status`` (``serving/gateway_metrics.py``): keep them."""
        self.interleaved = Counter(
            "musicrec_gateway_interleaved",
            "Answers that were a team-draft interleaving of the serving and the candidate "
            "version's lists", ["candidate_version"], registry=r,
        )  # fmt: skip
        self.interleave_outcomes = Counter(
            "musicrec_gateway_interleave_outcomes",
            "Interleaved impressions decided at their first Feedback with a PLAYED event, by "
            "the team that won: candidate, serving or tie", ["candidate_version", "outcome"],
            registry=r,
        )  # fmt: skip
        self.interleave_fallbacks = Counter(
            "musicrec_gateway_interleave_fallbacks",
            "Interleaved listeners answered with the serving list alone: the candidate failed "
            "(by status code), timed out, or its breaker was open (breaker_open)",
            ["candidate_version", "reason"], registry=r,
        )  # fmt: skip

    def interleave_outcome(self, candidate: int, outcome: str) -> None:
        self.interleave_outcomes.labels(_label(candidate), outcome).inc()

    def impression(self, version: int, stored: int) -> None:
        """A list served with an id by ``version``; the store holds ``stored`` lists."""
        self.impressions.labels(_label(version)).inc()
        self.impression_store_entries.set(stored)

    def feedback_event(self, version: int, action: str) -> None:
        self.feedback_events.labels(_label(version), action).inc()

    def first_play(self, version: int, rank: int) -> None:
        """An impression of ``version`` got its first play, at 1-based ``rank``."""
        self.impression_hits.labels(_label(version)).inc()
        self.first_play_rank.labels(_label(version)).observe(1.0 / rank)

    def unattributed(self, reason: str, events: int = 1) -> None:
        self.feedback_unattributed.labels(reason).inc(events)

    def stage(self, name: str) -> Any:
        """A context manager timing one stage of a request."""
        child = self._stages.get(name)
        if child is None:  # bound once per stage name, not looked up per request
            child = self._stages[name] = self.stage_seconds.labels(name)
        return child.time()

    def triton_call(self, model: str, requests: int) -> None:
        """One Triton call of ``model`` carried ``requests`` requests."""
        self.triton_call_requests.labels(model).observe(requests)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` over HTTP on ``port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)

    def set_serving_version(self, version: int) -> None:
        """The version the gateway serves now (0: none): the gauge, and the default label."""
        self.serving = version
        self.model_version.set(version)

    def loop(self, lag_s: float, busy_s: float) -> None:
        """The loop-lag probe's windowed maxima (``gateway.server.loop_lag_probe``)."""
        self.loop_lag_max.set(lag_s)
        self.loop_busy_max.set(busy_s)

    def attempt(self, version: int) -> None:
        """The RPC in this context tries ``version`` from now: its outcome and its time from
        here count under that version (a failed canary attempt's time never counts under the
        serving version that answers next)."""
        served = _SERVED.get()
        if served is not None:
            served.version, served.started = version, time.perf_counter()

    def attempt_failed(self, version: int, code: str, seconds: float) -> None:
        """A failed attempt of ``version`` that another version answers again: its code and
        time under its version (the RPC's outcome counts under the one that answered)."""
        self.attempt_counted(version, code, seconds)

    def attempt_counted(self, version: int, code: str, seconds: float) -> None:
        """An attempt of ``version`` beside the RPC's answer (a failed canary's, an interleave
        candidate's, OK or not): its code and time under its version."""
        self.requests_by_version.labels("Recommend", code, str(version)).inc()
        self.request_seconds_by_version.labels("Recommend", str(version)).observe(seconds)

    def served_by(self, version: int, fallback: bool = False) -> None:
        """The RPC running in this context is answered by ``version`` (a popularity fallback
        when ``fallback``). Outside an observed RPC (a direct call) it is counted at once."""
        served = _SERVED.get()
        if served is not None:
            served.version, served.fallback = version, served.fallback or fallback
        elif fallback:
            self.fallbacks_by_version.labels(_label(version)).inc()

    def observe(
        self, method: str, code: grpc.StatusCode, seconds: float, served: _Served | None = None
    ) -> None:
        self.requests.labels(method, code.name).inc()
        self.request_seconds.labels(method).observe(seconds)
        version = _label(served.version if served and served.version else self.serving)
        if served is not None and served.started is not None:  # from the last attempt's start
            seconds = time.perf_counter() - served.started
        self.requests_by_version.labels(method, code.name, version).inc()
        self.request_seconds_by_version.labels(method, version).observe(seconds)
        if served is not None and served.fallback:
            self.fallbacks_by_version.labels(version).inc()


def _cancelled(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why gRPC cancelled an RPC: DEADLINE_EXCEEDED when the caller's deadline ran out (what
    the caller sees), else CANCELLED (the caller gave up)."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _label(version: int | None) -> str:
    return str(version) if version else NO_VERSION


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary RPC and writes one structured access-log line for it.

    Each RPC is served under a request id, the caller's ``x-request-id`` or a fresh one: every
    log line of the RPC carries it, Triton receives it, and the caller gets it back in the
    trailing metadata."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return grpc.unary_unary_rpc_method_handler(
            self._observed(method, _refusing_undecodable(handler.unary_unary)),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _observed(self, method: str, behaviour: Handler) -> Handler:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, code = time.perf_counter(), None
            served = _Served()
            _SERVED.set(served)  # this RPC's task; served_by() fills it in
            offered = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, bind_request_id(offered)),))
            try:
                return await behaviour(request, context)
            except asyncio.CancelledError:
                code = _cancelled(context)
                raise
            except BaseException:
                code = _status(context.code()) or grpc.StatusCode.UNKNOWN  # abort() sets it
                raise
            finally:
                code = code or _status(context.code()) or grpc.StatusCode.OK
                seconds = time.perf_counter() - start
                self.metrics.observe(method, code, seconds, served)
                skipped = admit_access(failed=code != grpc.StatusCode.OK)
                if skipped is not None:  # a record only for a line that is written
                    extra = {"method": method, "code": code.name, "ms": round(seconds * 1e3, 2),
                             "peer": context.peer()}  # fmt: skip
                    log.info("rpc", extra={**extra, "skipped_before": skipped} if skipped
                             else extra)  # fmt: skip

        return observed


_UNDECODABLE = object()  # what a request that is not its message type parses to


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, but bytes that are not the message give a marker instead of raising
    (gRPC would answer INTERNAL, as if the gateway had failed)."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _UNDECODABLE

    return parse


def _refusing_undecodable(behaviour: Handler) -> Handler:
    async def refusing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the request is not a valid message of this method")  # fmt: skip
        return await behaviour(request, context)

    return refusing


def _status(code: grpc.StatusCode | int | None) -> grpc.StatusCode | None:
    """``context.code()`` as a StatusCode (some grpcio versions hand back the raw value)."""
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
