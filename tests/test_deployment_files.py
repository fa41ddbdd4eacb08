"""docker-compose.yml, the gateway image and the monitoring files keep their invariants."""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from core.contract import SERVED_MODELS
from gateway.metrics import GatewayMetrics
from serving.admin_key import RESTRICTED

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                           "-q"], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in {**os.environ, **env}.items() if v})  # fmt: skip


def test_docker_compose_parses_with_debians_docker_compose():
    result = _compose_config({"TRITON_ADMIN_KEY": "k" * 32})
    assert result.returncode == 0, result.stderr


def test_compose_has_no_default_secret():
    result = _compose_config({"TRITON_ADMIN_KEY": ""})
    assert result.returncode != 0 and "set TRITON_ADMIN_KEY" in result.stderr


def test_control_plane_and_dashboards_are_closed():
    triton = " ".join(SERVICES["triton"]["command"])
    groups = ",".join(RESTRICTED)  # the whole admin surface, as the embedded Triton keys it
    for flag in (f"--grpc-restricted-protocol={groups}:musicrec-admin-key=${{TRITON",
                 f"--http-restricted-api={groups}:musicrec-admin-key=${{TRITON"):  # fmt: skip
        assert flag in triton
    grafana = SERVICES["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana  # never a password in the file
    assert COMPOSE["secrets"]["grafana_admin_password"]["file"].startswith("./secrets/")
    assert SERVICES["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_to_release_tags(name):
    image = SERVICES[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest" and re.search(r"\d", tag), image


def test_triton_is_nvidias_release_image_on_a_gpu_with_explicit_model_control():
    triton = SERVICES["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", triton["image"])
    assert "--model-control-mode=explicit" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "healthcheck" in triton


def test_the_gpu_hosts_onnxruntime_threads_are_one_shared_pool():
    """Issue 22: the onnxruntime backend's sessions (trees on its CPU provider) share one
    bounded thread pool instead of one pool per session and version sized to every core."""
    settings = dict(flag.removeprefix("--backend-config=onnxruntime,").split("=")
                    for flag in SERVICES["triton"]["command"]
                    if flag.startswith("--backend-config=onnxruntime,"))  # fmt: skip
    assert settings["enable-global-threadpool"] == "1"
    assert 1 <= int(settings["intra_op_thread_count"]) <= 8
    assert int(settings["inter_op_thread_count"]) == 1


def test_every_served_model_is_loaded_at_start_in_compose_and_on_kubernetes():
    """Explicit model control loads only what is named: a model missing here would leave its
    scoring mode (the default one, two_stage, included) without a model."""
    k8s = yaml.safe_load((ROOT / "deploy/k8s/base/triton-deployment.yaml").read_text())
    container = k8s["spec"]["template"]["spec"]["containers"][0]
    for command in (SERVICES["triton"]["command"], container["args"]):
        loaded = {a.removeprefix("--load-model=") for a in command if a.startswith("--load-model=")}
        assert loaded == set(SERVED_MODELS)


def test_only_the_gateway_and_monitoring_publish_ports():
    published = {name for name, svc in SERVICES.items() if svc.get("ports")}
    assert published == {"gateway", "prometheus", "grafana"}
    assert "ports" not in SERVICES["triton"]  # model control stays on the internal network
    assert SERVICES["gateway"]["ports"] == ["50051:50051"]


def test_model_repository_is_read_only_where_it_is_served():
    for name in ("triton", "gateway"):
        mounts = [v for v in SERVICES[name]["volumes"] if "model_repository" in v]
        assert mounts and all(v.endswith(":ro") for v in mounts), (name, mounts)
    for name in ("prometheus", "grafana"):
        assert all(v.endswith(":ro") for v in SERVICES[name]["volumes"])


def test_gateway_waits_for_triton_and_checks_grpc_health():
    gateway = SERVICES["gateway"]
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"
    assert gateway["healthcheck"]["test"][-1] == "health"
    assert gateway["environment"]["MUSICREC_GATEWAY_TRITON_URL"] == "triton:8001"


def test_gateway_image_is_slim_non_root_and_pinned():
    dockerfile = (ROOT / "gateway" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+ AS gateway$", dockerfile, re.M)
    assert re.search(r"^USER musicrec$", dockerfile, re.M)
    assert "requirements-gateway.lock" in dockerfile
    lock = (ROOT / "requirements-gateway.lock").read_text().lower()
    assert not re.search(r"^(tensorflow|keras|tf2onnx)", lock, re.M)  # the gateway image is slim


def test_gateway_lock_pins_what_the_tested_environment_runs():
    for line in (ROOT / "requirements-gateway.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, pinned = line.split("==")
            assert version(name.split("[")[0]) == pinned, line


def test_prometheus_scrapes_triton_and_the_gateway():
    scrape = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in scrape["scrape_configs"]}
    assert targets == {"triton": ["triton:8002"], "gateway": ["gateway:9101"]}
    assert SERVICES["gateway"]["environment"]["MUSICREC_GATEWAY_METRICS_PORT"] == "9101"


def test_grafana_dashboard_queries_metrics_that_exist():
    dashboard = json.loads((ROOT / "ops" / "grafana" / "dashboards" / "musicrec.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    ours = {m.name for m in GatewayMetrics().registry.collect()}
    used = set(re.findall(r"musicrec_gateway_\w+", exprs))
    assert used
    for name in used:  # a counter is exposed as <name>_total, a histogram as <name>_bucket...
        assert re.sub(r"_(total|bucket|count|sum)$", "", name) in ours, name
    for triton_metric in ("nv_inference_count", "nv_inference_exec_count",
                          "nv_inference_queue_duration_us", "nv_gpu_utilization"):  # fmt: skip
        assert triton_metric in exprs
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("request rate", "p50", "errors", "batch size", "queue", "gpu", "version"):
        assert topic in titles


def test_triton_is_healthy_when_every_served_model_has_a_version_ready():
    """Issue 23 item 17: /v2/health/ready stays 400 after a repair while the failed version
    stays in Triton's index, so the healthcheck asks each served model's readiness instead."""
    kind, script = SERVICES["triton"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "/v2/health/ready" not in script
    models = re.search(r"for m in ([\w ]+); do", script).group(1).split()
    assert sorted(models) == sorted(SERVED_MODELS)
    assert "curl -sf -o /dev/null http://localhost:8000/v2/models/$$m/ready || exit 1" in script
