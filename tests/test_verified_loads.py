"""Issue 17, verified loads: the gateway checks the manifest's sha256 of every file it loads.

A valid ``plays.npz`` of the right shape but other contents, put into a version after export,
was served (different neighbours than another gateway for the same version) and ``status`` saw
nothing wrong. Real Triton, real gateway."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal

import grpc
import pytest

from client import RecommenderClient, RecommenderError
from core.contract import (
    ARTIFACT_MODEL,
    CANDIDATE_RANKER,
    MANIFEST,
    ONNX_FILE,
    PLAYS,
    SERVED_MODELS,
)
from export.repository import export_run
from export.triton_config import write_configs
from gateway.artifacts import ArtifactError, ModelVersion
from gateway.config import GatewayConfig
from loadtests.faults import clone_version, replace_plays
from serving.deploy import DeployConfig, status
from serving.gateway_process import health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from tests.test_reliability import eventually, metric, serve_only
from training.run import load_run


def _user(run_dir) -> str:
    run = load_run(run_dir)
    return next(u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz)


@pytest.mark.slow
def test_a_tampered_plays_file_is_not_served_and_status_names_it(run_dir, tmp_path):
    repo = tmp_path / "model_repository"
    export_run(run_dir, repo)
    clone_version(repo, 1, 2)  # sealed checksums hold in the copy
    replace_plays(repo / ARTIFACT_MODEL / "2" / PLAYS)
    for name in SERVED_MODELS:  # Triton serves both; the newest would be the gateway's
        write_configs(repo / name, name, serving=[1, 2])
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=free_port(),
                                            backend="cpu", poll_interval_s=0.2),
                      log_dir=tmp_path / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        address = running.gateway.address
        assert eventually(lambda: health_status(address) == "SERVING")
        errors = "musicrec_gateway_version_load_errors_total"
        assert eventually(lambda: metric(cfg.gateway.metrics_port, errors) >= 1)
        with RecommenderClient(address, timeout_s=10) as client:
            assert client.serving_info().model_version == 1, "the tampered version 2 serves"
        log = (cfg.log_dir / "gateway.log").read_text()
        assert "cannot load model version 2" in log and f"checksum mismatch in {PLAYS}" in log

        ops = DeployConfig(repo, running.triton.grpc_url, admin_key=running.triton.admin_key)
        rows = {r.version: r for r in status(ops)[0]}
        assert rows[2].serving and PLAYS in rows[2].problem, rows[2]
        assert rows[1].problem == ""

        serve_only(repo, running.triton, 2)  # only the tampered version: nothing to answer with
        assert eventually(lambda: health_status(address) == "NOT_SERVING"), "health lied"
        with RecommenderClient(address, timeout_s=10) as client, \
                pytest.raises(RecommenderError) as err:  # fmt: skip
            client.recommend(_user(run_dir), k=3)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "version 2" in err.value.details and PLAYS in err.value.details


def test_each_loaded_file_is_verified_and_an_unsealed_manifest_loads_only_when_allowed(
    run_dir, tmp_path, caplog
):
    repo = tmp_path / "model_repository"
    export_run(run_dir, repo)
    assert ModelVersion.load(repo, 1, "cpu").version == 1
    directory = repo / ARTIFACT_MODEL / "1"
    manifest = json.loads((directory / MANIFEST).read_text())
    for rel in [p for p in manifest["files"] if p.endswith((".npz", ".json"))]:
        original = (directory / rel).read_bytes()
        (directory / rel).write_bytes(original + b" ")  # still the same file for most loaders
        with pytest.raises(ArtifactError, match=f"checksum mismatch in {rel}"):
            ModelVersion.load(repo, 1, "cpu")
        (directory / rel).write_bytes(original)

    shutil.copy(directory / MANIFEST, tmp_path / "sealed.json")
    (directory / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items()
                                                  if k != "files"}))  # fmt: skip
    replace_plays(directory / PLAYS)
    with pytest.raises(ArtifactError, match="no file checksums"):  # dropping them is no bypass
        ModelVersion.load(repo, 1, "cpu")
    with caplog.at_level(logging.WARNING, logger="gateway.artifacts"):  # the explicit override
        assert ModelVersion.load(repo, 1, "cpu", allow_unverified=True).version == 1
    assert "records no file checksums" in caplog.text


@pytest.mark.slow
def test_unavailable_names_the_model_whose_serving_version_triton_cannot_load(run_dir, tmp_path):
    """Issue 17: with the serving version's ranker broken, the gateway said only "no model
    version is ready"; it names the model and version Triton failed to load."""
    repo = tmp_path / "model_repository"
    export_run(run_dir, repo)
    clone_version(repo, 1, 2)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[2])
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.2),
                      log_dir=tmp_path / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        onnx = repo / CANDIDATE_RANKER / "2" / ONNX_FILE  # the served default's model
        onnx.write_bytes(b"\xff" * 64 + onnx.read_bytes()[64:])
        old = running.triton.process.pid
        os.kill(old, signal.SIGKILL)  # restarted into the broken version: never ready

        def told() -> str:
            proc = running.triton.process
            if proc is None or proc.pid == old:
                return ""
            with RecommenderClient(running.gateway.address, timeout_s=10) as client:
                try:
                    client.recommend(_user(run_dir), k=3)
                except RecommenderError as err:
                    return err.details if f"{CANDIDATE_RANKER} version 2" in err.details else ""
            return ""

        assert eventually(told, timeout_s=60), "UNAVAILABLE does not name the broken model"
        assert health_status(running.gateway.address) == "NOT_SERVING"
