"""Child server processes (Triton, the gateway) that never outlive their parent and stop with
their whole group: one base, :class:`ChildProcess`, for every server this project starts."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port that is free now and outside the kernel's ephemeral range (for tests and
    benchmarks): a port the OS hands out for outgoing connections, e.g. Triton's own, could be
    taken between this call and the server binding it. Never the same port twice per process."""
    low, high = _ephemeral_range()
    pool = range(max(1024, low - 12_000), low) if low > 13_024 else range(high + 1, 65_536)
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(pool)
        if port not in _HANDED_OUT and port_free(port):
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port found outside the ephemeral range")


# Run in a fresh interpreter between fork and the server's exec, so nothing runs in the forked
# copy of this process: ``preexec_fn`` would make subprocess fork() and run Python there, which
# crashes the child (SIGSEGV, before exec) when other threads are inside gRPC at the fork: 41 of
# 300 starts beside a grpc.aio client (tests/test_processes.py). Without it, subprocess uses
# vfork/exec, which is safe with threads. Exits 70 if the parent died before the prctl.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "sys.exit(70) if os.getppid() != int(sys.argv[1]) else os.execvp(sys.argv[2], sys.argv[2:])"
)


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped so that (Linux) the kernel SIGTERMs it when the Python that started it
    dies: a short ``python -c`` that sets ``PR_SET_PDEATHSIG`` and execs ``cmd`` (same pid)."""
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def spawn(cmd: list[str], env: dict[str, str], log_file: Path | None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output appended to ``log_file``; it dies with
    this process (:func:`die_with_parent`)."""
    log = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            die_with_parent(cmd), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: helpers are stopped with the server
        )  # fmt: skip
    finally:
        if log is not subprocess.DEVNULL:
            log.close()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                members.append(int(stat.parent.name))
    return members


def stop_group(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``timeout_s``, and wait until no
    member is alive: helpers (Triton's Python-backend stubs) die even when the leader was
    killed first."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # stray helpers of the group
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class ChildProcess:
    """A server run as a child process: its own process group, SIGTERMed by the kernel if this
    Python dies, stopped with its whole group. Subclasses give the command, the ports it must
    find free and how to tell it is ready; use as a context manager."""

    name = "process"
    error: type[Exception] = RuntimeError

    def __init__(self, log_file: Path | None = None) -> None:
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ports(self) -> dict[str, int]:
        """Ports (by label) that must be free before the start."""
        return {}

    def is_ready(self) -> bool:
        raise NotImplementedError

    def log_tail(self, lines: int = 5, max_bytes: int = 8192) -> str:
        """The last ``lines`` lines of the child's log ('' without one): why it died."""
        if not self.log_file:
            return ""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def after_exit(self) -> None:
        """Release what a dead server leaves behind (called once its whole group is gone)."""

    def launch(self) -> None:
        """Start the process without waiting for it (a supervisor watches readiness itself)."""
        for label, port in self.ports().items():
            if port and not port_free(port):
                raise self.error(f"{label} port {port} is already in use".lstrip())
        self.process = spawn(self.command(), self.environment(), self.log_file)

    def start(self, timeout_s: float = 60.0) -> Self:
        """Start and wait until :meth:`is_ready`; raise :attr:`error` with the cause."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                where = self.log_file or "its log (set log_file)"
                tail = self.log_tail()
                raise self.error(f"{self.name} exited with {self.process.returncode}; see {where}"
                                 + (f"; it ends: {tail}" if tail else ""))  # fmt: skip
            if self.is_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise self.error(f"{self.name} not ready after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the group (graceful), SIGKILL what is left after ``timeout_s``."""
        proc, self.process = self.process, None
        stop_group(proc, timeout_s)
        self.after_exit()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
