"""Canary and shadow rollouts with the real Triton and gateway: the split (share and
stickiness), promote, abort, the automatic abort of a failing or slow canary with no error a
client sees, and shadow agreement that never changes the served answer."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import stats

from client import RecommenderClient
from core import traffic_split
from core.contract import SERVED_MODELS
from core.files import file_digests
from export.repository import export_run
from export.triton_config import serving_policy
from gateway.rollout import agreement
from loadtests.async_load import AsyncLoad
from serving import canary_watch, rollout
from serving.canary_watch import WatchRules, judge
from serving.deploy import DeployError
from serving.gateway_metrics import VersionFigures, parse_metrics, quantile, slower_than
from training.run import load_run

# ---------------------------------------------------------------- without processes


def test_the_split_is_stable_near_its_share_and_differs_between_canaries():
    keys = [traffic_split.listener_key(f"user{i}") for i in range(20_000)]
    ten = traffic_split.Rollout(serving=1, canary=2, percent=10)
    chosen = [traffic_split.in_canary(ten, k) for k in keys]
    assert abs(sum(chosen) / len(keys) * 100 - 10) < 1
    assert chosen == [traffic_split.in_canary(ten, k) for k in keys]  # no per-process salt
    other = traffic_split.Rollout(serving=1, canary=3, percent=10)
    # each canary, other listeners
    assert chosen != [traffic_split.in_canary(other, k) for k in keys]
    wider = traffic_split.Rollout(serving=1, canary=2, percent=30)
    assert all(traffic_split.in_canary(wider, k) for k, c in zip(keys, chosen, strict=True) if c)
    # a history is the same listener whatever the order, case or repeats of its artists
    key = traffic_split.listener_key
    assert key(None, ["B", "a", "b"]) == key(None, ["A", "b"])
    assert key(None, ["a"]) != key("a")


def test_rollout_file_is_validated(tmp_path):
    with pytest.raises(ValueError, match="percent"):
        traffic_split.Rollout(serving=1, canary=2, percent=120)
    with pytest.raises(ValueError, match="already serves"):
        traffic_split.Rollout(serving=2, canary=2, percent=10)
    traffic_split.write(tmp_path, traffic_split.Rollout(serving=1, shadow=2, shadow_percent=100))
    assert traffic_split.read(tmp_path) == traffic_split.Rollout(1, None, 0.0, 2, 100.0)
    (tmp_path / traffic_split.ROLLOUT_FILE).write_text('{"serving": 1, "canary"')
    with pytest.raises(traffic_split.RolloutError, match="unreadable.*deploy abort"):
        traffic_split.read(tmp_path)


def test_agreement_of_two_top_10_lists():
    a = [str(i) for i in range(10)]
    assert agreement(a, a) == pytest.approx((1.0, 1.0, 1.0))
    overlap, rho, tau = agreement(a, a[::-1])
    assert overlap == 1.0 and rho == pytest.approx(-1) and tau == pytest.approx(-1)
    overlap, rho, tau = agreement(a, a[:5] + [str(i) for i in range(20, 25)])
    assert overlap == 0.5 and 0 < tau < 1 and 0 < rho < 1
    assert all(math.isnan(x) for x in agreement([], a))
    rng = np.random.default_rng(0)
    pool = [str(i) for i in range(25)]
    for _ in range(200):  # the same as scipy.stats on the union's ranks, ties included
        x, y = list(rng.choice(pool, 10, replace=False)), list(rng.choice(pool, 10, replace=False))
        union = list(dict.fromkeys(x + y))
        rx = [x.index(u) if u in x else 10 for u in union]
        ry = [y.index(u) if u in y else 10 for u in union]
        _, rho, tau = agreement(x, y)
        assert rho == pytest.approx(stats.spearmanr(rx, ry).statistic)
        assert tau == pytest.approx(stats.kendalltau(rx, ry).statistic)


def _figures(ok: int, failed: int, p99_bucket: float, retried: int = 0) -> VersionFigures:
    buckets = {0.005: 0.0, 0.01: 0.0, 0.025: 0.0, 0.25: 0.0, 0.5: 0.0, math.inf: 0.0}
    for le in buckets:
        buckets[le] = ok + failed if le >= p99_bucket else 0.0
    return VersionFigures(ok + failed, failed, retried, buckets)


def test_the_watcher_judges_error_ratio_and_p99_against_the_serving_version():
    rules = WatchRules(min_requests=30)
    serving = _figures(1000, 0, 0.01)
    assert judge(_figures(100, 0, 0.01), serving, rules) == ""
    assert judge(_figures(5, 5, 0.5, retried=5), serving, rules) == ""  # too few to judge
    assert "error ratio 50.0%" in judge(_figures(50, 50, 0.01, retried=50), serving, rules)
    assert "error ratio 100.0%" in judge(_figures(0, 40, 0.01, retried=40), serving, rules)
    assert "p99" in judge(_figures(100, 0, 0.25), serving, rules)
    assert "100 of 100 answers slower" in judge(_figures(100, 0, 0.25), serving, rules)


def _mixed(fast: int, slow: int) -> VersionFigures:
    n = fast + slow
    return VersionFigures(n, 0, 0, {0.01: fast, 0.025: fast, 0.25: n, math.inf: n})


def test_a_p99_breach_on_thin_traffic_must_be_significant():
    """CI aborted a healthy canary: 76 answers, so the window's p99 was its one stalled answer."""
    rules, serving = WatchRules(min_requests=10), _figures(1000, 0, 0.01)
    assert judge(_mixed(75, 1), serving, rules) == ""  # one stall: p99 is high, 1% is expected
    assert judge(_mixed(74, 2), serving, rules) == ""
    assert "5 of 76 answers slower" in judge(_mixed(71, 5), serving, rules)
    assert "30 of 30" in judge(_mixed(0, 30), serving, rules)  # slow on every answer
    assert slower_than(0.0249, {0.01: 2.0, 0.025: 3.0, math.inf: 9.0}) == 6.0
    assert slower_than(0.3, {0.01: 2.0, 0.025: 3.0, math.inf: 9.0}) == 0.0  # past the last bound
    assert quantile(0.99, {0.01: 98.0, 0.02: 100.0, math.inf: 100.0}) == pytest.approx(0.015)


