"""ops/alerts.yml: promtool's unit tests pass (ops/alerts_test.yml: every alert fires on the
series meant to fire it and stays silent on the others), every rule has a `for:` and a runbook
that exists, Prometheus loads the rules in compose, and the gateway exposes the per-version
series the canary rules read, labelled with the version that answered."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client import generate_latest

from gateway.metrics import NO_VERSION, GatewayMetrics, ObservingInterceptor

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
RULES = yaml.safe_load((OPS / "alerts.yml").read_text())
ALERTS = {r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r}
TESTS = yaml.safe_load((OPS / "alerts_test.yml").read_text())


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run scripts/setup_system.sh (Debian's prometheus)")
    return path


def test_promtool_unit_tests_pass():
    result = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=OPS,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_loads_the_rules():
    result = subprocess.run([_promtool(), "check", "config", "prometheus.yml"], cwd=OPS,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    assert yaml.safe_load((OPS / "prometheus.yml").read_text())["rule_files"] == ["alerts.yml"]


def test_compose_mounts_the_rules_beside_the_config():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "./ops/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_the_alerts_the_issue_asks_for_exist():
    exprs = {name: rule["expr"] for name, rule in ALERTS.items()}
    assert "musicrec_gateway_requests_total" in exprs["MusicrecGatewayErrorRatioHigh"]
    assert "histogram_quantile(0.99" in exprs["MusicrecGatewayLatencyP99High"]
    assert 'up{job=~".*triton.*"}' in exprs["MusicrecTritonDown"]
    assert "musicrec_gateway_model_version == 0" in exprs["MusicrecNoModelVersionReady"]
    queue = exprs["MusicrecTritonQueueTimeHigh"]
    assert "nv_inference_queue_duration_us" in queue and "nv_inference_request_success" in queue
    assert "error_ratio_by_version" in exprs["MusicrecCanaryErrorRatioWorse"]
    assert "p99_by_version" in exprs["MusicrecCanaryLatencyWorse"]
    assert "musicrec_gateway_model_version" in exprs["MusicrecGatewayVersionMismatch"]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_has_a_duration_a_severity_and_a_runbook_that_exists(name):
    rule = ALERTS[name]
    assert re.fullmatch(r"\d+[smh]", rule["for"]), name
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    page, _, anchor = rule["annotations"]["runbook"].partition("#")
    assert page == "docs/operations.md" and anchor == name.lower()
    headings = re.findall(r"^#+\s+(\S.*?)\s*$", (ROOT / page).read_text(), re.MULTILINE)
    assert name in headings, f"docs/operations.md has no section for {name}"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_is_tested_firing_and_silent(name):
    checks = [c for t in TESTS["tests"] for c in t.get("alert_rule_test", [])]
    mine = [c for c in checks if c["alertname"] == name]
    assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
    assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays silent"


def test_rules_read_only_metrics_the_gateway_exposes():
    text = " ".join(r["expr"] for g in RULES["groups"] for r in g["rules"])
    ours = {m.name for m in GatewayMetrics().registry.collect()}
    used = set(re.findall(r"musicrec_gateway_\w+", text))
    assert used
    for name in used:  # a counter is exposed as <name>_total, a histogram as <name>_bucket...
        assert re.sub(r"_(total|bucket|count|sum)$", "", name) in ours, name


def test_dashboard_has_per_version_panels_and_every_query_parses(tmp_path):
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "musicrec.json").read_text())
    per_version = [p for p in dashboard["panels"] if p["title"].lower().startswith("per version")]
    exprs = " ".join(t["expr"] for p in per_version for t in p["targets"])
    for series in ("musicrec_gateway_requests_by_version_total",
                   "musicrec_gateway_request_seconds_by_version_bucket",
                   "musicrec_gateway_popularity_fallbacks_by_version_total"):  # fmt: skip
        assert series in exprs
    assert all("by (version" in t["expr"] for p in per_version for t in p["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # promtool parses PromQL in rule files: every panel's query, as a recording rule
    rules = [{"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": t["expr"]}
             for p in dashboard["panels"] for t in p["targets"]]  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ per-version metrics


class _Context:
    """The parts of grpc.aio.ServicerContext the interceptor uses."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self):
        return ()

    def set_trailing_metadata(self, _metadata) -> None:
        pass

    def code(self):
        return self._code

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_requests_latency_and_fallbacks_are_labelled_with_the_version_that_answered():
    metrics = GatewayMetrics()
    metrics.set_serving_version(4)
    interceptor = ObservingInterceptor(metrics)

    def answered_by(version: int, fallback: bool = False):
        async def behaviour(request, context):
            await asyncio.sleep(0.01 if version == 5 else 0)  # interleave the RPCs
            metrics.served_by(version, fallback)
            return "answer"

        return interceptor._observed("Recommend", behaviour)

    async def failing(request, context):
        context._code = grpc.StatusCode.UNAVAILABLE
        raise RuntimeError("Triton is down")  # before any version answered

    async def main() -> None:
        calls = [answered_by(5)(None, _Context()) for _ in range(3)]
        calls += [answered_by(4)(None, _Context()) for _ in range(5)]
        calls += [answered_by(4, fallback=True)(None, _Context())]
        assert await asyncio.gather(*calls) == ["answer"] * 9
        with pytest.raises(RuntimeError):
            await interceptor._observed("Recommend", failing)(None, _Context())

    asyncio.run(main())
    requests = "musicrec_gateway_requests_by_version_total"
    assert _value(metrics, requests, method="Recommend", code="OK", version="5") == 3
    assert _value(metrics, requests, method="Recommend", code="OK", version="4") == 6
    assert _value(metrics, requests, method="Recommend", code="UNAVAILABLE", version="4") == 1
    seconds = "musicrec_gateway_request_seconds_by_version_count"
    assert _value(metrics, seconds, method="Recommend", version="5") == 3
    assert _value(metrics, seconds, method="Recommend", version="4") == 7
    fallbacks = "musicrec_gateway_popularity_fallbacks_by_version_total"
    assert _value(metrics, fallbacks, version="4") == 1
    assert _value(metrics, fallbacks, version="5") == 0
    # the unlabelled series keep their names and counts (dashboards and tests read them)
    assert _value(metrics, "musicrec_gateway_requests_total", method="Recommend", code="OK") == 9
    assert _value(metrics, "musicrec_gateway_model_version") == 4


def test_a_gateway_without_a_version_labels_its_errors_none():
    metrics = GatewayMetrics()
    metrics.set_serving_version(0)
    metrics.observe("Recommend", grpc.StatusCode.UNAVAILABLE, 0.001)
    text = generate_latest(metrics.registry).decode()
    assert (
        "musicrec_gateway_requests_by_version_total"
        f'{{code="UNAVAILABLE",method="Recommend",version="{NO_VERSION}"}} 1.0' in text
    )


def test_a_fallback_outside_an_rpc_is_counted_at_once():
    metrics = GatewayMetrics()
    metrics.served_by(3, fallback=True)
    fallbacks = "musicrec_gateway_popularity_fallbacks_by_version_total"
    assert _value(metrics, fallbacks, version="3") == 1
