"""Issue 25: the impression store's bounds, the event log (SQLite segments, rotation, a full
disk, the writer's death) in process, and ``musicrec train --events`` learning logged plays."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from gateway import event_log as gateway_log
from gateway.errors import InvalidArgument
from gateway.event_log import EventLog, segments
from gateway.feedback import (
    Event,
    ExpiredRecommendation,
    FeedbackService,
    ImpressionStore,
    UnknownRecommendation,
    new_recommendation_id,
)
from gateway.metrics import GatewayMetrics
from training.data import events as training_events


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def rows(directory: Path, table: str) -> list[tuple]:
    out: list[tuple] = []
    for path in segments(directory):
        with sqlite3.connect(path) as conn:
            out += conn.execute(f"SELECT * FROM {table}").fetchall()
    return out


def test_recommendation_ids_are_random_hex():
    ids = {new_recommendation_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_store_holds_at_most_max_entries_dropping_the_oldest():
    store = ImpressionStore(max_entries=100, ttl_s=60)
    for i in range(10_000):
        store.put(f"r{i}", 1, ["a", "b"])
        assert len(store) <= 100
    assert store.get("r9999").artists == ("a", "b") and store.evicted == 9_900
    with pytest.raises(UnknownRecommendation, match="unknown to this gateway"):
        store.get("r0")


def test_store_expires_entries_after_the_ttl():
    clock = Clock()
    store = ImpressionStore(max_entries=100, ttl_s=10, clock=clock)
    store.put("old", 1, ["a"])
    clock.now = 5
    store.put("new", 1, ["a"])
    clock.now = 10.5
    with pytest.raises(ExpiredRecommendation, match="expired"):
        store.get("old")
    store.put("newer", 1, ["a"])  # a put drops expired entries from the front
    clock.now = 16
    store.put("last", 1, ["a"])
    assert len(store) == 2  # "new" expired and was dropped
    with pytest.raises(UnknownRecommendation):
        store.get("old")


def test_store_keeps_teams_and_placing_versions():
    store = ImpressionStore(10, 60)
    entry = store.put("r", 2, ["a", "b", "c"], teams=["A", "B", "A"], versions=[2, 3, 2])
    assert (entry.teams, entry.versions) == (("A", "B", "A"), (2, 3, 2))
    assert store.put("s", 1, ["a"]).teams == ("",)
    with pytest.raises(ValueError, match="one item per artist"):
        store.put("t", 1, ["a", "b"], teams=["A"])


def test_feedback_credits_the_placing_version_and_counts_the_first_play_once():
    metrics = GatewayMetrics()
    service = FeedbackService(ImpressionStore(10, 60), metrics)
    service.served("r", 2, [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")], "ranked")
    service.store.get("r").versions = (2, 3, 2)  # as an interleaved list would be
    credits = service.feedback("r", [Event("skipped", "a"), Event("played", name="BETA")])
    assert [(c.artist_id, c.version, c.rank) for c in credits] == [("a", 2, 1), ("b", 3, 2)]
    service.feedback("r", [Event("played", "c")])  # a second play: no second hit
    assert sample(metrics, "musicrec_gateway_impressions_total", version="2") == 1
    assert sample(metrics, "musicrec_gateway_impression_hits_total", version="2") == 1
    assert sample(metrics, "musicrec_gateway_first_play_reciprocal_rank_sum", version="2") == 0.5
    events = "musicrec_gateway_feedback_events_total"
    assert sample(metrics, events, version="3", action="played") == 1
    assert sample(metrics, events, version="2", action="skipped") == 1
    with pytest.raises(InvalidArgument, match=r"events\[1\]: artist id 'zzz' is not in the list"):
        service.feedback("r", [Event("played", "a"), Event("played", "zzz")])
    assert sample(metrics, events, version="2", action="played") == 1  # nothing recorded
    with pytest.raises(UnknownRecommendation):
        service.feedback("nope", [Event("played", "a")])
    reasons = "musicrec_gateway_feedback_unattributed_total"
    assert sample(metrics, reasons, reason="not_served") == 1
    assert sample(metrics, reasons, reason="unknown_id") == 1


def _logged(tmp_path: Path, **options) -> tuple[EventLog, FeedbackService, GatewayMetrics]:
    metrics = GatewayMetrics()
    log = EventLog(tmp_path / "events", metrics, **{"flush_s": 0.05, **options})
    log.start()
    return log, FeedbackService(ImpressionStore(100_000, 60), metrics, log), metrics


def _serve(service: FeedbackService, n: int, listener: str = "user:u1") -> None:
    for i in range(n):
        service.served(f"r{i}", 1, [("a1", "A1"), ("a2", "A2")], "ranked", listener=listener)
        service.feedback(f"r{i}", [Event("played", "a2", play_count=3.0)])


def test_event_log_writes_impressions_and_feedback_to_sqlite(tmp_path):
    log, service, metrics = _logged(tmp_path)
    _serve(service, 3)
    log.close()
    impressions, feedback = rows(tmp_path / "events", "impressions"), rows(tmp_path / "events",
                                                                           "feedback")  # fmt: skip
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in impressions] == [
        (f"r{i}", "user:u1", 1, "ranked", '["a1", "a2"]') for i in range(3)]  # fmt: skip
    assert [(r[0], r[3], r[4], r[5], r[6], r[7], r[8]) for r in feedback] == [
        (f"r{i}", "a2", "played", 3.0, 1, 2, "") for i in range(3)]  # fmt: skip
    assert sample(metrics, "musicrec_gateway_events_written_total", table="feedback") == 3
    with sqlite3.connect(segments(tmp_path / "events")[0]) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_event_log_rotates_and_keeps_at_most_max_segments(tmp_path):
    log, service, _ = _logged(tmp_path, segment_rows=20, max_segments=3)
    for _ in range(8):  # 20 rows a burst: each segment ends after one or two commits
        _serve(service, 10)
        wait_for(lambda: log._queue.empty())
        time.sleep(0.1)
    log.close()
    files = segments(tmp_path / "events")
    assert len(files) == 3 and int(files[-1].name[7:15]) >= 4  # rotated, the oldest deleted
    total = len(rows(tmp_path / "events", "impressions")) + len(rows(tmp_path / "events",
                                                                     "feedback"))  # fmt: skip
    assert total <= 3 * (20 + 20)  # bounded: max_segments x (segment_rows + one batch)


def test_a_full_disk_degrades_to_counted_drops_and_recovers(tmp_path, caplog):
    """SQLite's max_page_count answers SQLITE_FULL ("database or disk is full") exactly as a
    full disk does; the writer counts the batch as dropped, logs why and carries on."""
    log, service, metrics = _logged(tmp_path, max_page_count=4, segment_rows=10**9)
    with caplog.at_level(logging.ERROR, logger=gateway_log.__name__):
        for _ in range(20):
            _serve(service, 50)
            time.sleep(0.06)
        wait_for(lambda: sample(metrics, "musicrec_gateway_events_dropped_total",
                                reason="write_error") > 0)  # fmt: skip
    assert "disk is full" in caplog.text and "dropped" in caplog.text
    assert "full" in log.last_error and log.alive
    log.segments.max_page_count = None  # space again: the next write opens a new segment
    _serve(service, 2)
    wait_for(lambda: sample(metrics, "musicrec_gateway_events_writer_up") == 1)
    log.close()
    assert len(segments(tmp_path / "events")) >= 2


def test_an_unwritable_directory_degrades_to_counted_drops(tmp_path):
    (tmp_path / "events").write_text("a file where the directory should be")
    log, service, metrics = _logged(tmp_path)
    _serve(service, 5)
    wait_for(lambda: sample(metrics, "musicrec_gateway_events_dropped_total",
                            reason="write_error") == 10)  # fmt: skip
    assert sample(metrics, "musicrec_gateway_events_writer_up") == 0
    log.close()


def test_a_full_queue_drops_and_counts(tmp_path):
    log, service, metrics = _logged(tmp_path, queue_max=5, flush_s=5.0)
    _serve(service, 10)  # 20 rows, 5 fit
    assert sample(metrics, "musicrec_gateway_events_dropped_total", reason="queue_full") == 15
    log.close()
    assert len(rows(tmp_path / "events", "impressions")) + len(rows(tmp_path / "events",
                                                                    "feedback")) == 5  # fmt: skip


def test_the_writers_death_is_logged_counted_and_it_restarts(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(gateway_log, "RESTART_PAUSE_S", 0.1)
    log, service, metrics = _logged(tmp_path)
    real, calls = log.segments.write, []

    def dies_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("a bug in the writer")
        return real(batch)

    monkeypatch.setattr(log.segments, "write", dies_once)
    with caplog.at_level(logging.ERROR, logger=gateway_log.__name__):
        _serve(service, 1)
        wait_for(lambda: sample(metrics, "musicrec_gateway_task_restarts_total",
                                task="event_log") == 1)  # fmt: skip
    assert "event log writer died (RuntimeError('a bug in the writer'))" in caplog.text
    assert sample(metrics, "musicrec_gateway_events_dropped_total", reason="writer_died") == 2
    _serve(service, 1)
    wait_for(lambda: len(rows(tmp_path / "events", "feedback")) == 1)
    assert log.alive and sample(metrics, "musicrec_gateway_events_writer_up") == 1
    log.close()


def test_training_reads_the_gateways_file_names():
    assert training_events.SEGMENT_GLOB == gateway_log.SEGMENT_GLOB
    assert training_events._SEGMENT.pattern == gateway_log._SEGMENT.pattern


def test_merge_events_adds_played_plays_new_users_and_skips_unknown_artists(tmp_path):
    import pandas as pd

    from training.data.interactions import from_frame

    base = from_frame(pd.DataFrame({"user_id": ["u1", "u2"], "artist_id": ["a1", "a2"],
                                    "count": [1.0, 2.0]}))  # fmt: skip
    log, service, _ = _logged(tmp_path)
    service.served("r1", 1, [("a2", "A2"), ("zz", "ZZ")], "ranked", listener="user:u1")
    service.feedback("r1", [Event("played", "a2", play_count=4.0), Event("played", "zz"),
                            Event("skipped", "a2")])  # fmt: skip
    service.served("r2", 1, [("a1", "A1")], "ranked", listener="history:abc")
    service.feedback("r2", [Event("played", "a1")])
    log.close()
    merged, report = training_events.merge_events(base, tmp_path / "events")
    assert merged.vocab.user_ids == ("u1", "u2", "history:abc")
    m = merged.matrix.toarray()
    assert m.tolist() == [[1.0, 4.0], [0.0, 2.0], [1.0, 0.0]]
    assert report == {"segments": 1, "played_events": 3, "plays_added": 2,
                      "skipped_unknown_artists": 1, "new_users": 1, "users": 2}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="event log not found"):
        training_events.merge_events(base, tmp_path / "missing")


@pytest.mark.slow
def test_musicrec_train_events_learns_the_logged_plays(tmp_path):
    """``musicrec train --events DIR`` on generated data: the run's known plays hold the plays
    the log recorded (a known user's new artists, a new listener), and its data report says so."""
    import json

    from app.main import main as musicrec
    from training.data import load_dataset
    from training.data.generator import GeneratorConfig, generate_spotify_csv
    from training.run import load_run

    generator = GeneratorConfig(rows=6_000, users=80, artists=150, seed=3)
    csv = generate_spotify_csv(tmp_path / "plays.csv", generator)
    base, _ = load_dataset(str(csv))
    log, service, _ = _logged(tmp_path)
    logged = []  # (user, artist) pairs the base data lacks
    for u in range(0, 80, 4):
        user = base.vocab.user_ids[u]
        played = set(base.matrix[u].indices)
        new = [a for a in range(base.vocab.n_artists) if a not in played][:3]
        ids = [base.vocab.artist_ids[a] for a in new]
        service.served(f"r{u}", 1, [(i, i) for i in ids], "ranked", listener=f"user:{user}")
        service.feedback(f"r{u}", [Event("played", i, play_count=5.0) for i in ids])
        logged += [(user, i) for i in ids]
    listener_artists = [base.vocab.artist_ids[a] for a in range(10)]
    service.served("rh", 1, [(i, i) for i in listener_artists], "ranked",
                   listener="history:newlistener")  # fmt: skip
    service.feedback("rh", [Event("played", i) for i in listener_artists])
    log.close()

    run_dir = tmp_path / "run"
    assert musicrec(["train", "--data", str(csv), "--run-dir", str(run_dir), "--max-epochs", "1",
                     "--events", str(tmp_path / "events")]) == 0  # fmt: skip
    run = load_run(run_dir)
    report = json.loads((run_dir / "data.json").read_text())["load_report"]["events"]
    assert report["plays_added"] == len(logged) + 10 and report["new_users"] == 1
    assert "history:newlistener" in run.vocab.user_ids
    users, artists = run.vocab.user_index(), run.vocab.artist_index()
    known = {(u, a) for u, a in logged if run.plays[users[u], artists[a]] > 0}
    assert len(known) >= 0.5 * len(logged)  # the rest went to the split's test plays
    assert run.config.data.events == str(tmp_path / "events")


def test_the_client_checks_feedback_before_sending():
    from client import FeedbackEvent, Recommendation
    from client._client import feedback_request
    from musicrec.v1 import recommender_pb2 as pb

    with pytest.raises(ValueError, match="action must be one of played"):
        FeedbackEvent("liked", "a1")
    with pytest.raises(ValueError, match="either artist_id or name"):
        FeedbackEvent("played")
    with pytest.raises(ValueError, match="play_count must be > 0"):
        FeedbackEvent("played", "a1", play_count=0)
    with pytest.raises(ValueError, match="recommendation_id is empty"):
        feedback_request("", [FeedbackEvent("played", "a1")])
    with pytest.raises(ValueError, match="1..500 events"):
        feedback_request("ab", [FeedbackEvent("played", "a1")] * 501)
    request = feedback_request("ab", [FeedbackEvent("skipped", name="Björk")])
    assert request.events[0].action == pb.FEEDBACK_ACTION_SKIPPED
    assert not request.events[0].HasField("play_count")
    answer = pb.RecommendResponse(recommendation_id="ab", model_version=3)
    assert Recommendation.from_proto(answer).recommendation_id == "ab"


def test_the_gateway_checks_each_feedback_field():
    from gateway.service import parse_feedback
    from musicrec.v1 import recommender_pb2 as pb

    def refused(request: pb.FeedbackRequest) -> str:
        with pytest.raises(InvalidArgument) as exc:
            parse_feedback(request)
        return str(exc.value)

    played = pb.FEEDBACK_ACTION_PLAYED
    assert "recommendation_id must be set" in refused(pb.FeedbackRequest())
    assert "give 1..500 events" in refused(pb.FeedbackRequest(recommendation_id="a"))
    nan = pb.FeedbackEvent(id="x", action=played, play_count=float("nan"))
    assert "events[0].play_count" in refused(pb.FeedbackRequest(recommendation_id="a",
                                                                 events=[nan]))  # fmt: skip
    blank = pb.FeedbackEvent(name=" ", action=played)
    assert "events[0].name must not be empty" in refused(
        pb.FeedbackRequest(recommendation_id="a", events=[blank]))  # fmt: skip
    two = pb.FeedbackEvent(id="x", action=played, play_count=2)
    rec_id, events = parse_feedback(pb.FeedbackRequest(recommendation_id="a", events=[two]))
    assert (rec_id, events) == ("a", [Event("played", "x", play_count=2.0)])


def test_an_interleaved_answer_keeps_its_id_teams_and_versions():
    """The servicer keeps what a result carries for the interleaving: its id (which seeded the
    draft), each position's team and version; Feedback then credits those."""
    import asyncio
    from types import SimpleNamespace

    from core.vocabulary import ScoredArtist
    from gateway.config import GatewayConfig
    from gateway.recommender import Listener, Query
    from gateway.service import RecommenderServicer

    metrics = GatewayMetrics()
    servicer = RecommenderServicer(SimpleNamespace(metrics=metrics), GatewayConfig())
    result = SimpleNamespace(
        artists=[ScoredArtist(0, "a", "A", 1.0), ScoredArtist(1, "b", "B", 0.5)], version=1,
        mode="ranked", recommendation_id="f" * 32, teams=["A", "B"], versions=[1, 2],
    )  # fmt: skip
    rec_id = asyncio.run(servicer._served(Query(Listener(user_id="u")), result, False))
    assert rec_id == "f" * 32
    credits = servicer.feedback.feedback(rec_id, [Event("played", "b")])
    assert [(c.version, c.team, c.rank) for c in credits] == [(2, "B", 2)]
    assert sample(metrics, "musicrec_gateway_feedback_events_total", version="2",
                  action="played") == 1  # fmt: skip
    plain = SimpleNamespace(artists=result.artists, version=1, mode="ranked")
    other = asyncio.run(servicer._served(Query(Listener(user_id="u")), plain, False))
    assert len(other) == 32 and servicer.feedback.store.get(other).teams == ("", "")
