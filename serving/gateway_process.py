"""Run the gateway as a child process (the demo stack, tests and benchmarks use this)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import MusicrecError
from gateway import logs
from gateway.config import GatewayConfig
from gateway.workers import flags
from serving.processes import ChildProcess


class GatewayStartError(MusicrecError):
    """The gateway process exited or did not become healthy in time."""


def command(config: GatewayConfig) -> list[str]:
    """``python -m gateway`` with one flag per config field (``--workers N`` included: the
    gateway is then a parent whose workers share its process group, so
    ``GatewayProcess.stop`` ends them with it; it is ready once one worker is)."""
    return [sys.executable, "-m", "gateway", *flags(config)]


def health_status(address: str, timeout_s: float = 1.0,
                  credentials: grpc.ChannelCredentials | None = None) -> str:  # fmt: skip
    """The gateway's overall health (``SERVING``, ``NOT_SERVING``...) or ``UNREACHABLE``;
    ``credentials`` for a gateway that serves TLS."""
    channel = (grpc.secure_channel(address, credentials) if credentials
               else grpc.insecure_channel(address))  # fmt: skip
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class GatewayProcess(ChildProcess):
    """``with GatewayProcess(config) as gw:`` starts the gateway and waits for its health.

    With ``log_file`` the gateway writes its JSON log there itself, rotated
    (``gateway/logs.py``); what the process prints outside its logger (a start-up error, a
    crash's traceback) goes to ``<name>.stderr.log`` beside it, never into a rotated file."""

    name = "gateway"
    error = GatewayStartError

    def __init__(self, config: GatewayConfig, log_file: Path | None = None, *,
                 probe_credentials: grpc.ChannelCredentials | None = None) -> None:  # fmt: skip
        self.json_log = Path(log_file) if log_file else None
        super().__init__(self.json_log.with_suffix(".stderr.log") if self.json_log else None)
        self.config = config
        self.probe_credentials = probe_credentials  # to check the health of a TLS gateway
        self.wait_for = "SERVING"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    def command(self) -> list[str]:
        return command(self.config)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.json_log:
            env[logs.FILE_ENV] = str(self.json_log)
        return env

    def ports(self) -> dict[str, int]:
        return {"": self.config.port, "metrics": self.config.metrics_port}

    def is_ready(self) -> bool:
        status = health_status(self.address, credentials=self.probe_credentials)
        return status == self.wait_for or (self.wait_for == "ANY" and status != "UNREACHABLE")

    def start(self, wait_for: str = "SERVING", timeout_s: float = 60.0) -> GatewayProcess:
        """Start; wait until health reports ``wait_for`` (or any answer, with ``"ANY"``)."""
        self.wait_for = wait_for
        return super().start(timeout_s)
