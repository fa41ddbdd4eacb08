"""Faults production meets, against the real Triton and gateway: a corrupt version, a dead
poller, health that must tell the truth."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient

from client import RecommenderClient, RecommenderError
from core.contract import CATALOGUE_SCORER, MANIFEST, PLAYS, SERVED_MODELS
from export.repository import export_run
from export.triton_config import write_configs
from gateway.config import GatewayConfig
from serving.gateway_process import health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.run import load_run

pytestmark = pytest.mark.slow


def clone_version(repo: Path, source: int, target: int) -> None:
    """Copy ``source`` to ``target`` in every model, manifests renumbered (a hand-made version,
    as an operator copying a served one would make)."""
    for name in SERVED_MODELS:
        shutil.copytree(repo / name / str(source), repo / name / str(target),
                        ignore=shutil.ignore_patterns("model.savedmodel"))  # fmt: skip
        path = repo / name / str(target) / MANIFEST
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "version": target}))


def serve_only(repo: Path, triton_url: str, version: int) -> None:
    """Pin ``version`` in every model and have Triton load it (what a deploy ends with)."""
    client = grpcclient.InferenceServerClient(triton_url)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[version])
        client.load_model(name)


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
        clone_version(repo, 1, 2)
        plays = repo / CATALOGUE_SCORER / "2" / PLAYS
        plays.write_bytes(plays.read_bytes()[:100])  # truncated: not a zip any more
        serve_only(repo, running.triton.grpc_url, 2)  # Triton serves it; the gateway cannot

        assert eventually(lambda: health_status(address) == "NOT_SERVING"), "health lied"
        with pytest.raises(RecommenderError) as err:
            client.recommend(user, k=3)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "version 2" in err.value.details and "BadZipFile" in err.value.details
        assert metric(cfg.gateway.metrics_port, "musicrec_gateway_version_load_errors_total") >= 1
        log = (cfg.log_dir / "gateway.log").read_text()
        assert "cannot load model version 2" in log and "BadZipFile" in log

        clone_version(repo, 1, 3)  # a valid version: the poller is alive and picks it up
        serve_only(repo, running.triton.grpc_url, 3)
        assert eventually(lambda: health_status(address) == "SERVING")
        assert client.recommend(user, k=3).model_version == 3
