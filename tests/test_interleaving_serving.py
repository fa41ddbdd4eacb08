"""Interleaving on the request path (issue 25 item 3): ``deploy --interleave P`` with the real
Triton and gateway: merged lists with teams for a sticky share of listeners, Feedback credited
to teams with one outcome per impression, a failing or unloaded candidate that costs no client
an error, and the watcher's sequential test deciding better (promoted) and worse (aborted) on
a synthetic replay. Units without processes first: arguments, the split, the merge, the
outcome rule, the parsed counters."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import FeedbackEvent, RecommenderClient
from core import traffic_split
from core.contract import SERVED_MODELS
from core.files import file_digests
from core.vocabulary import ScoredArtist
from export.repository import export_run
from export.triton_config import serving_policy
from gateway.feedback import Event, FeedbackService, ImpressionStore
from gateway.metrics import GatewayMetrics
from gateway.recommender import RecommendResult
from gateway.rollout import RolloutService
from loadtests.async_load import AsyncLoad
from serving import canary_watch, rollout
from serving.canary_watch import WatchRules
from serving.deploy import DeployError, pin_and_load, triton_fleet
from serving.gateway_metrics import by_version
from training.run import load_run

# ---------------------------------------------------------------- without processes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interleave", "0"], "--interleave 0: give a percent above 0"),
        (["--interleave", "120"], "at most 100"),
        (["--interleave", "10", "--canary", "10"], "--interleave runs alone"),
        (["--interleave", "10", "--shadow", "10"], "--interleave runs alone"),
        (["--interleave", "10", "--promote-if-better"], "--promote-if-better acts on the watch"),
        (
            [
                "--canary",
                "10",
                "--promote-if-better",
                "--watch",
                "5",
                "--gateway-metrics",
                "127.0.0.1:1",
            ],
            "--promote-if-better needs an interleaving",
        ),  # fmt: skip
        (["--interleave", "10", "--watch", "5"], "--watch needs --gateway-metrics"),
        (
            [
                "--interleave",
                "10",
                "--watch",
                "5",
                "--gateway-metrics",
                "127.0.0.1:1",
                "--quality-gate",
            ],
            "judged by its own test",
        ),  # fmt: skip
        (["--interleave", "10", "--interleave-alpha", "1.5"], "--interleave-alpha"),
        (
            ["--interleave", "10", "--watch", "5", "--prometheus", "http://127.0.0.1:1"],
            "--prometheus does not read the interleaving",
        ),  # fmt: skip
    ],
)
def test_interleave_arguments_are_refused_before_anything_changes(tmp_path, capsys, monkeypatch,
                                                                  argv, message):  # fmt: skip
    from app.main import main as musicrec
    from serving import admin_key

    monkeypatch.setenv(admin_key.ENV_VAR, "unused")
    repo = tmp_path / "model_repository"
    code = musicrec(["deploy", "--version", "2", *argv, "--repository", str(repo),
                     "--triton-url", "127.0.0.1:1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2 and message in out.replace("\n", " ") and "Traceback" not in out
    assert not repo.exists() or not any(repo.iterdir())


def test_the_interleave_split_is_sticky_alone_and_reads_old_files(tmp_path):
    with pytest.raises(ValueError, match="runs alone"):
        traffic_split.Rollout(1, canary=2, percent=10, interleave=2, interleave_percent=10)
    split = traffic_split.Rollout(1, interleave=2, interleave_percent=30)
    assert (split.new, split.kind, split.versions) == (2, "interleave", {2})
    keys = [traffic_split.listener_key(f"user{i}") for i in range(20_000)]
    chosen = [traffic_split.in_interleave(split, k) for k in keys]
    assert abs(sum(chosen) / len(keys) * 100 - 30) < 1.5
    canary = traffic_split.Rollout(1, canary=2, percent=30)  # the canary's hash, same share
    assert chosen == [traffic_split.in_canary(canary, k) for k in keys]
    traffic_split.write(tmp_path, split)
    assert traffic_split.read(tmp_path) == split
    (tmp_path / traffic_split.ROLLOUT_FILE).write_text(json.dumps({"serving": 1, "canary": 2,
                                                                   "percent": 5}))  # fmt: skip
    assert traffic_split.read(tmp_path).interleave is None  # a file of before


def _result(ids: list[str], version: int) -> RecommendResult:
    artists = [ScoredArtist(i, a, a.upper(), 1.0 / (i + 1)) for i, a in enumerate(ids)]
    return RecommendResult(artists, version, [], False, (), "ranked")


def test_the_merge_is_a_seeded_team_draft_of_both_answers():
    service = RolloutService(SimpleNamespace(), {}, GatewayMetrics())
    served, other = _result(list("abcdefghij"), 1), _result(list("kbmdopqrst"), 2)
    merged = service._merge(served, other, 10)
    ids = [a.id for a in merged.artists]
    assert len(ids) == 10 == len(set(ids)) and merged.candidate_version == 2
    assert set(merged.teams) == {"serving", "candidate"} and merged.version == 1
    for i, (a, team, v) in enumerate(zip(ids, merged.teams, merged.versions, strict=True)):
        assert v == (1 if team == "serving" else 2)
        assert a in [x.id for x in (served if team == "serving" else other).artists]
        assert abs(merged.teams[: i + 1].count("serving") * 2 - (i + 1)) <= 1  # balanced
    from core.interleaving import team_draft

    again = team_draft(list("abcdefghij"), list("kbmdopqrst"), 10, merged.recommendation_id)
    assert again.items == tuple(ids) and again.teams == merged.teams  # the id seeds it


def _outcomes(metrics: GatewayMetrics) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for f in metrics.interleave_outcomes.collect()
            for s in f.samples if s.name.endswith("_total")}  # fmt: skip


def test_one_outcome_per_impression_at_its_first_call_with_a_play():
    metrics = GatewayMetrics()
    service = FeedbackService(ImpressionStore(100, 60), metrics)
    teams = ("candidate", "serving", "serving", "candidate")
    artists = [(a, a) for a in "abcd"]
    service.served("x", 1, artists, "ranked", teams=teams, versions=(2, 1, 1, 2), candidate=2)
    service.feedback("x", [Event("skipped", "a")])  # no play: nothing decided yet
    assert _outcomes(metrics) == {}
    credits = service.feedback("x", [Event("played", "a"), Event("played", "b"),
                                     Event("played", "d")])  # fmt: skip
    assert [c.team for c in credits] == ["candidate", "serving", "candidate"]
    assert _outcomes(metrics) == {"candidate": 1.0}  # two candidate plays against one
    service.feedback("x", [Event("played", "b"), Event("played", "c")])  # later: no change
    assert _outcomes(metrics) == {"candidate": 1.0}
    service.served("y", 1, artists, "ranked", teams=teams, versions=(2, 1, 1, 2), candidate=2)
    service.feedback("y", [Event("played", "a"), Event("played", "b")])
    service.served("z", 1, artists, "ranked")  # not interleaved: no outcome
    service.feedback("z", [Event("played", "a")])
    assert _outcomes(metrics) == {"candidate": 1.0, "tie": 1.0}


def test_the_interleave_counters_are_read_under_the_candidate_version():
    text = """\
