"""Start and stop a real ``tritonserver`` (Triton 2.51 from the ``nvidia-pytriton`` wheel).

Facts this relies on (../shared/notes/stack.md): the Python backend needs the stub for the
running Python copied into ``backends/python/``; the stub embeds libpython and sees this
virtualenv's packages when the venv's ``bin`` leads ``PATH`` and the interpreter's ``lib``
directory is in ``LD_LIBRARY_PATH`` (``PYTHONPATH`` is ignored); numpy must be < 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import MusicrecError
from core.files import compile_python
from serving import admin_key
from serving.processes import ChildProcess, free_port

__all__ = ["TritonConfig", "TritonError", "TritonServer", "free_port"]

SHM_DIR = Path("/dev/shm")
# The Python backend names each instance's region <prefix><uuid> (default prefix
# "triton_python_backend_shm_region_"). Each TritonServer gets a prefix of its own, so the regions
# a SIGKILLed server leaves can be removed without touching another live Triton's.
SHM_PREFIX = "triton_python_backend_shm_region_musicrec_"


class TritonError(MusicrecError):
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
    host: str = "127.0.0.1"  # every port binds here; 0.0.0.0 only behind a network policy
    admin_key: str | None = field(default=None, repr=False)  # None: a random one per start


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


class TritonServer(ChildProcess):
    """A ``tritonserver`` process in explicit model-control mode; use as a context manager."""

    name = "tritonserver"
    error = TritonError

    def __init__(self, config: TritonConfig) -> None:
        super().__init__(config.log_file)
        self.config = config
        self.admin_key = config.admin_key or admin_key.new_key()
        self.shm_prefix = f"{SHM_PREFIX}{secrets.token_hex(6)}_"

    def shm_regions(self) -> list[Path]:
        """This server's Python-backend shared-memory regions now present."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def after_exit(self) -> None:
        """Remove the shared-memory regions of this (dead) server: a SIGKILLed Triton and its
        stubs leave them behind, 3 MiB a start, without bound in a crash loop."""
        for region in self.shm_regions():
            with contextlib.suppress(OSError):
                region.unlink()

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers that unlock the model-repository API (load, unload, index)."""
        return admin_key.headers(self.admin_key)

    @property
    def http_url(self) -> str:
        return f"{self._reach}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._reach}:{self.config.grpc_port}"

    @property
    def _reach(self) -> str:
        """The address this machine reaches the server at."""
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host

    def command(self) -> list[str]:
        cfg, home = self.config, triton_home()
        cmd = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={cfg.repository}",
            f"--backend-directory={home / 'backends'}",
            "--model-control-mode=explicit",
            f"--http-address={cfg.host}",
            f"--grpc-address={cfg.host}",
            f"--metrics-address={cfg.host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-port={cfg.metrics_port}",
            *admin_key.restriction_flags(self.admin_key),
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--allow-metrics=true",
            "--exit-on-error=false",
        ]
        if cfg.model_config_name:
            cmd.append(f"--model-config-name={cfg.model_config_name}")
        cmd += [f"--load-model={name}" for name in cfg.load_models]
        if cfg.log_file:
            cmd.append(f"--log-file={cfg.log_file}")
        return cmd + list(cfg.extra_args)

    def environment(self) -> dict[str, str]:
        return _environment()

    def ports(self) -> dict[str, int]:
        cfg = self.config
        return {"http": cfg.http_port, "grpc": cfg.grpc_port, "metrics": cfg.metrics_port}

    def _answers(self, path: str) -> bool:
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError),
            urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=1) as resp,
        ):
            return resp.status == 200
        return False

    def is_ready(self) -> bool:
        """Ready, or (with ``load_models``) live with a version of every one of them ready: a
        version that failed to load keeps Triton's strict readiness false even after a deploy
        loaded a working one."""
        if self._answers("/v2/health/ready"):
            return True
        models = self.config.load_models
        return bool(models) and self._answers("/v2/health/live") and all(
            self._answers(f"/v2/models/{name}/ready") for name in models)  # fmt: skip

    def not_ready_reason(self) -> str:
        """The models and versions Triton's repository index reports as failed, with its
        reasons ('' when none is known)."""
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST",
            headers={admin_key.HEADER: self.admin_key})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                index = json.loads(resp.read())
        except (OSError, ValueError):
            return "Triton does not answer"
        failed = [
            f"{m['name']} version {m.get('version', '?')}: {m.get('reason', '').strip()}"
            for m in index
            if m.get("state") not in ("READY", None) and m.get("reason")
        ]
        return "; ".join(failed)[:1000]  # fmt: skip

    def launch(self) -> None:
        if not Path(self.config.repository).is_dir():
            raise TritonError(f"model repository not found: {self.config.repository}")
        install_python_stub(triton_home())
        compile_python(Path(self.config.repository))  # before Triton records its timestamps
        super().launch()

    def start(self, timeout_s: float | None = None) -> TritonServer:
        """Start the server and wait until it reports ready; raise :class:`TritonError`."""
        return super().start(timeout_s or self.config.ready_timeout_s)
