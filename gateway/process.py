"""Run the gateway as a child process (the demo, tests and benchmarks use this)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import GatewayConfig
from serving.processes import port_free, spawn, stop_group


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not become healthy in time."""


def command(config: GatewayConfig) -> list[str]:
    """``python -m gateway`` with one flag per config field."""
    cmd = [sys.executable, "-m", "gateway"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(flag if value else "--no-" + flag[2:])
        else:
            cmd += [flag, str(value)]
    return cmd


def health_status(address: str, timeout_s: float = 1.0) -> str:
    """The gateway's overall health (``SERVING``, ``NOT_SERVING``...) or ``UNREACHABLE``."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class GatewayProcess:
    """``with GatewayProcess(config) as gw:`` starts the gateway and waits for its health."""

    def __init__(self, config: GatewayConfig, log_file: Path | None = None) -> None:
        self.config = config
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    def start(self, wait_for: str = "SERVING", timeout_s: float = 60.0) -> GatewayProcess:
        """Start; wait until health reports ``wait_for`` (or any answer, with ``"ANY"``)."""
        for port in (self.config.port, self.config.metrics_port):
            if port and not port_free(port):
                raise GatewayStartError(f"port {port} is already in use")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = spawn(command(self.config), env, self.log_file)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GatewayStartError(f"gateway exited with {self.process.returncode}; "
                                        f"see {self.log_file or 'its log'}")  # fmt: skip
            status = health_status(self.address)
            if status == wait_for or (wait_for == "ANY" and status != "UNREACHABLE"):
                return self
            time.sleep(0.2)
        self.stop()
        raise GatewayStartError(f"gateway not {wait_for} after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful: in-flight requests drain), SIGKILL after ``timeout_s``."""
        proc, self.process = self.process, None
        stop_group(proc, timeout_s)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