def test_gateway_metrics_text_is_read_by_version():
    text = """\
musicrec_gateway_requests_by_version_total{code="OK",method="Recommend",version="1"} 90.0
musicrec_gateway_requests_by_version_total{code="UNAVAILABLE",method="Recommend",version="1"} 10.0
musicrec_gateway_requests_by_version_total{code="NOT_FOUND",method="Recommend",version="2"} 4.0
musicrec_gateway_requests_by_version_total{code="INTERNAL",method="Recommend",version="2"} 6.0
musicrec_gateway_canary_retries_total{code="INTERNAL",version="2"} 6.0
musicrec_gateway_shadow_overlap_at_10_sum{version="2"} 1.5
musicrec_gateway_shadow_overlap_at_10_count{version="2"} 2.0
"""
    into: dict[str, VersionFigures] = {}
    parse_metrics(text, into)
    parse_metrics(text, into)  # a second gateway adds to the first
    assert into["1"].error_ratio == pytest.approx(0.1)
    assert into["2"].requests == 20 and into["2"].error_ratio == pytest.approx(0.6)
    assert into["2"].retried == 12
    assert into["2"].summary()["overlap_at_10"] == pytest.approx(0.75)


# ---------------------------------------------------------------- real Triton and gateway

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(three_version_stack):
    """Triton + gateway serving version 1; versions 2 and 3 exported (``tests/conftest.py``)."""
    return three_version_stack


@pytest.fixture(scope="module")
def listeners(run_dir):
    """Known users, and 1,500 new listeners' histories (5 artist names each)."""
    run = load_run(run_dir)
    users = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]
    rng = np.random.default_rng(0)
    names = run.vocab.artist_names
    histories = [[names[a] for a in rng.choice(len(names), 5, replace=False)]
                 for _ in range(1500)]  # fmt: skip
    return users, histories


def _serving(running) -> int:
    with RecommenderClient(running.gateway.address) as client:
        return client.serving_info().model_version


def _routed(running, users: list[str], version: int, timeout_s: float = 30) -> bool:
    """Wait until the gateway answers some listener with ``version`` (it loaded the split)."""
    deadline = time.monotonic() + timeout_s
    with RecommenderClient(running.gateway.address) as client:
        while time.monotonic() < deadline:
            if any(client.recommend(u, k=3).model_version == version for u in users):
                return True
            time.sleep(0.2)
    return False


def _pins(cfg) -> set[tuple[int, ...]]:
    return {tuple(serving_policy(cfg.repository / name) or ()) for name in SERVED_MODELS}


