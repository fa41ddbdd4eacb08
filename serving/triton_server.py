"""Start and stop a real ``tritonserver`` (Triton 2.51 from the ``nvidia-pytriton`` wheel).

Facts this relies on (../shared/notes/stack.md): the Python backend needs the stub for the
running Python copied into ``backends/python/``; the stub embeds libpython and sees this
virtualenv's packages when the venv's ``bin`` leads ``PATH`` and the interpreter's ``lib``
directory is in ``LD_LIBRARY_PATH`` (``PYTHONPATH`` is ignored); numpy must be < 2.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serving.processes import free_port, port_free, spawn, stop_group

__all__ = ["TritonConfig", "TritonError", "TritonServer", "free_port"]


class TritonError(RuntimeError):
    """Triton could not be started or did not become ready."""


@dataclass(frozen=True)
class TritonConfig:
    """How to run the local server."""

    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_config_name: str | None = "cpu"  # <model>/configs/cpu.pbtxt: Python backend + ORT
    load_models: tuple[str, ...] = ()
    log_file: Path | None = None
    ready_timeout_s: float = 60.0
    extra_args: tuple[str, ...] = field(default_factory=tuple)


def triton_home() -> Path:
    """The wheel's ``tritonserver`` tree (binary, backends, stubs)."""
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - the setup script installs it
        raise TritonError("nvidia-pytriton is not installed: run scripts/setup.sh") from exc
    home = Path(pytriton.__file__).parent / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise TritonError(f"no tritonserver binary under {home}")
    return home


def install_python_stub(home: Path) -> None:
    """Copy the stub for this Python into ``backends/python`` (idempotent)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"the wheel has no Python backend stub for Python {version}")
    target = home / "backends" / "python" / stub.name
    if not target.is_file() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


class TritonServer:
    """A ``tritonserver`` process in explicit model-control mode; use as a context manager."""

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    def command(self, home: Path) -> list[str]:
        cfg = self.config
        cmd = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={cfg.repository}",
            f"--backend-directory={home / 'backends'}",
            "--model-control-mode=explicit",
            f"--http-port={cfg.http_port}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-port={cfg.metrics_port}",
            "--allow-metrics=true",
            "--exit-on-error=false",
        ]
        if cfg.model_config_name:
            cmd.append(f"--model-config-name={cfg.model_config_name}")
        cmd += [f"--load-model={name}" for name in cfg.load_models]
        if cfg.log_file:
            cmd.append(f"--log-file={cfg.log_file}")
        return cmd + list(cfg.extra_args)

    def start(self) -> TritonServer:
        """Start the server and wait until it reports ready; raise :class:`TritonError`."""
        cfg = self.config
        if not Path(cfg.repository).is_dir():
            raise TritonError(f"model repository not found: {cfg.repository}")
        for name, port in (("http", cfg.http_port), ("grpc", cfg.grpc_port),
                           ("metrics", cfg.metrics_port)):  # fmt: skip
            if not port_free(port):
                raise TritonError(f"{name} port {port} is already in use")
        home = triton_home()
        install_python_stub(home)
        self.process = spawn(self.command(home), _environment(), cfg.log_file)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with {self.process.returncode}; see "
                    f"{self.config.log_file or 'its log (set log_file)'}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url, timeout=1) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise TritonError(f"tritonserver not ready after {self.config.ready_timeout_s:.0f}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server and its Python-backend stubs (SIGTERM, then SIGKILL)."""
        proc, self.process = self.process, None
        stop_group(proc, timeout_s)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
