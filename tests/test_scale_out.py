"""Issue 11, replicated Triton: two Triton servers on one model repository behind one gateway.

Real processes throughout: SIGKILL one replica under load, then a deploy that swaps versions on
both replicas under load; the client must see no failed request in either.
"""

from __future__ import annotations

import signal
import urllib.request

import pytest

from client import RecommenderClient
from core.contract import CANDIDATE_SCORER, SERVED_MODELS
from core.modes import DEFAULT_MODE, MODES
from export.repository import export_run
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from loadtests.async_load import AsyncLoad
from loadtests.faults import clone_version
from serving.admin_key import new_key
from serving.deploy import DeployConfig, deploy
from serving.fleet import TritonFleet
from serving.gateway_process import GatewayProcess
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer
from training.run import load_run

pytestmark = pytest.mark.slow


def _inferences(triton: TritonServer) -> float:
    """Successful requests of the default mode's model this replica has served (its own
    metrics)."""
    (model,) = MODES[DEFAULT_MODE].models
    url = f"http://127.0.0.1:{triton.config.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_request_success")
               and f'model="{model}"' in line)  # fmt: skip


@pytest.fixture(scope="module")
def replicated(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    key = new_key()  # one admin key for the fleet, as a cluster's Secret gives every pod
    tritons = [
        TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                  load_models=SERVED_MODELS, admin_key=key,
                                  log_file=root / f"triton{i}.log")).start()
        for i in range(2)
    ]  # fmt: skip
    target = ",".join(t.grpc_url for t in tritons)
    gateway = GatewayProcess(GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                           triton_url=target, repository=repo,
                                           poll_interval_s=0.2),
                             log_file=root / "gateway.log").start()  # fmt: skip
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    try:
        yield tritons, gateway, repo, users, key
    finally:
        gateway.stop()
        for t in tritons:
            t.stop()


def test_calls_spread_over_both_replicas_and_none_fails_when_one_is_killed(replicated):
    tritons, gateway, _, users, _ = replicated
    before = [_inferences(t) for t in tritons]
    with AsyncLoad(gateway.address, users, concurrency=8) as load:
        assert load.wait_for(300, timeout_s=60)
        served = [_inferences(t) - b for t, b in zip(tritons, before, strict=True)]
        assert min(served) > 50, served  # both replicas take their share
        tritons[0].process.send_signal(signal.SIGKILL)
        assert load.wait_for(load.ok + 5_000, timeout_s=180), "the survivor did not carry on"
    assert load.failures == [], load.failures[:3]
    print(f"{load.ok} requests over two replicas, one killed: 0 failed")
    tritons[0].stop()  # reap it, then bring it back for the next test
    tritons[0].start()


def test_a_deploy_swaps_both_replicas_under_load_with_no_failed_request(replicated):
    tritons, gateway, repo, users, key = replicated
    clone_version(repo, 1, 2)
    cfg = DeployConfig(repo, triton_url=",".join(t.grpc_url for t in tritons),
                       gateway=gateway.address, admin_key=key, timeout_s=120)  # fmt: skip
    with AsyncLoad(gateway.address, users, concurrency=8) as load:
        assert load.wait_for(200, timeout_s=60)
        report = deploy(cfg, version=2)
        assert load.wait_for(load.ok + 300, timeout_s=60)
    assert (report.version, report.previous) == (2, 1)
    assert load.failures == [], load.failures[:3]
    assert [v for _, v in load.switches][-1] == 2 and {v for _, v in load.switches} == {1, 2}
    fleet = TritonFleet(cfg.triton_url)
    assert fleet.served_versions(repo) == {2}  # on every replica, and version 1 retired
    for client in fleet.clients:
        assert not client.is_model_ready(CANDIDATE_SCORER, "1")
    with RecommenderClient(gateway.address) as client:
        assert client.serving_info().model_version == 2
