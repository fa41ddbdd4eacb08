"""The gateway's settings, in one typed place (flags and ``MUSICREC_GATEWAY_*`` variables)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.endpoints import static_endpoints
from core.modes import DEFAULT_MODE, MODE_NAMES
from core.paths import DEFAULT_REPOSITORY
from core.similarity import BACKENDS

ENV_PREFIX = "MUSICREC_GATEWAY_"


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway listens, where Triton and the model repository are, and its limits."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9101  # Prometheus /metrics over HTTP; 0 turns it off
    triton_url: str = "127.0.0.1:8001"  # or replicas: a:8001,b:8001 or dns:///name:8001
    repository: Path = DEFAULT_REPOSITORY  # read for each version's vocabulary and known plays
    scoring: str = DEFAULT_MODE  # a request may ask for another registered mode
    backend: str = "auto"  # similarity on "cpu" (SciPy), "gpu" (CuPy) or whichever is present
    neighbours: int = 10  # similar users combined for a new listener, as in the seed
    default_k: int = 10
    max_k: int = 500
    max_neighbours: int = 100
    max_history: int = 10_000
    triton_timeout_s: float = 10.0  # per request when the caller sets no deadline
    # Concurrent requests' candidate calls joined into one Triton request (gateway/coalescing.py):
    # at most this many requests a call, this many calls per model version in flight before the
    # next requests queue. Off (1) by default: side by side on a CPU host, 8 a call served 4-7%
    # fewer requests/s than 1 (benchmarks/cost.py --extras-only); a host where a Triton call
    # costs more than its batching may differ
    triton_batch: int = 1
    triton_in_flight: int = 2
    known_user_cache: int = 4096  # known users whose stage 1 is kept (~14 KB each; 0: none)
    poll_interval_s: float = 1.0  # how often Triton is asked which version is ready
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 256  # beyond this, RESOURCE_EXHAUSTED at once (0: no limit)
    workers: int = 1  # processes sharing the port (SO_REUSEPORT) under a parent: gateway/workers.py
    shadow_max_in_flight: int = 1  # shadow calls at once (gateway/rollout.py); more are dropped
    drain_s: float = 0.0  # on SIGTERM: NOT_SERVING but still answering, this long first
    grace_s: float = 5.0  # in-flight requests get this long to finish on shutdown
    log_json: bool = True
    # BLAS threads (threadpoolctl, at start-up): 1, as measured by benchmarks/cost.py; the
    # gateway's matrices are small and a BLAS worker pool spins between requests
    blas_threads: int = 1
    tls_cert_file: Path | None = None  # serve TLS with this certificate chain (PEM) ...
    tls_key_file: Path | None = None  # ... and its private key
    tls_client_ca_file: Path | None = None  # mutual TLS: clients need a certificate of this CA
    token_file: Path | None = None  # callers must send "authorization: Bearer <its content>"
    allow_plaintext: bool = False  # plaintext beyond loopback (behind a private network only)
    # Load a version whose manifest records no file checksums (unverified; refused by default)
    allow_unverified_artifacts: bool = False
    # The event-loop lag probe (musicrec_gateway_event_loop_lag_max_seconds): how often it
    # wakes (0: off) and the window its maximum covers
    loop_probe_s: float = 0.1
    loop_probe_window_s: float = 10.0
    # How long a worker thread (a long history's checks and stage 1) may hold the GIL before
    # the event loop gets it back (sys.setswitchinterval; Python's default is 5 ms)
    switch_interval_s: float = 0.001
    # Feedback (gateway/feedback.py): served lists kept under their recommendation_id, at most
    # this many (the oldest out first; 0.8 KB each at k = 10, measured with tracemalloc: ~80 MB
    # at the default) and for this long (a listener's plays come within minutes of the answer)
    feedback_max_entries: int = 100_000
    feedback_ttl_s: float = 3600.0
    # The event log (gateway/event_log.py): impressions and feedback into SQLite segments in
    # this directory (None: off); committed every events_flush_s (what a SIGKILL can lose), at
    # most events_queue waiting (more are dropped, counted), a new segment past
    # events_segment_rows rows, the oldest deleted beyond events_max_segments (~200 bytes a row
    # at k = 10, measured: at most ~0.8 GB at the defaults); with --workers, worker i writes
    # DIR/worker-<i>/
    events: Path | None = None
    events_flush_s: float = 1.0
    events_queue: int = 50_000
    events_segment_rows: int = 200_000
    events_max_segments: int = 20

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("mutual TLS (tls_client_ca_file) needs tls_cert_file and "
                             "tls_key_file")  # fmt: skip
        loopback = self.host in ("127.0.0.1", "localhost", "::1")
        if not (loopback or self.tls_cert_file or self.allow_plaintext):
            raise ValueError(f"plaintext on {self.host} is refused: give tls_cert_file and "
                             "tls_key_file, or allow_plaintext on a private network")  # fmt: skip
        static_endpoints(self.triton_url)  # raises ValueError when malformed
        if self.scoring not in MODE_NAMES:
            raise ValueError(f"scoring must be one of {', '.join(MODE_NAMES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        for name in ("max_k", "max_neighbours", "max_history", "default_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65_535:
                raise ValueError(f"{name} must be a TCP port (0..65535)")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be >= 1024")
        if self.grace_s < 0 or self.drain_s < 0:
            raise ValueError("grace_s and drain_s must be >= 0")
        if not 1 <= self.neighbours <= self.max_neighbours:
            raise ValueError(f"neighbours must be in 1..{self.max_neighbours}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in 1..{self.max_k}")
        if self.known_user_cache < 0:
            raise ValueError("known_user_cache must be >= 0 (0: no cache)")
        if self.shadow_max_in_flight < 0:
            raise ValueError("shadow_max_in_flight must be >= 0 (0: no shadow calls)")
        if self.max_concurrent_rpcs < 0:
            raise ValueError("max_concurrent_rpcs must be >= 0 (0: no limit)")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        for name in ("blas_threads", "triton_batch", "triton_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.switch_interval_s <= 0:
            raise ValueError("switch_interval_s must be > 0")
        if self.loop_probe_s < 0 or self.loop_probe_window_s <= 0:
            raise ValueError("loop_probe_s must be >= 0 (0: off), loop_probe_window_s > 0")
        self._check_feedback()
        if self.triton_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ValueError("timeouts and intervals must be positive")

    def _check_feedback(self) -> None:
        for name in ("feedback_max_entries", "events_queue", "events_segment_rows",
                     "events_max_segments"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.feedback_ttl_s <= 0 or self.events_flush_s <= 0:
            raise ValueError("feedback_ttl_s and events_flush_s must be > 0")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field; each defaults to ``MUSICREC_GATEWAY_<FIELD>`` or the field default."""
    for f in dataclasses.fields(GatewayConfig):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        default = f.default if env is None else _parse(f.type, env)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"env {ENV_PREFIX}{f.name.upper()}"
        if f.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            choices = {"scoring": MODE_NAMES, "backend": BACKENDS}.get(f.name)
            parser.add_argument(flag, type=_converter(f.type), default=default, choices=choices,
                                help=help_text)  # fmt: skip


def from_arguments(args: argparse.Namespace) -> GatewayConfig:
    names = [f.name for f in dataclasses.fields(GatewayConfig)]
    return GatewayConfig(**{name: getattr(args, name) for name in names})


def _converter(type_name: Any) -> Any:
    return {"int": int, "float": float, "Path": Path, "Path | None": Path}.get(type_name, str)


def _parse(type_name: Any, raw: str) -> Any:
    if type_name == "bool":
        return raw.lower() in {"1", "true", "yes", "on"}
    return _converter(type_name)(raw)
