"""The local launcher runs the real tritonserver binary: ready, clean stop, clear errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonError, TritonServer


def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def test_starts_ready_serves_metrics_and_stops_without_orphans(tmp_path):
    http, grpc, metrics = ports()
    cfg = TritonConfig(tmp_path, http, grpc, metrics, log_file=tmp_path / "triton.log")
    with TritonServer(cfg) as server:
        pid = server.process.pid
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready") as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics") as resp:
            assert resp.status == 200
    assert server.process is None
    left = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout
    assert left.strip() == ""
    assert "Started GRPCInferenceService" in (tmp_path / "triton.log").read_text()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        _, grpc, metrics = ports()
        with pytest.raises(TritonError, match=f"http port {taken} is already in use"):
            TritonServer(TritonConfig(tmp_path, taken, grpc, metrics)).start()


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(TritonError, match="model repository not found"):
        TritonServer(TritonConfig(tmp_path / "nope", *ports())).start()


def test_server_does_not_outlive_a_killed_launcher(tmp_path):
    http, grpc, metrics = ports()
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from serving.triton_server import TritonConfig, TritonServer\n"
        f"cfg = TritonConfig(Path({str(tmp_path)!r}), {http}, {grpc}, {metrics})\n"
        "s = TritonServer(cfg).start()\n"
        "print(s.process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    pid = int(child.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
