"""The replay's scenarios on a running stack (each returns the dict ``online.json`` keeps).

An interleaving scenario fits the same shape: start ``deploy --interleave`` for the candidate,
run a :class:`Replay`, and read the teams each play was credited to
(:attr:`Impression.credits`) or the gateway's interleaving counters."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.online_replay.replay import K, Listener, Replay, feedback_events
from benchmarks.process_cpu import sample_group
from client import FeedbackEvent, RecommenderClient, RecommenderError
from core.interleaving import credit
from core.sequential_test import (
    InterleavingResult,
    ProportionsResult,
    ProportionsRules,
    interleaving_test,
    proportions_test,
)
from gateway.config import GatewayConfig
from gateway.event_log import segments
from serving import canary_watch, gateway_metrics, rollout
from serving.deploy import DeployConfig, DeployError, current_version, deploy
from serving.gateway_process import GatewayProcess
from serving.processes import free_port

CONCURRENCY = 4
WRITE_MARGIN_S = 0.1  # one commit and the writer's 0.1 s queue poll beyond the flush interval


@dataclass(frozen=True)
class Target:
    """Where the replay sends and what it may change."""

    ops: DeployConfig
    address: str  # the gateway's gRPC address
    metrics: str  # its metrics endpoint (host:port)
    gateway_pgid: int


def _answers_with(address: str, people: list[Listener], version: int, timeout_s=120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with RecommenderClient(address, timeout_s=30) as client:
        while time.monotonic() < deadline:
            for p in people[:50]:
                kw = {"artist_ids": list(p.history)} if p.user_id is None else {}
                if client.recommend(p.user_id, k=K, **kw).model_version == version:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"the gateway never answered with version {version}")


def serve(target: Target, version: int, people: list[Listener]) -> None:
    """Make ``version`` serve (no metric gate: the benchmark serves worse versions on purpose)."""
    if current_version(target.ops) != version:
        deploy(target.ops, version=version, force=True)
    _answers_with(target.address, people, version)


def online_pass(target: Target, version: int, people: list[Listener]) -> dict:
    """Every listener once against ``version`` serving: the replay's tally and the gateway's
    own per-version figures (hit rate, MRR) over the same lists."""
    serve(target, version, people)
    before = gateway_metrics.scrape(target.metrics)[0].get(str(version))
    with Replay(target.address, people, CONCURRENCY) as r:
        r.wait_for(len(people))
    time.sleep(0.5)
    after = gateway_metrics.scrape(target.metrics)[0][str(version)]
    gw = (after.minus(before) if before else after).summary()
    tally = r.tally.by_version().get(version, {})
    return {"version": version, "impressions": tally.get("impressions", 0),
            "hit_rate": tally.get("hit_rate"), "mrr": tally.get("mrr"),
            "gateway_hit_rate": gw.get("hit_rate"), "gateway_mrr": gw.get("mrr"),
            "client_failed": len(r.tally.failures)}  # fmt: skip


def sequential_ab(impressions, canary: int, serving: int, rules: ProportionsRules,
                  ) -> tuple[int | None, ProportionsResult | None]:  # fmt: skip
    """The always-valid hit-rate test after every impression of a stream split between two
    versions: (impressions until "worse" or None, the last result)."""
    hits, seen = {canary: 0, serving: 0}, {canary: 0, serving: 0}
    last = None
    for n, imp in enumerate(i for i in impressions if i.version in seen):
        hits[imp.version] += imp.hit
        seen[imp.version] += 1
        last = proportions_test((hits[canary], seen[canary]), (hits[serving], seen[serving]),
                                rules, previous=last)  # fmt: skip
        if last.decision == "worse":
            return n + 1, last
    return None, last


def interleaved_sequence(impressions, alpha: float = 0.05,
                         ) -> tuple[int | None, InterleavingResult | None]:  # fmt: skip
    """``interleaving_test`` after every interleaved impression of a replay, each credited by
    ``core.interleaving.credit`` from the teams the Feedback attributions name: (interleaved
    impressions until "better" or "worse", or None; the last result). What an interleaving
    scenario reads beside the gateway's own outcome counters."""
    outcomes = {"candidate": 0, "serving": 0, "tie": 0}
    last = None
    for n, imp in enumerate(i for i in impressions if any(i.teams)):
        outcome = credit(imp.teams, [r - 1 for r in imp.played_ranks])
        if outcome in outcomes:
            outcomes[outcome] += 1
        last = interleaving_test(outcomes["candidate"], outcomes["serving"], outcomes["tie"],
                                 alpha=alpha, previous=last)  # fmt: skip
        if last.decision in ("better", "worse"):
            return n + 1, last
    return None, last