@slow
def test_a_canary_answers_its_sticky_share_of_listeners_then_promote_swaps_it_in(stack, listeners):
    running, cfg, metrics = stack
    users, histories = listeners
    serving = _serving(running)
    report = rollout.start(cfg, version=2, canary_percent=10)
    assert (report.action, report.serving) == ("canary", serving)
    assert _pins(cfg) == {(serving, 2)} and _serving(running) == serving
    assert _routed(running, users, 2)
    with AsyncLoad(running.gateway.address, users, histories=histories) as load:
        assert load.wait_for(3 * len(histories))
    assert load.failures == []
    assert set(load.seen) == set(range(len(histories)))
    assert all(len(v) == 1 for v in load.seen.values())  # sticky
    on_canary = {i for i, v in load.seen.items() if v == {2}}
    published = traffic_split.read(cfg.repository)
    expected = {
        i
        for i, h in enumerate(histories)
        if traffic_split.in_canary(published, traffic_split.listener_key(None, h))
    }
    assert on_canary == expected  # the hash every gateway computes
    assert abs(len(on_canary) / len(histories) * 100 - 10) <= 3
    found = rollout.figures(cfg, metrics)
    assert found["rollout"].canary == 2 and found["versions"]["2"]["requests"] > 0
    assert _serving(running) == serving  # a canary never becomes the gateway's own version

    with AsyncLoad(running.gateway.address, users) as load:
        assert load.wait_for(200)
        with pytest.raises(DeployError, match="promote refused"):  # no verdict yet
            rollout.promote(cfg)
        rules = WatchRules(window_s=5, interval_s=0.5, min_requests=10)
        watched = canary_watch.watch(cfg, metrics, rules, duration_s=3)
        assert watched.verdict == "healthy" and watched.gateways == 1, watched
        promoted = rollout.promote(cfg)  # the recorded verdict lets it through
        assert load.wait_for(load.ok + 500)
    assert load.failures == []
    assert promoted.version == 2 and _serving(running) == 2
    assert traffic_split.read(cfg.repository) is None and _pins(cfg) == {(2,)}
    history = json.loads((cfg.repository / "deployments.json").read_text())
    assert history[-1] == {**history[-1], "action": "deploy", "version": 2, "previous": serving}


@slow
def test_abort_drops_the_canary_under_load_with_no_failed_request(stack, listeners):
    running, cfg, metrics = stack
    users, _ = listeners
    serving = _serving(running)
    rollout.start(cfg, version=3, canary_percent=50, force=True)
    assert _routed(running, users, 3)
    with pytest.raises(traffic_split.RolloutError, match="runs beside"):  # one rollout at a time
        rollout.start(cfg, version=3, shadow_percent=10, force=True)
    with AsyncLoad(running.gateway.address, users) as load:
        assert load.wait_for(300)
        report = rollout.abort(cfg)
        assert load.wait_for(load.ok + 500)
    assert load.failures == []
    assert (report.action, report.version, report.serving) == ("abort", 3, serving)
    assert traffic_split.read(cfg.repository) is None and _pins(cfg) == {(serving,)}
    with RecommenderClient(running.gateway.address) as client:
        assert {client.recommend(u, k=3).model_version for u in users[:50]} == {serving}
    with pytest.raises(DeployError, match="no canary or shadow rollout runs"):
        rollout.promote(cfg)


def _bad_version(run_dir, cfg, how: str) -> int:
    """A version that passes every offline check but fails (or is slow) in Triton."""
    version = export_run(run_dir, cfg.repository).version
    body = {"fail": "raise RuntimeError('a bad canary')",
            "slow": "import time; time.sleep(0.3)"}[how]  # fmt: skip
    for name in SERVED_MODELS:
        model_py = cfg.repository / name / str(version) / "model.py"
        text = model_py.read_text()
        hook = "    def _run(self, joined):\n"
        if hook in text:
            model_py.write_text(text.replace(hook, hook + f"        {body}\n"))
        manifest = model_py.parent / "manifest.json"
        data = json.loads(manifest.read_text())
        data["files"] = file_digests(model_py.parent, skip=("manifest.json",))
        manifest.write_text(json.dumps(data))
    return version