musicrec_gateway_interleaved_total{candidate_version="2"} 40.0
musicrec_gateway_interleave_outcomes_total{candidate_version="2",outcome="candidate"} 12.0
musicrec_gateway_interleave_outcomes_total{candidate_version="2",outcome="serving"} 5.0
musicrec_gateway_interleave_outcomes_total{candidate_version="2",outcome="tie"} 3.0
musicrec_gateway_interleave_fallbacks_total{candidate_version="2",reason="UNAVAILABLE"} 2.0
"""
    f = by_version(text)["2"]
    assert (f.interleaved, f.wins, f.losses, f.ties) == (40, 12, 5, 3)
    assert f.interleave_fallbacks == {"UNAVAILABLE": 2.0}
    later = by_version(text.replace(" 12.0", " 2.0"))["2"]
    assert later.went_down(f)  # a restart is seen in the outcome counters too
    t = rollout.tally(f)
    assert (t["wins"], t["losses"], t["ties"], t["decision"]) == (12, 5, 3, "not yet")
    assert canary_watch.interleaved(f, WatchRules()).decision == "not yet"
    f.wins = 40
    assert canary_watch.interleaved(f, WatchRules()).decision == "better"


# ---------------------------------------------------------------- real Triton and gateway

slow = pytest.mark.slow
K = 10


@pytest.fixture(scope="module")
def stack(three_version_stack):
    """Triton + gateway serving version 1; versions 2 and 3 exported (``tests/conftest.py``)."""
    return three_version_stack


@pytest.fixture(scope="module")
def users(run_dir) -> list[str]:
    run = load_run(run_dir)
    return [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]


def _serving(running) -> int:
    with RecommenderClient(running.gateway.address) as client:
        return client.serving_info().model_version


def _pins(cfg) -> set[tuple[int, ...]]:
    return {tuple(serving_policy(cfg.repository / name) or ()) for name in SERVED_MODELS}


def _samples(metrics: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def _value(metrics: str, name: str, **labels: str) -> float:
    return _samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def _probe(client: RecommenderClient, user: str, timed: list[float] | None = None):
    """An answer and its attributions (every artist SKIPPED: teams known, nothing decided);
    the Recommend's own seconds appended to ``timed``."""
    start = time.perf_counter()
    answer = client.recommend(user, k=K)
    if timed is not None:
        timed.append(time.perf_counter() - start)
    skipped = [FeedbackEvent("skipped", artist_id=a.id) for a in answer.artists]
    return answer, client.feedback(answer.recommendation_id, skipped)