def quality_canary(target: Target, version: int, people: list[Listener], percent: float,
                   duration_s: float, rules: canary_watch.WatchRules) -> dict:  # fmt: skip
    """``deploy --canary percent --watch duration_s --quality-gate`` of ``version`` under the
    replay: the verdict, seconds from the deploy to an abort, client failures, the polls."""
    polls: list[dict] = []
    serving = current_version(target.ops)
    with Replay(target.address, people, CONCURRENCY) as r:
        r.wait_for(200)
        start = time.monotonic()
        rollout.start(target.ops, version=version, canary_percent=percent, force=True,
                      metrics=target.metrics)  # fmt: skip
        loaded_s = time.monotonic() - start
        result = canary_watch.watch(target.ops, target.metrics, rules, duration_s=duration_s,
                                    on_poll=polls.append)  # fmt: skip
        ended_s = time.monotonic() - start
        watch_began = start + loaded_s
        r.wait_for(r.count + 200)
    if rollout.read_state(target.ops.repository) is not None:  # healthy / inconclusive
        with contextlib.suppress(DeployError):
            rollout.abort(target.ops, "benchmark: scenario over", metrics=target.metrics)
    stream = [i for i in r.tally.impressions if i.t >= watch_began]
    series = replay_series(stream, watch_began, loaded_s, version, serving)
    return {"version": version, "serving": serving, "percent": percent,
            "verdict": result.verdict, "reason": result.reason,
            "aborted_s": ended_s if result.verdict == "aborted" else None,
            "canary_loaded_s": loaded_s, "watch_s": result.seconds,
            "client_failed": len(r.tally.failures), "failures_sample": r.tally.failures[:5],
            "impressions": r.count, "replay_by_version": r.tally.by_version(watch_began),
            "quality": result.quality, "polls": polls, "stream": stream,
            "replay_series": series}  # fmt: skip


def replay_series(stream, began: float, offset_s: float, canary: int, serving: int,
                  step_s: float = 0.5) -> list[list[float]]:  # fmt: skip
    """``[seconds since the deploy, serving hits, lists, canary hits, lists]`` every
    ``step_s``, cumulative since the watch began (the counts the gate tests)."""
    counts = {serving: [0, 0], canary: [0, 0]}
    out: list[list[float]] = []
    edge = began + step_s
    for imp in stream:
        while imp.t >= edge:
            out.append([round(edge - began + offset_s, 2), *counts[serving], *counts[canary]])
            edge += step_s
        if imp.version in counts:
            counts[imp.version][0] += imp.hit
            counts[imp.version][1] += 1
    out.append([round(edge - began + offset_s, 2), *counts[serving], *counts[canary]])
    return out


def feedback_latency(target: Target, people: list[Listener], seconds: float = 10.0,
                     warmup_s: float = 2.0) -> dict:  # fmt: skip
    """Closed-loop Feedback calls (one sync client, one event each) on a pool of answered
    lists: p50/p99 after a warm-up, and the gateway's CPU ms per call from /proc."""
    with RecommenderClient(target.address, timeout_s=30) as client:
        pool = []
        for p in people[:300]:
            kw = {"artist_ids": list(p.history)} if p.user_id is None else {}
            rec = client.recommend(p.user_id, k=K, **kw)
            pool.append((rec.recommendation_id, [a.id for a in rec.artists], p.held_out))
        lat: list[float] = []
        i, begin, cpu0, t_measure = 0, time.monotonic(), None, 0.0
        while time.monotonic() - begin < warmup_s + seconds:
            if cpu0 is None and time.monotonic() - begin >= warmup_s:
                cpu0, t_measure, lat = sample_group(target.gateway_pgid), time.monotonic(), []
            rid, ids, held = pool[i % len(pool)]
            event = feedback_events([ids[i % len(ids)]], held)
            t = time.perf_counter()
            client.feedback(rid, event)
            lat.append(time.perf_counter() - t)
            i += 1
        cpu = sample_group(target.gateway_pgid) - cpu0
        wall = time.monotonic() - t_measure
    ordered = sorted(lat)
    return {"calls": len(lat), "seconds": wall, "calls_per_s": len(lat) / wall,
            "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
            "gateway_cpu_ms_per_call": cpu.seconds * 1e3 / len(lat)}  # fmt: skip