@slow
@pytest.mark.parametrize("how", ["fail", "slow"])
def test_a_bad_canary_is_aborted_automatically_and_no_client_sees_an_error(
    stack, listeners, run_dir, how
):
    running, cfg, metrics = stack
    users, _ = listeners
    serving = _serving(running)
    version = _bad_version(run_dir, cfg, how)
    rules = WatchRules(window_s=10, interval_s=0.5, min_requests=20)
    with AsyncLoad(running.gateway.address, users) as load:
        assert load.wait_for(load.ok + 100)
        start = time.monotonic()
        rollout.start(cfg, version=version, canary_percent=20, force=True)
        result = canary_watch.watch(cfg, metrics, rules, duration_s=90)
        aborted_s = time.monotonic() - start
        assert load.wait_for(load.ok + 200)
    assert result.verdict == "aborted", result
    assert ("error ratio" if how == "fail" else "p99") in result.reason
    assert aborted_s <= 60
    assert load.failures == []
    assert traffic_split.read(cfg.repository) is None and _pins(cfg) == {(serving,)}
    if how == "fail":
        found = rollout.figures(cfg, metrics)["versions"][str(version)]
        # every attempt failed: retried, or (once the canary's breaker opened) sent straight
        # to the serving version, counted as UNAVAILABLE under the canary
        assert found["requests"] == found["errors"] >= rules.min_requests
        assert 1 <= found["retried"] <= found["errors"]
    history = json.loads((cfg.repository / "deployments.json").read_text())
    assert history[-1]["action"] == "abort" and history[-1]["gate"].startswith("automatic")


@slow
def test_a_shadow_records_agreement_and_never_changes_the_answer(stack, listeners, run_dir):
    running, cfg, metrics = stack
    users, _ = listeners
    serving = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    sample = users[:40]
    with RecommenderClient(running.gateway.address) as client:
        before = [client.recommend(u, k=10) for u in sample]
        rollout.start(cfg, version=version, shadow_percent=100, force=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the gateway has loaded the shadow
            client.recommend(sample[0], k=10)
            versions = rollout.figures(cfg, metrics).get("versions", {})
            if versions.get(str(version), {}).get("shadow"):
                break
            time.sleep(0.2)
        during = [client.recommend(u, k=10) for u in sample]
    assert [(r.model_version, [a.id for a in r.artists]) for r in during] == [
        (r.model_version, [a.id for a in r.artists]) for r in before]  # fmt: skip
    assert {r.model_version for r in during} == {serving}
    time.sleep(0.5)  # the last shadow calls finish
    found = rollout.figures(cfg, metrics)["versions"][str(version)]
    calls = found["shadow"]  # one in flight per gateway: the rest are dropped, never queued
    assert calls.get("ok", 0) > 0 and calls.get("ok", 0) + calls.get("dropped", 0) >= len(sample)
    assert found["requests"] == 0  # a shadow answers no caller
    # the same run exported again: the versions agree (the rollout's figures say so)
    assert found["overlap_at_10"] == pytest.approx(1.0)
    assert found["kendall"] == pytest.approx(1.0) and found["shadow_p50_ms"] is not None
    rollout.abort(cfg)
    assert traffic_split.read(cfg.repository) is None and _pins(cfg) == {(serving,)}


@slow
def test_cli_canary_status_refused_deploy_and_abort(stack, listeners, run_dir, capsys,
                                                     monkeypatch):  # fmt: skip
    from app.main import main as musicrec
    from serving import admin_key

    running, cfg, metrics = stack
    users, _ = listeners
    serving = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    monkeypatch.setenv(admin_key.ENV_VAR, running.triton.admin_key)
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url]
    assert musicrec(["deploy", "--version", str(version), "--canary", "50", "--force", *ops]) == 0
    out = capsys.readouterr().out
    assert f"canary: version {version} loaded beside version {serving}" in out
    assert _routed(running, users, version)
    for refused in (["deploy", "--version", str(version), "--force"], ["rollback"]):
        assert musicrec([*refused, *ops]) == 2
        assert f"a rollout of version {version} runs beside" in capsys.readouterr().out
    assert musicrec(["status", *ops, "--gateway-metrics", metrics]) == 0
    out = capsys.readouterr().out
    assert f"canary version {version}: 50% of listeners" in out and "canary" in out
    assert "gateway metrics endpoints" in out  # where the figures come from
    assert "watcher verdict: none recorded" in out  # promote would need one, or --force
    assert musicrec(["deploy", "abort", *ops]) == 0
    assert f"abort: version {version} unloaded" in capsys.readouterr().out
    assert musicrec(["deploy", "promote", *ops]) == 2
    assert "no canary or shadow rollout runs" in capsys.readouterr().out
    assert _serving(running) == serving and _pins(cfg) == {(serving,)}
