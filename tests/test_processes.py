"""Child servers start safely beside gRPC threads and die with the Python that started them."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving.processes import ChildProcess, free_port, spawn
from serving.supervisor import Supervisor


def _hammer(targets: list[str], stop: threading.Event) -> None:
    """grpc.aio calls as fast as they come back (answered or refused), like AsyncLoad's."""

    async def run() -> None:
        channels = [grpc.aio.insecure_channel(t) for t in targets]

        async def worker(channel: grpc.aio.Channel) -> None:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                except grpc.RpcError:
                    await asyncio.sleep(0)

        await asyncio.gather(*[worker(c) for c in channels])
        for channel in channels:
            await channel.close()

    asyncio.run(run())


def test_children_start_while_other_threads_are_inside_grpc():
    """CI failure: a SIGKILLed Triton's restarts died with SIGSEGV three times in a row while
    the test's grpc.aio load ran. spawn's preexec_fn forked this process and ran Python in the
    copy; with gRPC threads mid-call that crashed the child before exec (41 of 300 here)."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    live = free_port()
    server.add_insecure_port(f"127.0.0.1:{live}")
    server.start()
    stop = threading.Event()
    targets = [f"127.0.0.1:{p}" for p in (live, live, free_port(), free_port())]  # 2 refuse
    load = threading.Thread(target=_hammer, args=(targets, stop), daemon=True)
    load.start()
    try:
        time.sleep(0.5)
        codes = collections.Counter(spawn(["/bin/true"], {}, None).wait() for _ in range(300))
    finally:
        stop.set()
        load.join(timeout=10)
        server.stop(0)
    assert codes == {0: 300}, codes


def test_a_child_is_terminated_when_its_parent_dies(tmp_path):
    """The kernel SIGTERMs a spawned server when the Python that started it is SIGKILLed."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from serving.processes import spawn\n"
        "child = spawn(['sleep', '300'], {'PATH': '/usr/bin:/bin'}, None)\n"
        "pathlib.Path(sys.argv[2]).write_text(str(child.pid)); time.sleep(300)"),
        os.getcwd(), str(pid_file)])  # fmt: skip
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    while _cmdline(child)[:1] != ["sleep"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the wrapper execs the command in the same process
    assert _cmdline(child) == ["sleep", "300"]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the spawned child outlived its parent"


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode().split("\0")[:-1]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running and not a zombie (a dead child of init is reaped at once; of us, not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _Crashing(ChildProcess):
    """A server that is ready while it runs, then prints its cause and exits."""

    name = "crasher"

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", "echo starting; sleep 0.5; echo 'fatal: disk full' >&2; exit 3"]

    def is_ready(self) -> bool:
        return self.process is not None and self.process.poll() is None


def test_the_supervisor_logs_why_a_child_exited(tmp_path, caplog):
    """A failure is logged with its cause: the exit status and the end of the child's log."""
    caplog.set_level(logging.ERROR, logger="serving.supervisor")
    supervisor = Supervisor(_Crashing(tmp_path / "crasher.log"), backoff_s=0.2)
    with supervisor:
        deadline = time.monotonic() + 20
        while supervisor.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    exits = [r.getMessage() for r in caplog.records if "exited" in r.getMessage()]
    assert exits and exits[0].startswith("crasher exited (3)"), exits
    assert "its log ends: starting | fatal: disk full" in exits[0], exits
