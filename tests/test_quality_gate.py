"""The canary watcher's quality gate (online hit rate, ``serving/canary_watch.py``) and its
Prometheus source (``serving/prometheus_query.py``): the feedback metrics are read by version,
a worse canary is aborted, thin feedback is never "healthy", and the figures Debian's real
Prometheus returns by PromQL equal those scraped from the endpoint it scraped."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.exposition import start_http_server

from core import traffic_split
from serving import canary_watch, prometheus_query
from serving import gateway_metrics as gm
from serving.canary_watch import CounterWindow, WatchRules, conclude, judge
from serving.deploy import DeployConfig
from serving.gateway_metrics import VersionFigures
from serving.processes import free_port, spawn, stop_group

BUCKETS = (0.005, 0.01, 0.025, 0.1)


class FakeGateway:
    """A registry with the gateway's metric names (``gateway/metrics.py``), served over HTTP."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("musicrec_gateway_requests_by_version", "", ["version", "method",
                                "code"], registry=r)  # fmt: skip
        self.seconds = Histogram("musicrec_gateway_request_seconds_by_version", "",
                                 ["version", "method"], buckets=BUCKETS, registry=r)  # fmt: skip
        self.impressions = Counter("musicrec_gateway_impressions", "", ["version"], registry=r)
        self.hits = Counter("musicrec_gateway_impression_hits", "", ["version"], registry=r)
        self.events = Counter("musicrec_gateway_feedback_events", "", ["version", "action"],
                              registry=r)  # fmt: skip
        self.rank = Summary("musicrec_gateway_first_play_reciprocal_rank", "", ["version"],
                            registry=r)  # fmt: skip
        Counter("musicrec_gateway_feedback_unattributed", "", ["reason"], registry=r).labels(
            "expired").inc(3)  # fmt: skip

    def serve(self, version: str, lists: int, hits: int, rank: int = 2, failed: int = 0) -> None:
        """``lists`` answers of ``version`` (``failed`` of them UNAVAILABLE), ``hits`` played."""
        self.requests.labels(version, "Recommend", "OK").inc(lists - failed)
        if failed:
            self.requests.labels(version, "Recommend", "UNAVAILABLE").inc(failed)
        for i in range(lists):
            self.seconds.labels(version, "Recommend").observe(0.004 if i % 10 else 0.02)
        self.impressions.labels(version).inc(lists)
        self.hits.labels(version).inc(hits)
        self.events.labels(version, "played").inc(hits)
        self.events.labels(version, "skipped").inc(lists - hits)
        for _ in range(hits):
            self.rank.labels(version).observe(1 / rank)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def _side(impressions: float, hits: float) -> VersionFigures:
    return VersionFigures(requests=impressions, impressions=impressions, hits=hits)


# ---------------------------------------------------------------- without processes


def test_feedback_metrics_are_read_by_version_and_summarised():
    g = FakeGateway()
    g.serve("1", 200, 60, rank=2)
    g.serve("2", 100, 10, rank=4)
    figures = gm.by_version(g.text())
    one, two = figures["1"], figures["2"]
    assert (one.impressions, one.hits, one.rr_sum) == (200, 60, 30.0)
    assert one.feedback == {"played": 60, "skipped": 140}
    assert two.summary()["hit_rate"] == pytest.approx(0.1)
    assert two.summary()["mrr"] == pytest.approx(10 * 0.25 / 100)
    assert one.minus(two).impressions == 100 and one.plus(two).feedback["played"] == 70
    assert "expired" not in str(figures)  # unattributed feedback has no version
    g.serve("1", 10, 1)
    later = gm.by_version(g.text())
    delta, reset = gm.since(later, figures)
    assert not reset and delta["1"].impressions == 10 and delta["1"].hits == 1
    assert later["1"].went_down(figures["1"]) is False
    assert VersionFigures(impressions=5).went_down(VersionFigures(impressions=9))


def test_the_gate_aborts_a_worse_canary_on_the_counts_since_the_watch_began():
    rules, off = WatchRules(quality_gate=True), WatchRules()
    window = _side(1000, 300)  # a healthy window: the gate reads the totals, not this
    worse = (_side(400, 40), _side(4000, 1200))
    assert "worse at" in judge(window, window, rules, total=worse)
    assert "hit rate 0.100 against 0.300" in judge(window, window, rules, total=worse)
    assert judge(window, window, off, total=worse) == ""  # gate off: errors and p99 only
    assert judge(window, window, rules) == ""  # no totals given: nothing to judge
    thin = (_side(50, 0), _side(500, 150))  # 50 canary lists: not yet, whatever the rate
    assert judge(window, window, rules, total=thin) == ""
    with pytest.raises(ValueError):
        WatchRules(quality_alpha=1.5)


