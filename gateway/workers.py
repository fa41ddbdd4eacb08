"""Several gateway processes on one port: ``python -m gateway --workers N``.

A supervising parent holds the port (a socket with SO_REUSEPORT, bound but never listening, as
grpc's ``examples/python/multiprocessing`` does) and starts N workers as fresh interpreters
(``python -m gateway --worker-of <parent pid>``, never a fork of a process that imported gRPC).
Each worker is a whole :class:`gateway.server.Gateway` with its own Triton channel, bound to the
same port with ``grpc.so_reuseport``; the kernel spreads new connections over the listening
workers. The parent:

* restarts a worker that exits (logged with its exit code or signal), after a pause that
  doubles while restarts come quickly (:data:`RESTART_PAUSE_S` up to :data:`RESTART_PAUSE_MAX_S`),
  counted in ``musicrec_gateway_worker_restarts_total``; a worker whose first run ends within
  :data:`STEADY_S` with the start-up error status (2: port, certificate or token) stops the
  whole gateway with status 2;
* serves ``/metrics`` on ``--metrics-port``: every worker's metrics aggregated with
  prometheus_client's multiprocess mode (a private ``PROMETHEUS_MULTIPROC_DIR``), plus its own;
* on SIGTERM or SIGINT, SIGTERMs the workers, waits for their graceful shutdown (``drain_s``
  plus ``grace_s``, then :data:`STOP_MARGIN_S`; SIGKILL after that) and exits.

Workers share the parent's process group (a group SIGTERM reaches them all) and have the kernel
SIGTERM them if the parent dies (``PR_SET_PDEATHSIG``). Each worker answers health for itself.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess, start_http_server

from gateway import logs
from gateway.config import GatewayConfig

log = logging.getLogger("gateway.workers")
RESTART_PAUSE_S, RESTART_PAUSE_MAX_S = 0.5, 10.0
STEADY_S = 30.0  # a worker that ran this long resets the restart pause
STOP_MARGIN_S = 5.0  # beyond drain_s + grace_s, before a worker is SIGKILLed
START_ERROR = 2  # gateway.server.main's status for a port, certificate or token it cannot use
_TICK_S = 0.1
_PR_SET_PDEATHSIG = 1


def flags(config: GatewayConfig) -> list[str]:
    """The command-line flags that give ``config`` back (one per field, ``--no-x`` for False)."""
    out: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            out += [flag, str(value)]
    return out


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The parent's hidden flags for its workers."""
    parser.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def become_worker(parent: int) -> None:
    """In a worker, first thing: the kernel SIGTERMs it when ``parent`` dies (Linux); exit at
    once if that already happened (this process was adopted by another)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(f"gateway worker: parent {parent} is gone")


class _WorkerFields(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index, self.pid = index, os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker, record.pid = self.index, self.pid
        return True


def label_logs(index: int) -> None:
    """Every record of this worker carries ``worker`` (its slot) and ``pid``."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerFields(index))


def worker_log_file(log_file: Path, index: int) -> Path:
    """Where worker ``index`` writes its log when the parent writes to ``log_file``: one file
    per process, since a rotated file cannot be shared between processes."""
    return log_file.with_name(f"{log_file.stem}-worker{index}{log_file.suffix}")


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold ``port`` on ``host`` (a free one when 0) for the workers: a socket with
    SO_REUSEPORT, bound and never listening. A plain bind first makes sure no other program
    holds the port (a foreign SO_REUSEPORT listener would otherwise share it)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        probe.bind((host, port))
        port = probe.getsockname()[1]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield port


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    started: float = 0.0
    quick_exits: int = 0  # exits in a row within STEADY_S of the start (the pause doubles)
    due: float = 0.0  # when to start it again (monotonic), while ``process`` is None


class _ParentMetrics:
    """The workers' metrics aggregated from ``directory``, and the parent's own."""

    def __init__(self, directory: str) -> None:
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=directory)
        self.restarts = Counter("musicrec_gateway_worker_restarts",
                                "Gateway worker processes started again after one exited",
                                registry=self.registry)  # fmt: skip
        self.alive = Gauge("musicrec_gateway_workers", "Gateway worker processes running",
                           registry=self.registry)  # fmt: skip


