"""The main job's serving half: export a run, start Triton and the gateway, ask via the client."""

from __future__ import annotations

import pytest

from app.main import main as musicrec
from core.contract import versions
from export.triton_config import serving_policy
from serving.processes import free_port

pytestmark = pytest.mark.slow


def test_demo_serves_a_recommendation_end_to_end(run_dir, tmp_path, capsys):
    repo = tmp_path / "model_repository"
    ports = [str(free_port()) for _ in range(3)]
    code = musicrec(["demo", "--run", str(run_dir), "--repository", str(repo), "--once",
                     "--gateway-port", str(free_port()), "--metrics-port", str(free_port()),
                     "--triton-ports", *ports])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert versions(repo, "catalogue_scorer") == [1]
    assert serving_policy(repo / "catalogue_scorer") == [1]  # the demo serves its own export
    assert "Top 10 through the gateway" in out and "model version 1" in out
    assert "similar users combined:" in out
    body = out.split("Top 10 through the gateway", 1)[1]
    assert sum(line.startswith("│ ") for line in body.splitlines()) == 10  # ten ranked rows


def test_demo_reports_a_taken_port_in_one_line(run_dir, tmp_path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        code = musicrec(
            [
                "demo",
                "--run",
                str(run_dir),
                "--repository",
                str(tmp_path / "r"),
                "--once",
                "--triton-ports",
                taken,
                str(free_port()),
                str(free_port()),
            ]
        )
    out = capsys.readouterr().out
    assert code == 2 and f"port {taken} is already in use" in out and "Traceback" not in out