def test_healthy_needs_the_drop_shown_below_max_hit_rate_drop():
    rules = WatchRules(quality_gate=True, max_hit_rate_drop=0.05)
    window = _side(1000, 300)
    assert conclude(window, 1, 1, WatchRules(), total=None) == ""  # gate off: as before
    assert "no feedback counts" in conclude(window, 1, 1, rules)
    assert "thin feedback" in conclude(window, 1, 1, rules, total=(_side(80, 24), _side(800, 240)))
    assert "thin feedback" in conclude(window, 1, 1, rules, total=(_side(900, 0), _side(900, 0)))
    unsure = (_side(300, 90), _side(3000, 900))  # equal rates, too few to exclude a 5-point drop
    assert "not shown within 0.050" in conclude(window, 1, 1, rules, total=unsure)
    assert conclude(window, 1, 1, rules, total=(_side(3000, 900), _side(30000, 9000))) == ""
    assert "1 of 2 gateways" in conclude(window, 1, 2, rules, total=unsure)
    # the loser of a 2-point drop is not "worse" yet, but neither is it healthy at 1 point
    close = (_side(3000, 840), _side(30000, 9000))
    assert judge(window, window, rules, total=close) == ""
    tight = WatchRules(quality_gate=True, max_hit_rate_drop=0.01)
    assert "not shown" in conclude(window, 1, 1, tight, total=close)


@pytest.fixture
def split(tmp_path):
    traffic_split.write(tmp_path, traffic_split.Rollout(serving=1, canary=2, percent=50))
    return DeployConfig(repository=tmp_path)


@pytest.fixture
def aborts(monkeypatch):
    called: list[str] = []
    monkeypatch.setattr(canary_watch, "abort", lambda cfg, reason, **kw: called.append(reason))
    return called


def _ticking(per_tick: dict[str, tuple[int, int]]):
    """A watcher source: every poll, one gateway's counters grow by ``per_tick``."""
    totals: dict[str, VersionFigures] = {}

    def poll():
        for v, (n, h) in per_tick.items():
            totals[v] = totals.get(v, VersionFigures()).plus(_side(n, h))
        return {"g1": dict(totals)}

    return poll


def test_the_watch_loop_aborts_a_worse_canary_and_records_the_test(split, aborts):
    rules = WatchRules(window_s=5, interval_s=0.01, min_requests=10, quality_gate=True)
    source = _ticking({"2": (20, 2), "1": (20, 6)})
    result = canary_watch.watch(split, None, rules, duration_s=30, source=source)
    assert result.verdict == "aborted" and "worse at" in result.reason, result
    assert aborts and result.quality["decision"] == "worse"
    assert result.quality["interval"][1] < 0


def test_the_watch_loop_is_inconclusive_on_thin_feedback_and_healthy_on_enough(split, aborts):
    rules = WatchRules(window_s=5, interval_s=0.01, min_requests=10, quality_gate=True)
    thin = canary_watch.watch(split, None, rules, duration_s=0.3,
                              source=_ticking({"2": (20, 0), "1": (20, 0)}))  # fmt: skip
    assert thin.verdict == "inconclusive" and "thin feedback" in thin.reason, thin
    busy = canary_watch.watch(split, None, rules, duration_s=0.3,
                              source=_ticking({"2": (2000, 600), "1": (2000, 600)}))  # fmt: skip
    assert busy.verdict == "healthy" and busy.quality["not_worse"], busy
    assert not aborts
    with pytest.raises(ValueError, match="source"):
        canary_watch.watch(split, None, rules, duration_s=1)


def test_the_prometheus_poller_counts_a_silent_server_as_silent_gateways():
    poll = prometheus_query.Poller(f"http://127.0.0.1:{free_port()}")
    assert poll() == {poll.url: None}
    window = CounterWindow(10)
    assert window.add(0, poll()) == 0


# ---------------------------------------------------------------- a real Prometheus


def _wait_for(port: int, expr: str, ok, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            found = prometheus_query.query(f"http://127.0.0.1:{port}", expr)
            if ok(found):
                return found
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {expr!r} as expected")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Debian's Prometheus scraping a live endpoint and a dead one, job "gateway", every 1 s."""
    tmp = tmp_path_factory.mktemp("prom")
    gateway, port, dead = FakeGateway(), free_port(), free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=gateway.registry)
    targets = [f"127.0.0.1:{port}", f"127.0.0.1:{dead}"]
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": prometheus_query.DEFAULT_JOB,
                                  "static_configs": [{"targets": targets}]}]}  # fmt: skip
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    command = [
        "prometheus",
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{web}",
    ]
    process = spawn(command, dict(os.environ), tmp / "prom.log")  # fmt: skip
    try:
        _wait_for(web, 'up{job="gateway"}', lambda r: len(r) == 2)
        yield gateway, f"127.0.0.1:{port}", f"http://127.0.0.1:{web}", tmp
    finally:
        stop_group(process)
        server.shutdown()
        thread.join(5)