def _interleaving(running, users: list[str], timeout_s: float = 30) -> str:
    """Wait until the gateway interleaves some listener (it loaded the split); that listener."""
    deadline = time.monotonic() + timeout_s
    with RecommenderClient(running.gateway.address) as client:
        while time.monotonic() < deadline:
            for u in users[:40]:
                if any(a.team for a in _probe(client, u)[1]):
                    return u
            time.sleep(0.2)
    raise AssertionError("the gateway never interleaved a listener")


def _bad_version(run_dir, cfg, body: str) -> int:
    """A version that passes every offline check but fails in Triton (``body`` in its run)."""
    version = export_run(run_dir, cfg.repository).version
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
def test_interleaved_listeners_get_a_merged_list_with_teams_and_feedback_credits_them(
    stack, users, capsys
):
    running, cfg, metrics = stack
    serving = _serving(running)
    report = rollout.start(cfg, version=2, interleave_percent=50, metrics=metrics)
    assert (report.action, report.serving, report.split.interleave) == ("interleave", serving, 2)
    assert _pins(cfg) == {(serving, 2)}
    first = _interleaving(running, users)
    published = traffic_split.read(cfg.repository)
    seen: dict[str, set[bool]] = {}
    timed: dict[bool, list[float]] = {True: [], False: []}
    with RecommenderClient(running.gateway.address) as client:
        for _ in range(2):
            for u in users:
                took: list[float] = []
                answer, credits = _probe(client, u, took)
                mixed = any(c.team for c in credits)
                timed[mixed] += took
                seen.setdefault(u, set()).add(mixed)
                assert answer.model_version == serving and len(answer.artists) == K
                assert len({a.id for a in answer.artists}) == K  # no artist twice
                if mixed:
                    assert {c.team for c in credits} == {"serving", "candidate"}
                    assert {c.model_version for c in credits} == {serving, 2}
                else:
                    assert {(c.team, c.model_version) for c in credits} == {("", serving)}
        assert all(len(v) == 1 for v in seen.values())  # sticky
        expected = {
            u
            for u in users
            if traffic_split.in_interleave(published, traffic_split.listener_key(u))
        }
        assert {u for u, v in seen.items() if v == {True}} == expected  # fmt: skip
        assert 0.3 < len(expected) / len(users) < 0.7

        # Feedback credits the team; the impression's outcome moves once
        def outcome(name: str) -> float:
            return _value(metrics, "musicrec_gateway_interleave_outcomes_total",
                          candidate_version="2", outcome=name)  # fmt: skip

        before = {o: outcome(o) for o in ("candidate", "serving", "tie")}
        answer, credits = _probe(client, first)
        assert {o: outcome(o) for o in before} == before  # skips decide nothing
        mine = [c.artist_id for c in credits if c.team == "candidate"]
        played = client.feedback(answer.recommendation_id,
                                 [FeedbackEvent("played", artist_id=mine[0])])  # fmt: skip
        assert (played[0].team, played[0].model_version) == ("candidate", 2)
        theirs = [c.artist_id for c in credits if c.team == "serving"]
        client.feedback(answer.recommendation_id, [FeedbackEvent("played", artist_id=theirs[0])])
        after = {o: outcome(o) for o in before}
        assert after == {**before, "candidate": before["candidate"] + 1}  # once, at the first
    interleaved = _value(metrics, "musicrec_gateway_interleaved_total", candidate_version="2")
    assert interleaved >= 2 * len(expected)

    from app.main import main as musicrec

    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url]
    capsys.readouterr()
    assert musicrec(["status", *ops, "--gateway-metrics", metrics]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "interleave version 2: 50% of listeners" in out
    assert "interleaving: candidate won 1, lost 0, tied 0" in out and "not yet" in out
    rollout.abort(cfg)
    assert traffic_split.read(cfg.repository) is None and _pins(cfg) == {(serving,)}
    p50 = {k: statistics.median(v) * 1e3 for k, v in timed.items()}
    with capsys.disabled():
        print(
            f"\nRecommend p50: interleaved {p50[True]:.2f} ms, plain "
            f"{p50[False]:.2f} ms ({len(timed[True])} / {len(timed[False])} calls)"
        )


@slow
def test_a_failing_or_unloaded_candidate_costs_no_client_an_error(stack, users, run_dir):
    running, cfg, metrics = stack
    serving = _serving(running)
    bad = _bad_version(run_dir, cfg, "raise RuntimeError('a bad candidate')")
    rules = WatchRules(window_s=10, interval_s=0.5, min_requests=20)
    with AsyncLoad(running.gateway.address, users) as load:
        assert load.wait_for(load.ok + 100)
        rollout.start(cfg, version=bad, interleave_percent=100, force=True)
        result = canary_watch.watch(cfg, metrics, rules, duration_s=60)
        assert load.wait_for(load.ok + 200)
    assert load.failures == []
    assert result.verdict == "aborted" and "error ratio" in result.reason, result
    fallbacks = _samples(metrics)
    assert sum(v for (name, labels), v in fallbacks.items()
               if name == "musicrec_gateway_interleave_fallbacks_total"
               and ("candidate_version", str(bad)) in labels) >= rules.min_requests  # fmt: skip
    assert _pins(cfg) == {(serving,)}

    good = export_run(run_dir, cfg.repository).version  # unloaded while it interleaves
    rollout.start(cfg, version=good, interleave_percent=100, force=True)
    _interleaving(running, users)
    with AsyncLoad(running.gateway.address, users) as load:
        assert load.wait_for(load.ok + 100)
        pin_and_load(cfg, triton_fleet(cfg), [serving])  # the split still names it
        assert load.wait_for(load.ok + 300)
    assert load.failures == []
    rollout.abort(cfg)
    assert traffic_split.read(cfg.repository) is None


def _replay(running, users: list[str], winner: str, done: threading.Event,
            limit: int = 600) -> int:  # fmt: skip
    """Listeners who play every artist ``winner``'s team placed (and skip the others) until
    ``done``; how many interleaved impressions were played."""
    played = 0
    with RecommenderClient(running.gateway.address) as client:
        for i in range(limit):
            if done.is_set():
                break
            answer, credits = _probe(client, users[i % len(users)])
            mine = [FeedbackEvent("played", artist_id=c.artist_id)
                    for c in credits if c.team == winner]  # fmt: skip
            if mine:
                client.feedback(answer.recommendation_id, mine)
                played += 1
    return played


def _watched(cfg, metrics: str, rules: WatchRules, done: threading.Event, out: list) -> None:
    try:
        out.append(canary_watch.watch(cfg, metrics, rules, duration_s=90))
    finally:
        done.set()


@slow
@pytest.mark.parametrize("winner", ["candidate", "serving"])
def test_the_watcher_decides_on_a_replay_promoting_better_and_aborting_worse(
    stack, users, run_dir, winner, capsys
):
    running, cfg, metrics = stack
    serving = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    rollout.start(cfg, version=version, interleave_percent=100, force=True, metrics=metrics)
    _interleaving(running, users)
    rules = WatchRules(window_s=10, interval_s=0.3, min_requests=5, promote_if_better=True)
    done, out = threading.Event(), []
    watcher = threading.Thread(target=_watched, args=(cfg, metrics, rules, done, out))
    watcher.start()
    time.sleep(1.0)  # the watch's first poll: its counts start there
    played = _replay(running, users, winner, done)
    watcher.join(120)
    result = out[0]
    with capsys.disabled():
        print(
            f"\n{winner} played: {result.verdict} ({result.reason}) after {played} played "
            f"impressions, {result.interleaving}"
        )
    assert result.interleaving["wins" if winner == "candidate" else "losses"] >= 10
    if winner == "candidate":
        assert result.verdict == "healthy" and result.promoted == version, result
        assert "candidate better" in result.reason
        assert _serving(running) == version and _pins(cfg) == {(version,)}
    else:
        assert result.verdict == "aborted" and "candidate worse" in result.reason, result
        assert _serving(running) == serving and _pins(cfg) == {(serving,)}
        with pytest.raises(DeployError, match="no canary or shadow rollout runs"):
            rollout.promote(cfg)
    assert traffic_split.read(cfg.repository) is None
    assert played <= 200


@slow
def test_cli_interleave_watch_says_not_yet_then_abort(stack, users, run_dir, capsys,
                                                      monkeypatch):  # fmt: skip
    from app.main import main as musicrec
    from serving import admin_key

    running, cfg, metrics = stack
    serving = _serving(running)
    version = export_run(run_dir, cfg.repository).version
    monkeypatch.setenv(admin_key.ENV_VAR, running.triton.admin_key)
    ops = ["--repository", str(cfg.repository), "--triton-url", cfg.triton_url]
    code = musicrec(
        [
            "deploy",
            "--version",
            str(version),
            "--interleave",
            "50",
            "--force",
            "--watch",
            "2",
            "--gateway-metrics",
            metrics,
            "--window",
            "5",
            *ops,
        ]
    )
    out = capsys.readouterr().out.replace("\n", " ")
    assert code == 2, out
    assert f"interleave: version {version} loaded beside version {serving}" in out
    assert "inconclusive" in out and "interleaving: candidate" in out
    assert musicrec(["deploy", "promote", *ops]) == 2  # no better verdict
    assert "promote refused: the interleaving" in capsys.readouterr().out.replace("\n", " ")
    assert musicrec(["deploy", "abort", *ops]) == 0
    assert f"abort: version {version} unloaded" in capsys.readouterr().out
    assert _serving(running) == serving and traffic_split.read(cfg.repository) is None
    np.testing.assert_equal(_pins(cfg), {(serving,)})