class Supervisor:
    """The parent of ``config.workers`` workers on ``port``; :meth:`run` until a signal."""

    def __init__(self, config: GatewayConfig, port: int, directory: str) -> None:
        self.config, self.port, self.directory = config, port, directory
        self.workers = [_Worker(i) for i in range(config.workers)]
        self.metrics = _ParentMetrics(directory)
        self.stopping = threading.Event()
        log_file = os.environ.get(logs.FILE_ENV)
        self.log_file = Path(log_file) if log_file else None

    def run(self) -> int:
        """Start the workers and keep them running until SIGTERM or SIGINT; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        if self.config.metrics_port:
            start_http_server(self.config.metrics_port, addr=self.config.host,
                              registry=self.metrics.registry)  # fmt: skip
        log.info("supervising", extra={"address": f"{self.config.host}:{self.port}",
                                       "workers": self.config.workers,
                                       "metrics_port": self.config.metrics_port,
                                       "metrics_dir": self.directory})  # fmt: skip
        status = 0
        try:
            while not self.stopping.is_set():
                if (status := self._tend()) != 0:
                    break
                self.stopping.wait(_TICK_S)
        finally:
            self._stop_all()
        return status

    def _tend(self) -> int:
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is None:
                if now >= worker.due:
                    self._start(worker)
            elif (code := worker.process.poll()) is not None:
                if worker.runs == 1 and code == START_ERROR and now - worker.started < STEADY_S:
                    log.error("worker could not start; stopping",
                              extra={"worker": worker.index, "exit_code": code})  # fmt: skip
                    worker.process = None
                    return START_ERROR
                self._exited(worker, code, now)
        return 0

    def _start(self, worker: _Worker) -> None:
        config = dataclasses.replace(self.config, workers=1, port=self.port, metrics_port=0)
        command = [sys.executable, "-m", "gateway", *flags(config), "--worker-of",
                   str(os.getpid()), "--worker-index", str(worker.index)]  # fmt: skip
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.directory)
        if self.log_file:
            env[logs.FILE_ENV] = str(worker_log_file(self.log_file, worker.index))
        # stderr: the parent's own (its fd 2 may be a pipe into its JSON logger, logs.py)
        worker.process = subprocess.Popen(command, env=env, stderr=sys.stderr)
        if worker.runs:
            self.metrics.restarts.inc()
        worker.runs, worker.started = worker.runs + 1, time.monotonic()
        self.metrics.alive.set(sum(w.process is not None for w in self.workers))
        log.info("worker started", extra={"worker": worker.index, "pid": worker.process.pid,
                                          "run": worker.runs})  # fmt: skip

    def _exited(self, worker: _Worker, code: int, now: float) -> None:
        assert worker.process is not None
        pid, uptime = worker.process.pid, now - worker.started
        multiprocess.mark_process_dead(pid, self.directory)  # its live gauges go
        worker.quick_exits = worker.quick_exits + 1 if uptime < STEADY_S else 1
        pause = min(RESTART_PAUSE_MAX_S, RESTART_PAUSE_S * 2 ** (worker.quick_exits - 1))
        worker.process, worker.due = None, now + pause
        self.metrics.alive.set(sum(w.process is not None for w in self.workers))
        log.error("worker exited; restarting it",
                  extra={"worker": worker.index, "pid": pid, **exit_cause(code),
                         "uptime_s": round(uptime, 1), "restart_in_s": pause})  # fmt: skip

    def _stop_all(self) -> None:
        running = [(w, w.process) for w in self.workers if w.process is not None]
        for _, process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.drain_s + self.config.grace_s + STOP_MARGIN_S
        for worker, process in running:
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            multiprocess.mark_process_dead(process.pid, self.directory)
            worker.process = None
            log.info("worker stopped", extra={"worker": worker.index, "pid": process.pid,
                                              **exit_cause(code)})  # fmt: skip


def exit_cause(code: int) -> dict[str, int | str]:
    """A process's exit status as log fields: ``exit_code``, or ``signal`` when killed."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return {"signal": signal.Signals(-code).name}
    return {"exit_code": code}


def supervise(config: GatewayConfig) -> int:
    """Run ``config.workers`` workers on one port under this process; the exit status."""
    try:
        with (
            reserve_port(config.host, config.port) as port,
            tempfile.TemporaryDirectory(prefix="musicrec-gateway-metrics-") as directory,
        ):
            return Supervisor(config, port, directory).run()
    except OSError as exc:  # the port or the metrics port taken
        print(f"error: {exc}", file=sys.stderr)
        return START_ERROR
