"""Export into a repository that is a mount point (a Kubernetes volume, a compose bind mount):
staging happens inside the repository, so every rename stays on one filesystem, a failed export
leaves nothing behind, and Triton never sees the staging directory (it lives in a model
directory, under a name that is not a version)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import export.staging
from core.contract import ARTIFACT_MODEL, SERVED_MODELS, common_versions, versions
from export.repository import export_run
from export.staging import STAGING_DIR
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture
def mounted_repository(tmp_path):
    """``tmp_path/model_repository`` as its own tmpfs (another device than its parent)."""
    repo = tmp_path / "model_repository"
    repo.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(repo)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is refused here ({done.stderr.strip()}); CI runs as root")
    try:
        assert os.stat(repo).st_dev != os.stat(tmp_path).st_dev
        yield repo
    finally:
        subprocess.run(["umount", "-l", str(repo)], check=False)


def test_export_into_a_mount_point_succeeds_and_triton_ignores_staging(mounted_repository,
                                                                         run_dir):  # fmt: skip
    repo = mounted_repository
    assert export_run(run_dir, repo).version == 1
    assert common_versions(repo) == {1}
    assert not (repo / ARTIFACT_MODEL / STAGING_DIR).exists()
    assert sorted(p.name for p in repo.parent.iterdir()) == ["model_repository"]

    # A staging directory left by a killed export, with model-like content, is never a model
    # or a version for Triton, versions() or the next export.
    leftover = repo / ARTIFACT_MODEL / STAGING_DIR / "export-killed" / ARTIFACT_MODEL / "2"
    leftover.mkdir(parents=True)
    (leftover / "model.py").write_text("raise SystemExit('a staged file was loaded')\n")
    assert versions(repo, ARTIFACT_MODEL) == [1]
    cfg = TritonConfig(repo, free_port(), free_port(), free_port(), load_models=SERVED_MODELS,
                       log_file=repo.parent / "triton.log")  # fmt: skip
    with TritonServer(cfg) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        index = client.get_model_repository_index(headers=server.admin_headers)
        assert {m.name for m in index.models} == set(SERVED_MODELS)
        assert {(m.name, m.version) for m in index.models if m.state == "READY"} == {
            (name, "1") for name in SERVED_MODELS
        }
    assert export_run(run_dir, repo).version == 2
    assert not (
        repo / ARTIFACT_MODEL / STAGING_DIR
    ).exists()  # the stale one was cleared under the lock


def test_a_failed_export_into_a_mount_point_leaves_nothing(mounted_repository, run_dir,
                                                           monkeypatch):  # fmt: skip
    repo = mounted_repository
    real, calls = export.staging.write_configs, []

    def fail_on_the_second_model(model_dir: Path, name: str, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return real(model_dir, name, *args, **kwargs)

    monkeypatch.setattr(export.staging, "write_configs", fail_on_the_second_model)
    with pytest.raises(OSError, match="injected"):
        export_run(run_dir, repo)
    assert sorted(p.name for p in repo.iterdir()) == [".lock"]  # no config.pbtxt, no configs/
    assert sorted(p.name for p in repo.parent.iterdir()) == ["model_repository"]

    monkeypatch.setattr(export.staging, "write_configs", real)
    assert export_run(run_dir, repo).version == 1
    calls.clear()
    monkeypatch.setattr(export.staging, "write_configs", fail_on_the_second_model)
    with pytest.raises(OSError, match="injected"):
        export_run(run_dir, repo)  # version 2 fails half-way: version 1 stays, alone
    assert common_versions(repo) == {1}
    assert all(versions(repo, name) == [1] for name in SERVED_MODELS)
    assert sorted(p.name for p in repo.iterdir()) == sorted([".lock", *SERVED_MODELS])
