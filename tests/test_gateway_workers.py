"""Issue 22, ``--workers 2``: two gateway processes on one port under a supervising parent.

Real processes throughout: Triton, the parent (``python -m gateway --workers 2``) and its
workers. Each worker's identity is read from what it really writes: the parent logs every
worker it starts (index and pid), each worker logs to its own file (``gateway-worker<i>.log``,
every record with its pid) including the access line of each RPC, and the parent's ``/metrics``
aggregates all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.contract import SERVED_MODELS
from export.repository import export_run
from gateway.config import GatewayConfig, add_arguments, from_arguments
from gateway.workers import exit_cause, flags, reserve_port, worker_log_file
from loadtests.async_load import AsyncLoad
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.gateway_process import GatewayProcess
from serving.processes import free_port, group_members
from serving.triton_server import TritonConfig, TritonServer
from training.run import load_run

pytestmark = pytest.mark.slow
WORKERS = 2


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return out


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Gateway:
    """The parent's process, its log and each worker's log."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process
        self.log = process.json_log
        self.metrics_url = f"http://127.0.0.1:{process.config.metrics_port}/metrics"

    def started(self) -> dict[int, list[int]]:
        """Pids of each worker slot, in the order the parent started them."""
        pids: dict[int, list[int]] = {}
        for r in _records(self.log):
            if r.get("msg") == "worker started":
                pids.setdefault(r["worker"], []).append(r["pid"])
        return pids

    def listening(self, index: int) -> set[int]:
        """Pids of worker ``index`` that have bound the port and started serving."""
        path = worker_log_file(self.log, index)
        return {r["pid"] for r in _records(path) if r.get("msg") == "listening"}

    def all_listening(self) -> bool:
        started = self.started()
        return len(started) == WORKERS and all(
            started[i][-1] in self.listening(i) for i in range(WORKERS)
        )

    def recommends(self, index: int) -> int:
        """Access lines of Recommend calls worker ``index`` (any of its runs) logged."""
        path = worker_log_file(self.log, index)
        return sum(r.get("msg") == "rpc" and r.get("method") == "Recommend"
                   for r in _records(path))  # fmt: skip

    def metric(self, name: str, **labels: str) -> float:
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        return sum(s.value for family in text_string_to_metric_families(text)
                   for s in family.samples
                   if s.name == name and labels.items() <= s.labels.items())  # fmt: skip


@pytest.fixture(scope="module")
def gateway(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    triton = TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                       load_models=SERVED_MODELS,
                                       log_file=root / "triton.log")).start()  # fmt: skip
    config = GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu",
                           triton_url=triton.grpc_url, repository=repo, poll_interval_s=0.2,
                           grace_s=2, workers=WORKERS)  # fmt: skip
    process = GatewayProcess(config, log_file=root / "gateway.log")
    gw = Gateway(process)
    try:
        process.start()
        _wait(gw.all_listening, 60, "both workers to listen")
        yield gw
    finally:
        process.stop()
        triton.stop()
        for r in _records(gw.log):  # the parent's private metrics directory, if it was killed
            if r.get("metrics_dir"):
                shutil.rmtree(r["metrics_dir"], ignore_errors=True)


@pytest.fixture(scope="module")
def users(run_dir):
    run = load_run(run_dir)
    return [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]


def test_both_workers_answer_on_the_one_port(gateway, users):
    members = group_members(gateway.process.process.pid)
    assert len(members) == 1 + WORKERS, members  # the parent and its workers, one group
    before = [gateway.recommends(i) for i in range(WORKERS)]
    calls = 24
    for i in range(calls):
        # a channel of its own (no shared subchannel): a new TCP connection, placed by the
        # kernel on one of the listening workers
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(gateway.process.address, options=options) as channel:
            reply = pb_grpc.RecommenderStub(channel).Recommend(
                pb.RecommendRequest(user_id=users[i], k=5), timeout=30)  # fmt: skip
            assert len(reply.artists) == 5
    _wait(lambda: sum(gateway.recommends(i) for i in range(WORKERS)) - sum(before) >= calls,
          10, "every call's access line")  # fmt: skip
    served = [gateway.recommends(i) - before[i] for i in range(WORKERS)]
    print(f"{calls} fresh connections, calls per worker: {served}")
    assert sum(served) == calls and min(served) > 0, served
    assert gateway.metric("musicrec_gateway_requests_total", method="Recommend") >= calls
    assert gateway.metric("musicrec_gateway_workers") == WORKERS
    assert gateway.metric("musicrec_gateway_model_version") == 1
    assert gateway.metric("musicrec_gateway_triton_up") == 1


