"""Shared fixtures: real data from ../shared (never copied into the repo) and tiny matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from core.paths import SHARED_DATA

SPOTIFY_SAMPLE = SHARED_DATA / "spotify-playlists-pichl-sample" / "spotify_dataset_sample.csv"
HETREC = SHARED_DATA / "hetrec2011-lastfm-2k"
AUDIOSCROBBLER = SHARED_DATA / "audioscrobbler2005-top50"


@pytest.fixture(scope="session")
def hetrec():
    from training.data import load_hetrec

    if not HETREC.is_dir():
        pytest.fail(f"shared data missing: {HETREC} (CI and every checkout have ../shared)")
    return load_hetrec(HETREC)


def community_matrix(
    n_users: int = 120, n_artists: int = 60, communities: int = 3, per_user: int = 8, seed: int = 0
) -> sp.csr_matrix:
    """Users who each play ``per_user`` artists of their own community: the answer is known."""
    rng = np.random.default_rng(seed)
    size = n_artists // communities
    rows, cols = [], []
    for u in range(n_users):
        c = u % communities
        picks = rng.choice(size, per_user, replace=False) + c * size
        rows += [u] * per_user
        cols += list(picks)
    data = rng.integers(1, 50, len(rows)).astype(np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_artists))


@pytest.fixture(scope="module")
def network():
    """The seed architecture over 120 users x 60 artists with N(0, 0.3) weights (seeded)."""
    from training.models.network import build_network

    model = build_network(120, 60, seed=3)
    rng = np.random.default_rng(2)
    for w in model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    return model


@pytest.fixture
def tiny_csv(tmp_path: Path):
    """Write text to a CSV file in tmp_path and return its path."""

    def write(text: str, name: str = "playlists.csv") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A dnn run trained briefly (2 epochs) on generated Spotify-format data: 200 users,
    400 artists. Shared by the export, Triton and gateway tests."""
    from app.main import main as musicrec
    from training.data.generator import GeneratorConfig, generate_spotify_csv

    root = tmp_path_factory.mktemp("trained")
    csv = generate_spotify_csv(
        root / "plays.csv", GeneratorConfig(rows=20_000, users=200, artists=400, seed=5)
    )
    assert musicrec(["train", "--data", str(csv), "--run-dir", str(root / "run"),
                     "--max-epochs", "2"]) == 0  # fmt: skip
    return root / "run"


@pytest.fixture(scope="module")
def three_version_stack(run_dir, tmp_path_factory):
    """Triton + gateway (metrics on) serving version 1, versions 2 and 3 exported beside it:
    ``(running stack, DeployConfig, gateway metrics address)``, one per test module."""
    from core.contract import SERVED_MODELS
    from export.repository import export_run
    from export.triton_config import write_configs
    from gateway.config import GatewayConfig
    from serving.deploy import DeployConfig
    from serving.processes import free_port
    from serving.stack import StackConfig, serving_stack

    root = tmp_path_factory.mktemp("three_versions")
    repo = root / "model_repository"
    for _ in range(3):
        export_run(run_dir, repo)
    for name in SERVED_MODELS:
        write_configs(repo / name, name, serving=[1])
    metrics_port = free_port()
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=metrics_port,
                                            backend="cpu", poll_interval_s=0.2),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        ops = DeployConfig(repo, running.triton.grpc_url, running.gateway.address,
                           admin_key=running.triton.admin_key)  # fmt: skip
        yield running, ops, f"127.0.0.1:{metrics_port}"
