"""Faults production meets, against the real Triton and gateway: a corrupt version, a dead
poller, health that must tell the truth."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient

from client import RecommenderClient, RecommenderError
from core.contract import CANDIDATE_SCORER, CATALOGUE_SCORER, PLAYS, SERVED_MODELS
from export.repository import export_run
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version, truncate
from serving.gateway_process import health_status
from serving.processes import free_port, group_members
from serving.stack import StackConfig, serving_stack
from training.run import load_run

TRITON_SHM = "triton_python_backend_shm_region_"  # the Python backend's regions in /dev/shm

pytestmark = pytest.mark.slow


def serve_only(repo: Path, triton, version: int) -> None:
    """Pin ``version`` in every model and have Triton load it (what a deploy ends with)."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[version])
        client.load_model(name, headers=triton.admin_headers)


def eventually(check, timeout_s: float = 30.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(every_s)
    return result


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


@pytest.fixture(scope="module")
def stack(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=free_port(),
                                            backend="cpu", poll_interval_s=0.2),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        yield running, repo, cfg


def test_a_corrupt_version_is_reported_health_turns_false_and_a_valid_one_serves_again(
    stack, run_dir
):
    running, repo, cfg = stack
    user = next(u for i, u in enumerate(load_run(run_dir).vocab.user_ids)
                if load_run(run_dir).plays[i].nnz)  # fmt: skip
    address = running.gateway.address
    with RecommenderClient(address, timeout_s=10) as client:
        assert client.recommend(user, k=3).model_version == 1
        info = client.serving_info()  # says which run, never where it lies on the host
        assert info.source_run == run_dir.name and "/" not in info.source_run
        clone_version(repo, 1, 2)
        truncate(repo / CATALOGUE_SCORER / "2" / PLAYS)  # not a zip any more
        serve_only(repo, running.triton, 2)  # Triton serves it; the gateway cannot

        assert eventually(lambda: health_status(address) == "NOT_SERVING"), "health lied"
        with pytest.raises(RecommenderError) as err:
            client.recommend(user, k=3)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "version 2" in err.value.details and f"mismatch in {PLAYS}" in err.value.details
        assert metric(cfg.gateway.metrics_port, "musicrec_gateway_version_load_errors_total") >= 1
        log = (cfg.log_dir / "gateway.log").read_text()
        assert "cannot load model version 2" in log and f"mismatch in {PLAYS}" in log

        clone_version(repo, 1, 3)  # a valid version: the poller is alive and picks it up
        serve_only(repo, running.triton, 3)
        assert eventually(lambda: health_status(address) == "SERVING")
        assert client.recommend(user, k=3).model_version == 3


def requests_served(port: int) -> float:
    """Recommend calls a gateway answered, from its metrics (its access log is sampled)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("musicrec_gateway_requests_total{")
               and 'method="Recommend"' in line)  # fmt: skip


def _triton_processes(repo: Path) -> list[int]:
    """Processes whose command line names ``repo`` (tritonserver and its stubs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(repo) in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


def test_a_killed_triton_comes_back_alone_and_leaves_no_stub_behind(run_dir, tmp_path):
    repo = tmp_path / "model_repository"
    export_run(run_dir, repo)
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.2),
                      log_dir=tmp_path / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        gateway_pid, old = running.gateway.process.pid, running.triton.process.pid
        stubs = [p for p in group_members(old) if p != old]
        assert stubs, "the Python backend runs its models in stub processes"
        regions = running.triton.shm_regions()  # one per model instance, named by this server
        assert regions and all(r.name.startswith(TRITON_SHM) for r in regions)
        with AsyncLoad(running.gateway.address, users, concurrency=4) as load:
            assert load.wait_for(50, timeout_s=60)
            killed = time.monotonic()
            os.kill(old, signal.SIGKILL)

            def back() -> bool:
                proc = running.triton.process
                return (proc is not None and proc.pid != old
                        and health_status(running.gateway.address) == "SERVING")  # fmt: skip

            assert eventually(back, timeout_s=90), "Triton was not restarted"
            recovery_s = time.monotonic() - killed
            answered = load.ok
            assert load.wait_for(answered + 100, timeout_s=60), "no answers after the restart"
        assert group_members(old) == [], "a stub of the killed Triton survived"
        after = running.triton.shm_regions()
        assert not set(regions) & set(after), "the killed Triton's shared memory was left"
        assert len(after) == len(regions)  # the new server's own, no more
        assert running.gateway.process.pid == gateway_pid and running.gateway.process.poll() is None
        assert running.supervisor.restarts == 1
        assert all(f.startswith("UNAVAILABLE") for f in load.failures), load.failures[:3]
        print(f"recovered in {recovery_s:.1f} s; {load.ok} answered, {len(load.failures)} failed")
    assert eventually(lambda: _triton_processes(repo) == [], timeout_s=10), "left behind"
    assert running.triton.shm_regions() == [], "shared memory left after the stack stopped"


def test_a_client_of_two_gateways_loses_no_request_when_one_is_killed(stack, run_dir, tmp_path):
    """Issue 11, replicated gateways: one target naming two gateways (round_robin), SIGKILL one
    under load; the client's retries on UNAVAILABLE carry every call to the other."""
    from serving.gateway_process import GatewayProcess

    running, repo, cfg = stack
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    gateways = [
        GatewayProcess(GatewayConfig(port=free_port(), metrics_port=free_port(), backend="cpu",
                                     triton_url=running.triton.grpc_url, repository=repo),
                       log_file=tmp_path / f"gw{i}.log").start()
        for i in range(2)
    ]  # fmt: skip
    target = "ipv4:" + ",".join(g.address for g in gateways)
    try:
        with AsyncLoad(target, users, concurrency=16) as load:  # more in flight than retry tokens
            assert load.wait_for(300, timeout_s=60)
            served = [requests_served(g.config.metrics_port) for g in gateways]
            assert min(served) > 50, served  # round_robin: both take their share
            gateways[0].process.send_signal(signal.SIGKILL)
            assert load.wait_for(load.ok + 5_000, timeout_s=120), "the survivor did not carry on"
        assert gateways[0].process.wait(timeout=5) == -signal.SIGKILL
        assert load.failures == [], load.failures[:3]
        print(f"{load.ok} requests through two gateways, one killed: 0 failed")
    finally:
        for g in gateways:
            g.stop()


def test_the_gateway_log_is_sampled_and_rotated(stack, run_dir, tmp_path, monkeypatch):
    """23 MB in 22 minutes before: one info line per RPC, never rotated. Successful RPCs' access
    lines are now sampled (failures always logged) and the file rotates at its size limit."""
    from gateway import logs
    from serving.gateway_process import GatewayProcess

    running, repo, cfg = stack
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    monkeypatch.setenv(logs.ROTATE_ENV, "8000")
    log = tmp_path / "gateway.log"
    gateway = GatewayProcess(GatewayConfig(port=free_port(), metrics_port=free_port(),
                                           backend="cpu", triton_url=running.triton.grpc_url,
                                           repository=repo), log_file=log)  # fmt: skip
    with gateway:
        with (
            RecommenderClient(gateway.address, timeout_s=10) as client,
            pytest.raises(RecommenderError),
        ):
            client.recommend("no-such-user", request_id="a-failed-call")
        with AsyncLoad(gateway.address, users, concurrency=8) as load:
            assert load.wait_for(3_000, timeout_s=120)
        served = requests_served(gateway.config.metrics_port)
    files = sorted(tmp_path.glob("gateway.log*"))
    assert log.with_suffix(".log.1") in files, files  # rotated
    logs_only = [f for f in files if ".stderr" not in f.name]
    assert all(f.stat().st_size <= 8_000 for f in logs_only)
    lines = [json.loads(line) for f in logs_only for line in f.read_text().splitlines()]
    access = [e for e in lines if e["msg"] == "rpc"]
    assert any(e.get("request_id") == "a-failed-call" and e["code"] == "NOT_FOUND" for e in access)
    assert len(access) < served / 4, (len(access), served)
    assert any(e.get("skipped_before") for e in access)


def _break_initialize(repo: Path, version: int) -> None:
    """``candidate_scorer``'s runner of ``version`` raises when Triton loads it (manifests
    resealed: exported like that, so only Triton finds out)."""
    from core.files import file_digests

    model_py = repo / CANDIDATE_SCORER / str(version) / "model.py"
    broken = "def initialize(self, args):\n        raise RuntimeError('broken on purpose')"
    model_py.write_text(model_py.read_text().replace("def initialize(self, args):", broken))
    manifest = model_py.parent / "manifest.json"
    sealed = json.loads(manifest.read_text())
    sealed["files"] = file_digests(model_py.parent, skip=("manifest.json",))
    manifest.write_text(json.dumps(sealed))


def test_a_triton_whose_serving_version_is_broken_backs_off_and_a_repair_is_never_killed(
    run_dir, tmp_path, caplog
):
    """Issue 17: a corrupt serving version made the supervisor restart Triton every 60 s, kill
    the Triton a deploy had repaired, and `rollback` answered "no deploy of version None"."""
    import logging

    from serving import deploy_records as records
    from serving.deploy import DeployConfig, deploy, rollback, status
    from serving.supervisor import Supervisor
    from serving.triton_server import TritonConfig, TritonServer

    caplog.set_level(logging.WARNING, logger="serving.supervisor")
    repo = tmp_path / "model_repository"
    for _ in range(3):
        export_run(run_dir, repo)
    _break_initialize(repo, 3)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    triton = TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                       load_models=SERVED_MODELS,
                                       log_file=tmp_path / "triton.log"))  # fmt: skip
    supervisor = Supervisor(triton, backoff_s=2.0, start_timeout_s=8.0, healthy_after_s=600)
    cfg = DeployConfig(repo, triton.grpc_url, admin_key=triton.admin_key, timeout_s=60)

    def live() -> bool:
        return triton.process is not None and triton._answers("/v2/health/live")

    with supervisor:
        assert deploy(cfg, version=2).previous == 1  # recorded: 2 served, healthy
        for name in SERVED_MODELS:  # the serving version goes bad, then Triton dies
            write_configs(repo / name, name, serving=[3])
        os.kill(triton.process.pid, signal.SIGKILL)

        assert eventually(lambda: supervisor.restarts >= 3, timeout_s=150)
        gaps = [b - a for a, b in itertools.pairwise(supervisor.starts)]
        assert gaps[1] > gaps[0] + 2.5, gaps  # the delay doubles: 4 s, then 8 s
        named = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
        assert any(f"{CANDIDATE_SCORER} version 3" in m and "broken on purpose" in m
                   for m in named), named  # fmt: skip

        # status and rollback work while nothing serves: back to 2, the last healthy version
        assert eventually(live, timeout_s=60)
        rows = {r.version: r for r in status(cfg)[0]}
        assert rows[3].pinned and not any(r.serving for r in rows.values())
        report = rollback(cfg)
        assert (report.version, report.previous) == (2, 3)  # rolled back from the broken 3
        pid, restarts = triton.process.pid, supervisor.restarts
        time.sleep(supervisor.start_timeout_s + 4)  # past that start's deadline
        assert triton.process.pid == pid and triton.process.poll() is None, "repaired, killed"
        assert supervisor.restarts == restarts and triton.is_ready()
        assert [r.version for r in status(cfg)[0] if r.serving] == [2]
        assert records.last_healthy(repo, exclude=set()) == 2