def test_a_killed_worker_is_restarted_and_no_call_fails(gateway, users):
    ok_before = gateway.metric("musicrec_gateway_requests_total", method="Recommend", code="OK")
    lines_before = [gateway.recommends(i) for i in range(WORKERS)]
    with AsyncLoad(gateway.process.address, users, concurrency=8) as load:
        assert load.wait_for(200, timeout_s=60)
        # the load's one channel holds one connection, so one worker serves it: kill that one
        grown = [gateway.recommends(i) - lines_before[i] for i in range(WORKERS)]
        victim = grown.index(max(grown))
        pid = gateway.started()[victim][-1]
        os.kill(pid, signal.SIGKILL)
        at_kill = load.ok
        _wait(lambda: len(gateway.started()[victim]) == 2, 30, "the parent to restart it")
        new_pid = gateway.started()[victim][-1]
        _wait(lambda: new_pid in gateway.listening(victim), 60, "the new worker to listen")
        assert load.wait_for(load.ok + 300, timeout_s=120), "the load did not carry on"
    assert load.failures == [], load.failures[:3]
    exits = [r for r in _records(gateway.log) if r.get("msg") == "worker exited; restarting it"]
    assert [(r["worker"], r["pid"], r["signal"]) for r in exits] == [(victim, pid, "SIGKILL")]
    assert new_pid != pid and new_pid in group_members(gateway.process.process.pid)
    assert gateway.metric("musicrec_gateway_worker_restarts_total") == 1
    assert gateway.metric("musicrec_gateway_workers") == WORKERS
    # Counted by every worker that answered, the killed one included (its file stays): each
    # call the client saw answered once, plus at most the calls in flight at the kill (answered
    # and counted, then lost with the connection, and answered again by another worker).
    counted = gateway.metric("musicrec_gateway_requests_total", method="Recommend",
                             code="OK") - ok_before  # fmt: skip
    print(f"{load.ok} calls ({at_kill} before the kill), worker {victim} (pid {pid}) SIGKILLed "
          f"and restarted as pid {new_pid}: 0 failed; counted {counted:.0f} over the workers; "
          f"Recommend lines per worker during the load: {grown}")  # fmt: skip
    assert load.ok <= counted <= load.ok + load.concurrency, (counted, load.ok)


def test_the_workers_die_with_their_parent(gateway):
    parent = gateway.process.process
    workers = [p for p in group_members(parent.pid) if p != parent.pid]
    assert len(workers) == WORKERS
    parent.send_signal(signal.SIGKILL)  # no forwarding: the kernel's PR_SET_PDEATHSIG
    parent.wait()
    # each worker shuts down gracefully on the SIGTERM the kernel sends (grace_s=2)
    _wait(lambda: not group_members(parent.pid), 30, "the workers to exit")
    stopped = {r["pid"] for i in range(WORKERS)
               for r in _records(worker_log_file(gateway.log, i))
               if r.get("msg") == "shutting down"}  # fmt: skip
    assert set(workers) <= stopped


def test_the_workers_flags_give_the_parents_config_back(monkeypatch):
    for var in [v for v in os.environ if v.startswith("MUSICREC_GATEWAY_")]:
        monkeypatch.delenv(var)
    config = GatewayConfig(port=1234, workers=3, log_json=False, token_file=Path("/t"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args(flags(config))) == config


def test_a_port_another_program_listens_on_is_refused_even_with_so_reuseport():
    with socket.socket() as other:  # as a foreign gRPC server binds (SO_REUSEPORT by default)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError), reserve_port("127.0.0.1", other.getsockname()[1]):
            pass
    with reserve_port("127.0.0.1", 0) as port:
        assert port > 0


def test_exit_causes():
    assert exit_cause(-signal.SIGKILL) == {"signal": "SIGKILL"}
    assert exit_cause(3) == {"exit_code": 3}
