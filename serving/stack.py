"""Triton and the gateway together, started and stopped as one (demo, benchmarks)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.contract import SERVED_MODELS
from gateway.config import GatewayConfig
from serving.gateway_process import GatewayProcess
from serving.supervisor import Supervisor
from serving.triton_server import TritonConfig, TritonServer


@dataclass(frozen=True)
class StackConfig:
    """Ports and files of a local stack; the gateway reads the same model repository."""

    repository: Path
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    gateway: GatewayConfig = GatewayConfig()
    log_dir: Path | None = None
    triton_admin_key: str | None = field(default=None, repr=False)  # None: random per start


@dataclass(frozen=True)
class Stack:
    triton: TritonServer
    gateway: GatewayProcess
    supervisor: Supervisor

    def wait(self) -> None:
        """Serve until interrupted (Ctrl-C / SIGTERM); Triton is restarted if it dies."""
        stop = threading.Event()
        while not stop.wait(3600):
            pass


@contextlib.contextmanager
def serving_stack(cfg: StackConfig) -> Iterator[Stack]:
    """Start Triton (CPU configs, every served model, supervised) then the gateway; stop both (and
    every helper process) on exit."""
    logs = cfg.log_dir
    if logs:
        logs.mkdir(parents=True, exist_ok=True)
    triton = TritonServer(TritonConfig(
        cfg.repository, cfg.triton_http_port, cfg.triton_grpc_port, cfg.triton_metrics_port,
        load_models=SERVED_MODELS, log_file=logs / "triton.log" if logs else None,
        admin_key=cfg.triton_admin_key,
    ))  # fmt: skip
    gateway_cfg = replace(cfg.gateway, repository=cfg.repository, triton_url=triton.grpc_url)
    gateway = GatewayProcess(gateway_cfg, log_file=logs / "gateway.log" if logs else None)
    supervisor = Supervisor(triton)  # a Triton that dies is restarted; the gateway stays up
    with supervisor, gateway:  # the gateway starts after Triton is ready and stops first
        yield Stack(triton, gateway, supervisor)