def _feedback_load(address: str, people: list[Listener], acked: list,
                   stop: threading.Event) -> None:  # fmt: skip
    """Recommend + Feedback until the gateway dies; each acknowledged event appended as
    (time, kind, key), as tests/test_feedback.py does."""
    with RecommenderClient(address, timeout_s=2) as client:
        i = 0
        while not stop.is_set():
            p = people[i % len(people)]
            try:
                kw = {"artist_ids": list(p.history)} if p.user_id is None else {}
                rec = client.recommend(p.user_id, k=K, **kw)
                acked.append((time.monotonic(), "impression", rec.recommendation_id))
                artist = rec.artists[i % len(rec.artists)].id
                client.feedback(rec.recommendation_id, [FeedbackEvent("played", artist)])
                acked.append((time.monotonic(), "feedback", (rec.recommendation_id, artist)))
            except RecommenderError:
                return
            i += 1


def _logged(directory: Path) -> tuple[set[str], set[tuple[str, str]]]:
    impressions, feedback = set(), set()
    for path in segments(directory):
        with sqlite3.connect(path) as conn:
            impressions |= {r for (r,) in conn.execute("SELECT rec_id FROM impressions")}
            feedback |= set(conn.execute("SELECT rec_id, artist_id FROM feedback").fetchall())
    return impressions, feedback


def sigkill_events(base: GatewayConfig, people: list[Listener], root: Path,
                   load_s: float = 4.0) -> dict:  # fmt: skip
    """A second gateway with ``--events DIR`` (the documented flush interval) under
    Recommend + Feedback load, SIGKILLed: acknowledged events missing from its SQLite segments
    against what one flush interval holds at the measured rate."""
    events = root / "events"
    config = replace(base, port=free_port(), metrics_port=free_port(), events=events)
    flush_s = config.events_flush_s
    gateway = GatewayProcess(config, log_file=root / "events_gateway.log").start()
    acked: list = []
    stop = threading.Event()
    load = threading.Thread(target=_feedback_load, args=(gateway.address, people, acked, stop))
    try:
        load.start()
        time.sleep(load_s)
        started = acked[0][0]
        os.killpg(gateway.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        load.join(10)
    finally:
        stop.set()
        gateway.stop()
    impressions, feedback = _logged(events)
    lost = [(t, kind) for t, kind, key in acked
            if key not in (impressions if kind == "impression" else feedback)]  # fmt: skip
    rate = len(acked) / (killed - started)
    oldest = max((killed - t for t, _ in lost), default=0.0)
    return {"acknowledged": len(acked), "lost": len(lost), "events_per_s": rate,
            "flush_s": flush_s, "bound": math.ceil(rate * (flush_s + WRITE_MARGIN_S)),
            "oldest_lost_before_kill_s": oldest}  # fmt: skip


def interleave(target: Target, candidate: int, people: list[Listener], impressions: int,
               percent: float = 100.0, stop_on_decision: bool = False) -> dict:  # fmt: skip
    """``deploy --interleave percent`` of ``candidate`` under the replay until ``impressions``
    interleaved lists (or a decision, with ``stop_on_decision``): the test after every
    interleaved impression (:func:`interleaved_sequence`) and the gateway's own tally."""
    rollout.start(target.ops, version=candidate, interleave_percent=percent, force=True,
                  metrics=target.metrics)  # fmt: skip
    before = gateway_metrics.scrape(target.metrics)[0].get(str(candidate))
    with Replay(target.address, people, CONCURRENCY) as r:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stream = [i for i in r.tally.impressions if any(i.teams)]
            if len(stream) >= impressions:
                break
            if stop_on_decision and interleaved_sequence(stream)[0] is not None:
                break
            time.sleep(1.0)
    time.sleep(0.5)
    after = gateway_metrics.scrape(target.metrics)[0][str(candidate)]
    gw = after.minus(before) if before else after
    with contextlib.suppress(DeployError):
        rollout.abort(target.ops, "benchmark: scenario over", metrics=target.metrics)
    stream = [i for i in r.tally.impressions if any(i.teams)][:impressions]
    decided, last = interleaved_sequence(stream)
    final = last if decided is None else interleaved_sequence(stream[:decided])[1]
    return {"candidate_version": candidate, "percent": percent,
            "interleaved_impressions": len(stream), "decided_after_impressions": decided,
            "decision": final.decision if final else "not yet",
            "confidence": final.confidence if final else None,
            "wins": final.wins if final else 0, "losses": final.losses if final else 0,
            "ties": final.ties if final else 0,
            "gateway": {"interleaved": gw.interleaved, "wins": gw.wins, "losses": gw.losses,
                        "ties": gw.ties},
            "client_failed": len(r.tally.failures)}  # fmt: skip