def _settled(gateway: FakeGateway, url: str) -> None:
    """Wait until Prometheus holds the endpoint's current impressions (a scrape after them)."""
    want = sum(f.impressions for f in gm.by_version(gateway.text()).values())
    expr = "sum(musicrec_gateway_impressions_total)"
    _wait_for(int(url.rsplit(":", 1)[1]), expr,
              lambda r: bool(r) and float(r[0]["value"][1]) == want)  # fmt: skip


def _same(a: dict[str, VersionFigures], b: dict[str, VersionFigures]) -> None:
    assert sorted(a) == sorted(b)
    for v in a:
        for f in fields(VersionFigures):
            mine, theirs = getattr(a[v], f.name), getattr(b[v], f.name)
            assert mine == pytest.approx(theirs, rel=1e-9), (v, f.name)


def test_promql_figures_equal_the_scraped_ones(prometheus):
    gateway, address, url, _ = prometheus
    gateway.serve("1", 900, 270, rank=3, failed=9)
    gateway.serve("2", 100, 12, rank=1)
    _settled(gateway, url)
    scraped, answered = gm.scrape(address)
    assert answered == 1
    via_promql = prometheus_query.figures(url)
    _same(via_promql, scraped)
    assert via_promql["1"].impressions == 900 and via_promql["1"].errors == 9
    assert via_promql["1"].buckets[math.inf] == 900 and via_promql["2"].rr_sum == 12
    print(
        f"PromQL and scrape agree on {len(scraped)} versions: "
        f"{ {v: f.summary()['hit_rate'] for v, f in via_promql.items()} }"
    )
    each = prometheus_query.by_instance(url)
    assert len(each) == 2 and address in each  # both targets of the job
    assert sum(f is None for f in each.values()) == 1  # the dead target: expected, silent
    _same(each[address], gm.by_version(gm.fetch(address)))
    assert prometheus_query.targets(url) == {a: a == address for a in each}


def test_the_watcher_reads_prometheus_and_aborts_a_worse_canary(prometheus, tmp_path, aborts):
    gateway, _, url, _ = prometheus
    traffic_split.write(tmp_path, traffic_split.Rollout(serving=1, canary=2, percent=50))
    stop = threading.Event()

    def traffic() -> None:  # the canary's lists are played a third as often
        while not stop.wait(0.2):
            gateway.serve("1", 60, 18)
            gateway.serve("2", 60, 6)

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    rules = WatchRules(window_s=10, interval_s=0.5, min_requests=10, quality_gate=True)
    try:
        result = canary_watch.watch(DeployConfig(repository=Path(tmp_path)), None, rules,
                                    duration_s=60, source=prometheus_query.Poller(url))  # fmt: skip
    finally:
        stop.set()
        feeder.join(5)
    assert result.verdict == "aborted" and "worse at" in result.reason, result
    assert result.gateways == 1 and result.gateways_expected == 2  # the dead target counts
    assert result.seconds < 30 and aborts
    print(f"aborted by PromQL after {result.seconds:.1f} s: {result.reason}")


def test_the_deploy_flags_build_the_watch_rules():
    from app.main import build_parser
    from app.rollout_commands import validate

    def rules(*flags: str) -> WatchRules:
        return validate(build_parser().parse_args(["deploy", "watch", "--watch", "30", *flags]))

    got = rules("--prometheus", "http://prom:9090", "--quality-gate", "--quality-alpha", "0.01",
                "--max-hit-rate-drop", "0.02", "--min-impressions", "500")  # fmt: skip
    assert got.quality_gate and got.quality_alpha == 0.01 and got.max_hit_rate_drop == 0.02
    assert got.quality_min_impressions == 500 and got.latency_alpha == 0.01
    assert not rules("--gateway-metrics", "127.0.0.1:9101").quality_gate
    with pytest.raises(ValueError, match="--prometheus URL"):
        rules()
    with pytest.raises(ValueError, match="takes a URL"):
        rules("--prometheus", "prom:9090")
    with pytest.raises(ValueError):
        rules("--prometheus", "http://prom:9090", "--quality-alpha", "0")
