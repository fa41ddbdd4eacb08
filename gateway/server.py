"""Run the gateway: ``musicrec-gateway`` (or ``python -m gateway``).

An asyncio gRPC server with the Recommender service, standard health checking (SERVING only
while Triton answers and a model version is loaded), server reflection, a Prometheus endpoint,
and a graceful shutdown on SIGTERM/SIGINT that drains in-flight requests. ``--triton-url`` may
name several Triton replicas (``gateway/replicas.py``). ``musicrec gateway`` is the same command.

Health is per scoring mode: ``""`` and ``musicrec.v1.Recommender`` report the default mode
(``--scoring``), ``musicrec.v1.Recommender/<mode>`` each mode, SERVING while the served
version's models of that mode are ready in Triton; a NOT_SERVING mode is named, with its
models, in the ``health`` log line (the same on every gateway of a Triton).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.contract import CANDIDATE_RANKER, CANDIDATE_SCORER
from core.modes import MODES
from core.similarity import array_backend
from gateway import logs, workers
from gateway.auth import TokenAuth, read_token, server_credentials
from gateway.coalescing import CoalescingInference
from gateway.config import GatewayConfig, add_arguments, from_arguments
from gateway.errors import GatewayError, Unavailable
from gateway.event_log import EventLog
from gateway.feedback import FeedbackService, ImpressionStore
from gateway.metrics import GatewayMetrics, ObservingInterceptor
from gateway.modes import mode_scorers
from gateway.overload import LoadShedder
from gateway.replicas import ReplicaSet
from gateway.rollout import RolloutService
from gateway.service import RecommenderServicer
from gateway.threads import limit_blas_threads
from gateway.versions import VersionTracker
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc

log = logging.getLogger("gateway")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


class Gateway:
    """The gateway's parts wired together; ``start`` / ``stop`` inside one event loop.

    ``shared_port``: one of several workers on the port (``gateway/workers.py``): the socket is
    bound with SO_REUSEPORT, and only in :meth:`start`, once the first version poll is done,
    since the kernel hands connections to a listening socket before its server starts."""

    def __init__(self, config: GatewayConfig, *, shared_port: bool = False) -> None:
        self.config, self.shared_port = config, shared_port
        self.metrics = GatewayMetrics()
        self.health = health.aio.HealthServicer()
        options = [
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes),
        ]
        if shared_port:
            options.append(("grpc.so_reuseport", 1))
        interceptors = [ObservingInterceptor(self.metrics)]
        if config.token_file:
            interceptors.append(TokenAuth(read_token(config.token_file)))
        interceptors.append(LoadShedder(config.max_concurrent_rpcs))  # never sheds health
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        self.port = 0
        if not shared_port:
            self._bind()
        self.triton = ReplicaSet(config.triton_url, on_poll=self._on_poll)
        inference = self.triton
        self.tracker = VersionTracker(
            inference, config.repository, array_backend(config.backend),
            timeout_s=min(2.0, config.triton_timeout_s), on_change=self._on_change,
            on_load_error=lambda *_: self.metrics.version_load_errors.inc(),
            default_mode=config.scoring, allow_unverified=config.allow_unverified_artifacts,
            on_poll=lambda _: self.service.publish_split(),
        )  # fmt: skip
        joined = CoalescingInference(
            inference, (CANDIDATE_RANKER, CANDIDATE_SCORER), max_batch=config.triton_batch,
            max_in_flight=config.triton_in_flight, on_call=self.metrics.triton_call,
        )  # fmt: skip
        self.service = RolloutService(self.tracker, mode_scorers(joined), self.metrics,
                                      shadow_limit=config.shadow_max_in_flight,
                                      triton_timeout_s=config.triton_timeout_s,
                                      known_cache=config.known_user_cache)  # fmt: skip
        self.event_log = event_log(config, self.metrics)
        self.feedback = FeedbackService(
            ImpressionStore(config.feedback_max_entries, config.feedback_ttl_s), self.metrics,
            self.event_log,
        )  # fmt: skip
        pb_grpc.add_RecommenderServicer_to_server(
            RecommenderServicer(self.service, config, self.feedback), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server,
        )  # fmt: skip
        self._poller: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None

    def _bind(self) -> None:
        config = self.config
        if config.tls_cert_file and config.tls_key_file:
            credentials = server_credentials(config.tls_cert_file, config.tls_key_file,
                                             config.tls_client_ca_file)  # fmt: skip
            self.port = self.server.add_secure_port(config.address, credentials)
        else:
            self.port = self.server.add_insecure_port(config.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.address}")

    def _on_poll(self, up: int, known: int) -> None:
        self.metrics.triton_replicas.labels("up").set(up)
        self.metrics.triton_replicas.labels("down").set(known - up)

    def _on_change(self, tracker: VersionTracker) -> None:
        modes = mode_health(tracker)
        status = modes[self.config.scoring]
        named = {"": status, SERVICE_NAME: status,
                 **{f"{SERVICE_NAME}/{mode}": s for mode, s in modes.items()}}  # fmt: skip
        for service, service_status in named.items():
            asyncio.get_running_loop().create_task(self.health.set(service, service_status))
        self.metrics.set_serving_version(tracker.current.version if tracker.current else 0)
        self.metrics.triton_up.set(1 if tracker.triton_up else 0)
        log.info("health", extra=health_record(tracker, modes, self.config.scoring))

    async def start(self) -> None:
        if self.event_log is not None:
            self.event_log.start()
        for name in ("", SERVICE_NAME, *(f"{SERVICE_NAME}/{mode}" for mode in MODES)):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.host)
        try:
            await self.tracker.refresh()
        except Exception:  # the supervised poller tries again
            log.exception("first version poll failed")
        self._poller = asyncio.create_task(supervised(
            "version poller", lambda: self.tracker.run(self.config.poll_interval_s),
            on_restart=lambda: self.metrics.task_restarts.labels("version_poller").inc(),
        ))  # fmt: skip
        if self.config.loop_probe_s:
            self._probe = asyncio.create_task(loop_lag_probe(
                self.config.loop_probe_s, self.config.loop_probe_window_s, self.metrics.loop,
            ))  # fmt: skip
        if self.shared_port:
            self._bind()
        await self.server.start()
        log.info("listening", extra={"address": f"{self.config.host}:{self.port}",
                                     "triton": self.config.triton_url,
                                     "metrics_port": self.config.metrics_port})  # fmt: skip

    async def stop(self) -> None:
        """Report NOT_SERVING and keep answering for ``drain_s`` (load balancers stop sending),
        then let in-flight RPCs finish (up to ``grace_s``) and close."""
        await self.health.enter_graceful_shutdown()
        if self.config.drain_s:
            log.info("draining", extra={"drain_s": self.config.drain_s})
            await asyncio.sleep(self.config.drain_s)
        await self.server.stop(self.config.grace_s)
        for task in (self._poller, self._probe):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.triton.close()
        if self.event_log is not None:  # commits what waits (a few ms), off the loop
            await asyncio.to_thread(self.event_log.close)


def event_log(config: GatewayConfig, metrics: GatewayMetrics) -> EventLog | None:
    """The event log ``--events DIR`` asks for (None: off)."""
    if config.events is None:
        return None
    return EventLog(config.events, metrics, flush_s=config.events_flush_s,
                    queue_max=config.events_queue, segment_rows=config.events_segment_rows,
                    max_segments=config.events_max_segments)  # fmt: skip


async def supervised(name: str, run: Callable[[], Awaitable[None]], *,
                     on_restart: Callable[[], None] = lambda: None,
                     pause_s: float = 1.0) -> None:  # fmt: skip
    """Run ``run()`` until cancelled: if it ever returns or raises, log why and start it again."""
    while True:
        try:
            await run()
            log.error("%s exited; restarting it", name)
        except Exception:
            log.exception("%s died; restarting it", name)
        on_restart()
        await asyncio.sleep(pause_s)


async def serve(config: GatewayConfig, *, shared_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    sys.setswitchinterval(config.switch_interval_s)  # worker threads yield to the loop soon
    gateway = Gateway(config, shared_port=shared_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down", extra={"grace_s": config.grace_s})
        await gateway.stop()


def mode_health(tracker: VersionTracker) -> dict[str, int]:
    """Each scoring mode's health status: SERVING while a version is served and that mode's
    models are ready in it."""
    out = {}
    for mode in MODES:
        try:
            tracker.check_mode(tracker.serving().version, mode)
            out[mode] = health_pb2.HealthCheckResponse.SERVING
        except Unavailable:
            out[mode] = health_pb2.HealthCheckResponse.NOT_SERVING
    return out


def health_record(tracker: VersionTracker, modes: dict[str, int], default: str) -> dict:
    """The ``health`` log line's fields: the default mode's status, each mode's, why the
    default is not served, the served version's models not ready, the rollout split's error."""
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
    current = tracker.current.version if tracker.current else None
    record = {"status": status_name(modes[default]), "version": current,
              "modes": {mode: status_name(s) for mode, s in modes.items()}}  # fmt: skip
    if modes[default] != health_pb2.HealthCheckResponse.SERVING:
        record["reason"] = _why_not(tracker, default)
    if tracker.not_ready(current):
        record["not_ready"] = list(tracker.not_ready(current))
    if tracker.rollout_error:
        record["rollout_error"] = tracker.rollout_error
    return record


def _why_not(tracker: VersionTracker, mode: str) -> str:
    """Why ``mode`` is not served, as a request would be told (UNAVAILABLE's message)."""
    try:
        tracker.check_mode(tracker.serving().version, mode)
    except GatewayError as exc:
        return str(exc)
    return ""


@dataclass
class WindowMax:
    """The largest value over the current and the previous window of ``window_s``."""

    window_s: float
    start: float = 0.0
    current: float = 0.0
    previous: float = 0.0

    def add(self, value: float, now: float) -> float:
        if now - self.start >= self.window_s:
            self.start, self.previous, self.current = now, self.current, 0.0
        self.current = max(self.current, value)
        return max(self.current, self.previous)


async def loop_lag_probe(interval_s: float, window_s: float,
                         report: Callable[[float, float], None]) -> None:  # fmt: skip
    """Wake every ``interval_s`` until cancelled; report the event loop's longest stall (how
    late a wake came) and its longest busy stretch (the loop thread's CPU time between two
    wakes: code that ran on the loop, not the host's other work or a wait for the GIL), each
    over the current and the previous ``window_s``."""
    loop = asyncio.get_running_loop()
    lag, busy = WindowMax(window_s, loop.time()), WindowMax(window_s, loop.time())
    cpu = time.thread_time()
    while True:
        planned = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        now, used = loop.time(), time.thread_time()
        report(lag.add(now - planned, now), busy.add(used - cpu, now))
        cpu = used


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``musicrec-gateway`` (and ``musicrec gateway``)."""
    add_arguments(parser)
    workers.add_worker_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the gateway the parsed flags describe; the exit status. ValueError: a bad setting."""
    config = from_arguments(args)
    if args.worker_of is not None:
        workers.become_worker(args.worker_of)  # exits at once if that parent is gone
        if config.events is not None:  # one writer per segment directory: a worker's own
            config = replace(config, events=config.events / f"worker-{args.worker_index}")
    logs.configure(config.log_json)
    if args.worker_of is not None:
        workers.label_logs(args.worker_index)
    elif config.workers > 1:
        return workers.supervise(config)
    limit_blas_threads(config.blas_threads)
    try:
        asyncio.run(serve(config, shared_port=args.worker_of is not None))
    except (OSError, ValueError) as exc:  # unreadable certificate or token, port taken
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="musicrec-gateway", description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    add_gateway_arguments(parser)
    args = parser.parse_args(argv)
    try:
        from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
