"""Operations against a real stack: Prometheus scrapes it, Locust loads it (bounded smoke run)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from client import RecommenderClient
from core.modes import DEFAULT_MODE, MODES
from export.repository import export_run
from gateway.config import GatewayConfig
from serving.processes import free_port, spawn, stop_group
from serving.stack import StackConfig, serving_stack
from training.run import load_run

pytestmark = pytest.mark.slow
DEFAULT_MODEL = MODES[DEFAULT_MODE].models[0]  # what a Recommend calls by default
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=free_port(),
                                            backend="cpu"),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as running:
        yield running, cfg, root


def test_locust_smoke_run_has_no_unexpected_failures(stack):
    running, cfg, root = stack
    result = subprocess.run(
        [str(Path(sys.executable).with_name("locust")), "-f", "loadtests/locustfile.py",
         "--headless", "--host", running.gateway.address, "-u", "8", "-r", "8", "-t", "20s",
         "--repository", str(cfg.repository), "--csv", str(root / "locust"), "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(root / "locust_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["Recommend"]["Request Count"]) > 100
    assert int(rows["Recommend (invalid)"]["Request Count"]) > 0  # INVALID_ARGUMENT, as expected


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_prometheus_scrapes_triton_and_the_gateway(stack, run_dir, tmp_path):
    running, cfg, _ = stack
    scrape = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    local = {"triton": f"127.0.0.1:{cfg.triton_metrics_port}",
             "gateway": f"127.0.0.1:{cfg.gateway.metrics_port}"}  # fmt: skip
    scrape["global"]["scrape_interval"] = "1s"
    for job in scrape["scrape_configs"]:
        job["static_configs"] = [{"targets": [local[job["job_name"]]]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape))
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz][:20]
    with RecommenderClient(running.gateway.address) as client:
        for user in users:
            client.recommend(user, k=5)
    port = free_port()
    command = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    prometheus = spawn(command, dict(os.environ), tmp_path / "prom.log")
    try:
        deadline, triton, gateway = time.monotonic() + 60, [], []
        while time.monotonic() < deadline and not (triton and gateway):
            time.sleep(1)
            try:
                triton = _query(port, f'nv_inference_request_success{{model="{DEFAULT_MODEL}"}}')
                gateway = _query(port, 'musicrec_gateway_requests_total{method="Recommend"}')
            except OSError:
                continue
        assert triton, (tmp_path / "prom.log").read_text()[-2000:]
        assert gateway
        assert sum(float(r["value"][1]) for r in triton) >= len(users)
        assert sum(float(r["value"][1]) for r in gateway) >= len(users)
        up = {r["metric"]["job"]: r["value"][1] for r in _query(port, "up")}
        assert up == {"triton": "1", "gateway": "1"}
    finally:
        stop_group(prometheus)


def test_cli_calls_print_no_tensorflow_banner(tmp_path):
    """Every CLI call printed TensorFlow's absl line and oneDNN notice (twice) on stderr."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}  # fmt: skip
    cmd = [sys.executable, "-m", "app", "export", str(tmp_path / "no-run"),
           "--repository", str(tmp_path / "repo")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "cannot read run" in done.stdout  # TensorFlow was imported
    for banner in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert banner not in done.stderr, done.stderr[:400]
