"""End to end: the real Triton, the real gateway process and the client, on an exported run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from app.main import main as musicrec
from client import AsyncRecommenderClient, RecommenderClient, RecommenderError
from client.cli import main as client_cli
from core.contract import CATALOGUE_SCORER, SERVED_MODELS
from core.similarity import SimilarityIndex
from export.repository import export_run
from gateway.config import GatewayConfig
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.deploy import LOAD_ORDER
from serving.gateway_process import GatewayProcess, health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from serving.triton_server import TritonConfig, TritonServer
from training.data.generator import GeneratorConfig, generate_spotify_csv
from training.recommend import RunRecommender
from training.run import load_run

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    triton: TritonServer
    gateway: GatewayProcess
    root: Path

    @property
    def address(self) -> str:
        return self.gateway.address


@pytest.fixture(scope="module")
def stack(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    triton = TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                       load_models=SERVED_MODELS,
                                       log_file=root / "triton.log"))  # fmt: skip
    triton.start()
    config = GatewayConfig(
        port=free_port(), metrics_port=free_port(), triton_url=triton.grpc_url, repository=repo,
        backend="cpu", triton_timeout_s=3.0, poll_interval_s=0.3, grace_s=10.0,
        triton_batch=8,  # requests joined into Triton calls (off by default): every test here
    )  # fmt: skip
    gateway = GatewayProcess(config, log_file=root / "gateway.log")
    try:
        gateway.start()
        yield Stack(triton, gateway, root)
    finally:
        gateway.stop()
        triton.stop()


@pytest.fixture(scope="module")
def offline(run_dir):
    return RunRecommender(load_run(run_dir))


_USERS: list[str] = []
_RUN: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _known_users(run_dir):
    _RUN[:] = [run_dir]
    run = load_run(run_dir)  # users the model was trained on (held-out users have no plays)
    _USERS[:] = [u for i, u in enumerate(run.vocab.user_ids) if run.plays[i].nnz]


@pytest.fixture
def stub(stack):
    with grpc.insecure_channel(stack.address) as channel:
        yield pb_grpc.RecommenderStub(channel)


def _assert_same_ranking(got: list[tuple[str, float]], expected: list[tuple[str, float]]):
    """Same artists in the same order; a swap is allowed only between near-equal scores
    (float32 sums in a different order)."""
    assert len(got) == len(expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=2e-3)
    for (g_id, g_score), (e_id, _) in zip(got, expected, strict=True):
        if g_id != e_id:
            partner = dict(expected).get(g_id)
            assert partner is not None and abs(partner - g_score) < 2e-3, (got, expected)


def _history(names: list[str]) -> pb.History:
    return pb.History(items=[pb.ArtistPlay(name=n) for n in names])


def test_health_is_serving_and_reflection_lists_the_service(stack):
    assert health_status(stack.address) == "SERVING"
    with grpc.insecure_channel(stack.address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "musicrec.v1.Recommender" in services
    assert "grpc.health.v1.Health" in services


def test_known_user_gets_the_offline_ranking_without_played_artists(stack, offline):
    run = offline.run
    user = run.vocab.user_ids[3]
    with RecommenderClient(stack.address) as client:
        rec = client.recommend(user, k=10, scoring="all_artists")
    expected = offline.for_user(user, 10)
    _assert_same_ranking([(a.id, a.score) for a in rec.artists],
                         [(r.id, r.score) for r in expected])  # fmt: skip
    played = {run.vocab.artist_ids[i] for i in run.plays[3].indices}
    assert played and not played & {a.id for a in rec.artists}
    assert rec.model_version == 1 and not rec.popularity_fallback
    assert [(u.user_id, u.similarity) for u in rec.similar_users] == [(user, 1.0)]


def test_new_listener_gets_the_offline_ranking_through_similar_users(stack, offline):
    vocab = offline.vocab
    names = [vocab.artist_names[i] for i in (5, 17, 40, 41)]
    with RecommenderClient(stack.address) as client:
        rec = client.recommend(artists=[*names, "Nobody Plays This Band"], k=15,
                               scoring="all_artists")  # fmt: skip
    expected = offline.for_history(names, 15)
    _assert_same_ranking([(a.name, a.score) for a in rec.artists],
                         [(r.name, r.score) for r in expected])  # fmt: skip
    assert rec.unknown_artists == ["Nobody Plays This Band"]
    assert not set(names) & set(rec.names())
    assert 1 <= len(rec.similar_users) <= 10
    sims = [u.similarity for u in rec.similar_users]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0


def test_both_scoring_modes_rank_the_same(stack, offline):
    vocab = offline.vocab
    with RecommenderClient(stack.address) as client:
        for who in ({"user_id": vocab.user_ids[7]},
                    {"artist_ids": [vocab.artist_ids[i] for i in (2, 3, 90)]}):  # fmt: skip
            a = client.recommend(**who, k=20, scoring="all_artists")
            p = client.recommend(**who, k=20, scoring="pairwise")
            assert (a.scoring, p.scoring) == ("all_artists", "pairwise")
            _assert_same_ranking([(x.id, x.score) for x in p.artists],
                                 [(x.id, x.score) for x in a.artists])  # fmt: skip


def test_two_stage_answers_equal_the_offline_two_stage_recommender(stack, offline):
    run, vocab = offline.run, offline.vocab
    assert run.two_stage is not None  # the run tuned its blend on validation
    manifest = json.loads((stack.root / "model_repository" / CATALOGUE_SCORER / "1" /
                           "manifest.json").read_text())  # fmt: skip
    assert manifest["two_stage"] == run.two_stage.to_dict()  # the blend travels with the version
    with RecommenderClient(stack.address) as client:
        for u in (3, 7, 20):
            user = vocab.user_ids[u]
            rec = client.recommend(user, k=10, scoring="two_stage")
            assert rec.scoring == "two_stage"
            expected = offline.for_user(user, 10, mode="two_stage")
            _assert_same_ranking([(a.id, a.score) for a in rec.artists],
                                 [(r.id, r.score) for r in expected])  # fmt: skip
            played = {vocab.artist_ids[i] for i in run.plays[u].indices}
            assert not played & {a.id for a in rec.artists}
        names = [vocab.artist_names[i] for i in (5, 17, 40, 41)]
        rec = client.recommend(artists=names, k=15, scoring="two_stage")
    expected = offline.for_history(names, 15, mode="two_stage")
    _assert_same_ranking([(a.name, a.score) for a in rec.artists],
                         [(r.name, r.score) for r in expected])  # fmt: skip
    assert len(rec.artists) == 15 and not set(names) & set(rec.names())


def test_ranked_default_answers_equal_the_offline_ranked_recommender(stack, offline):
    """The served default: stage 1 and the features in the gateway, the network and the learned
    ranker's trees in one candidate_ranker request; the offline reference is the run's
    RankedRecommender over the same tables and ALS factors."""
    run, vocab = offline.run, offline.vocab
    assert run.ranker is not None and run.als is not None  # trained on validation labels
    manifest = json.loads((stack.root / "model_repository" / CATALOGUE_SCORER / "1" /
                           "manifest.json").read_text())  # fmt: skip
    assert manifest["ranker"]["trees"] == run.ranker.booster.num_trees()
    with RecommenderClient(stack.address) as client:
        for u in (3, 7, 20):
            user = vocab.user_ids[u]
            rec = client.recommend(user, k=10)  # the default mode
            assert rec.scoring == "ranked"
            expected = offline.for_user(user, 10, mode="ranked")
            _assert_same_ranking([(a.id, a.score) for a in rec.artists],
                                 [(r.id, r.score) for r in expected])  # fmt: skip
            played = {vocab.artist_ids[i] for i in run.plays[u].indices}
            assert not played & {a.id for a in rec.artists}
        names = [vocab.artist_names[i] for i in (5, 17, 40, 41)]
        rec = client.recommend(artists=names, k=15, scoring="ranked")
    expected = offline.for_history(names, 15, mode="ranked")
    _assert_same_ranking([(a.name, a.score) for a in rec.artists],
                         [(r.name, r.score) for r in expected])  # fmt: skip
    assert len(rec.artists) == 15 and not set(names) & set(rec.names())


def test_similar_users_match_the_offline_index(stack, offline):
    run = offline.run
    index = SimilarityIndex(run.plays)
    idx, sims = index.query(run.plays[[11]], 5, exclude=np.array([11]))
    with RecommenderClient(stack.address) as client:
        got = client.similar_users(run.vocab.user_ids[11], n=5)
    assert [u.user_id for u in got.users] == [run.vocab.user_ids[i] for i in idx[0] if i >= 0]
    np.testing.assert_allclose([u.similarity for u in got.users], sims[0][: len(got.users)],
                               rtol=1e-5)  # fmt: skip


def test_history_without_known_artists_falls_back_to_popularity_unless_strict(stack, offline):
    plays = offline.run.plays
    listeners = np.diff(plays.tocsc().indptr)
    with RecommenderClient(stack.address) as client:
        rec = client.recommend(artists=["Nobody", "Neither"], k=5)
        assert rec.popularity_fallback and rec.scoring == "popularity"
        assert rec.unknown_artists == ["Nobody", "Neither"]
        assert [a.score for a in rec.artists] == sorted(listeners, reverse=True)[:5]
        assert client.recommend(artists=[], k=5).popularity_fallback
        with pytest.raises(RecommenderError) as err:
            client.recommend(artists=["Nobody"], strict=True)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "history" in err.value.details


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "user_id or history"),
        ({"user_id": "  "}, "user_id"),
        ({"user_id": "x" * 2000}, "user_id"),
        ({"user_id": "u", "k": 501}, "k"),
        ({"user_id": "u", "neighbours": 101}, "neighbours"),
        ({"user_id": "u", "scoring": 9}, "scoring"),
        ({"history": pb.History(items=[pb.ArtistPlay()])}, "history.items[0]"),
        ({"history": pb.History(items=[pb.ArtistPlay(name="a"), pb.ArtistPlay(id="")])},
         "history.items[1].id"),
        ({"history": pb.History(items=[pb.ArtistPlay(name="a", plays=float("nan"))])},
         "history.items[0].plays"),
        ({"history": pb.History(items=[pb.ArtistPlay(name="a", plays=-2)])},
         "history.items[0].plays"),
        ({"history": _history(["a"] * 10_001)}, "history has 10001 items"),
        ({"history": _history(["Ra\x00dio"])}, "history.items[0].name contains control"),
        ({"user_id": "u\nv"}, "user_id contains control characters"),
    ],
)  # fmt: skip
def test_bad_input_is_invalid_argument_naming_the_field(stub, request_fields, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.Recommend(pb.RecommendRequest(**request_fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_huge_play_counts_of_one_artist_are_summed_not_overflowed(stack, offline):
    """Two items of one artist at 3e38 plays overflowed float32 to inf: the row emptied and a
    strict caller was told none of the artists is known."""
    played = offline.run.plays[offline.vocab.user_index()[_USERS[0]]].indices[:2]
    names = [offline.vocab.artist_names[i] for i in played]
    items = [pb.ArtistPlay(name=names[0], plays=3e38), pb.ArtistPlay(name=names[0], plays=3e38),
             pb.ArtistPlay(name=names[1], plays=5)]  # fmt: skip
    with grpc.insecure_channel(stack.address) as channel:
        reply = pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(history=pb.History(items=items), k=5, strict=True), timeout=10
        )
    assert reply.fallback == pb.FALLBACK_NONE and len(reply.artists) == 5
    assert reply.similar_users and all(np.isfinite(a.score) for a in reply.artists)


def test_unknown_artists_are_listed_once_and_at_most_a_hundred(stack):
    names = [f"nobody {i}" for i in range(150)]
    with RecommenderClient(stack.address) as client:
        rec = client.recommend(artists=names + names[:10] + ["NOBODY 0"], k=3)
    assert rec.unknown_artists == names[:100] and rec.unknown_artist_count == 151


def test_names_match_in_any_unicode_normal_form():
    import unicodedata

    from core.vocabulary import ArtistLookup, Vocabulary

    composed = unicodedata.normalize("NFC", "Björk")
    lookup = ArtistLookup.of(Vocabulary(("u",), ("a1", "a2"), ("Sigur Rós", composed)))
    assert lookup.by_artist_name(unicodedata.normalize("NFD", "björk ")) == 1
    assert lookup.by_artist_name(unicodedata.normalize("NFD", "SIGUR RÓS")) == 0


def test_similar_users_bad_input_and_unknown_user(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.SimilarUsers(pb.SimilarUsersRequest(user_id="u", n=101), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "n must" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.SimilarUsers(pb.SimilarUsersRequest(user_id="nobody-at-all"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_request_ids_travel_from_the_client_through_every_log_line(stack):
    with RecommenderClient(stack.address) as client:
        client.recommend(_USERS[0], k=3, request_id="trace-abc.123")
        with pytest.raises(RecommenderError):
            client.recommend("no-such-user", request_id="trace-missing-1")
    with grpc.insecure_channel(stack.address) as channel:
        _, call = pb_grpc.RecommenderStub(channel).Recommend.with_call(
            pb.RecommendRequest(user_id=_USERS[0], k=1)
        )
    made = dict(call.trailing_metadata())["x-request-id"]  # none sent: the gateway made one
    assert len(made) == 32

    def lines(rid: str) -> list[dict]:
        text = (stack.root / "gateway.log").read_text()
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [e for e in entries if e.get("request_id") == rid]

    assert _eventually(lambda: lines("trace-abc.123") and lines(made))
    assert [e["code"] for e in lines("trace-abc.123") if e["msg"] == "rpc"] == ["OK"]
    assert [e["code"] for e in lines("trace-missing-1") if e["msg"] == "rpc"] == ["NOT_FOUND"]


def _eventually(check, timeout_s: float = 5.0):
    """Poll ``check`` until it is truthy (log lines reach the file asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_unknown_user_is_not_found(stack):
    with RecommenderClient(stack.address) as client, pytest.raises(RecommenderError) as err:
        client.recommend("no-such-user")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "no-such-user" in err.value.details


def test_a_message_over_the_size_limit_is_refused(stub):
    huge = _history(["x" * 1000] * 5000)  # ~5 MB > the 4 MiB limit
    with pytest.raises(grpc.RpcError) as err:
        stub.Recommend(pb.RecommendRequest(history=huge), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_prometheus_endpoint_counts_requests_by_code_and_shows_the_version(stack):
    url = f"http://127.0.0.1:{stack.gateway.config.metrics_port}/metrics"

    def counts() -> dict[str, float]:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        found = re.findall(r'^musicrec_gateway_requests_total\{code="(\w+)",method="Recommend"\} '
                           r"([0-9.e+]+)$", text, re.MULTILINE)  # fmt: skip
        return {code: float(value) for code, value in found}

    before = counts()
    with RecommenderClient(stack.address) as client:
        client.recommend(_USERS[0])
        client.recommend(_USERS[1])
        for bad in ({"user_id": "nobody-at-all"}, {"user_id": _USERS[0], "k": 0}):
            with pytest.raises((RecommenderError, ValueError)):
                client.recommend(**bad)
    # k=501 passes the client's own checks; the gateway's limit refuses it
    with grpc.insecure_channel(stack.address) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(user_id=_USERS[0], k=501), timeout=5)  # fmt: skip
    after = counts()
    delta = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    assert delta == {"OK": 2, "NOT_FOUND": 1, "INVALID_ARGUMENT": 1}, delta
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert f"musicrec_gateway_model_version {float(_served_version(stack))}" in text
    assert 'musicrec_gateway_triton_seconds_count{mode="ranked"}' in text  # the default
    assert "musicrec_gateway_similarity_seconds_count" in text
    for stage in ("similarity", "candidates", "triton", "response"):
        assert f'musicrec_gateway_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'musicrec_gateway_request_seconds_bucket{le="0.005",method="Recommend"}' in text


def _served_version(stack) -> int:
    with RecommenderClient(stack.address) as client:
        return client.serving_info().model_version


def test_client_cli_prints_tables_and_exits_non_zero_on_errors(stack, capsys):
    base = ["--address", stack.address]
    assert client_cli([*base, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert client_cli([*base, "recommend", "--user", _USERS[0], "-k", "3"]) == 0
    assert "Top 3 for user" in capsys.readouterr().out
    assert client_cli([*base, "recommend", "--user", _USERS[0], "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["artists"]) == 3
    assert client_cli([*base, "similar-users", "--user", _USERS[0], "-n", "2"]) == 0
    assert "Similar users" in capsys.readouterr().out
    assert client_cli([*base, "info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_version"] == 1 and info["triton_up"] and info["default_scoring"] == "ranked"
    assert client_cli([*base, "recommend", "--user", "nobody"]) == 1
    out = capsys.readouterr().out
    assert "NOT_FOUND" in out and "Traceback" not in out
    assert client_cli([*base, "recommend", "--user", "x", "-k", "0"]) == 2


def test_async_client_serves_concurrent_requests(stack):
    async def main():
        async with AsyncRecommenderClient(stack.address) as client:
            assert await client.health() == "SERVING"
            return await asyncio.gather(*[client.recommend(u, k=5) for u in _USERS[:16]])

    answers = asyncio.run(main())
    assert all(len(a.artists) == 5 and a.model_version == 1 for a in answers)


def _joined_calls(stack) -> tuple[float, float]:
    """(Triton calls of candidate_ranker, requests they carried) from the gateway's metrics."""
    url = f"http://127.0.0.1:{stack.gateway.config.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = dict(
        re.findall(
            r"^musicrec_gateway_triton_call_requests_(count|sum)"
            r'\{model="candidate_ranker"\} ([0-9.e+]+)$',
            text,
            re.MULTILINE,
        )
    )
    return float(found.get("count", 0)), float(found.get("sum", 0))


def test_concurrent_requests_joined_into_one_triton_call_get_their_own_answers(stack, offline):
    """Issue 22: while a candidate_ranker call is in flight, the next requests queue and go in
    one Triton call (padded as Triton's batcher pads). Each still gets the offline ranking of
    its own listener; and some calls carried more than one request."""
    users = _USERS[:48]
    histories = [[offline.vocab.artist_names[a] for a in (u, u + 7, u + 30)] for u in range(40)]
    calls0, carried0 = _joined_calls(stack)

    async def main():
        async with AsyncRecommenderClient(stack.address) as client:
            return await asyncio.gather(
                *[client.recommend(u, k=10) for u in users],
                *[client.recommend(artists=h, k=10) for h in histories],
            )

    answers = asyncio.run(main())
    calls, carried = (a - b for a, b in zip(_joined_calls(stack), (calls0, carried0), strict=True))
    assert carried == len(users) + len(histories)
    assert calls < carried, "no Triton call carried more than one request"
    for user, rec in zip(users, answers, strict=False):
        _assert_same_ranking(
            [(a.id, a.score) for a in rec.artists],
            [(r.id, r.score) for r in offline.for_user(user, 10, mode="ranked")],
        )
    for history, rec in zip(histories, answers[len(users) :], strict=True):
        expected = offline.for_history(history, 10, mode="ranked")
        _assert_same_ranking([(a.name, a.score) for a in rec.artists],
                             [(r.name, r.score) for r in expected])  # fmt: skip


def _stage_count(stack, stage: str) -> float:
    url = f"http://127.0.0.1:{stack.gateway.config.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = re.search(rf'^musicrec_gateway_stage_seconds_count\{{stage="{stage}"\}} ([0-9.e+]+)$',
                      text, re.MULTILINE)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def test_a_known_users_stage_one_is_computed_once_per_version(stack, offline):
    """Issue 22: a known user's candidates depend on nothing in the request but neighbours
    and exclusion, so the second Recommend for them skips stage 1 and answers the same."""
    user = _USERS[60]
    with RecommenderClient(stack.address) as client:
        first = client.recommend(user, k=10)
        computed = _stage_count(stack, "candidates")
        again = client.recommend(user, k=10)
        assert _stage_count(stack, "candidates") == computed
        client.recommend(user, k=10, exclude_played=False)  # another stage 1: computed
        assert _stage_count(stack, "candidates") == computed + 1
    assert [(a.id, a.score) for a in again.artists] == [(a.id, a.score) for a in first.artists]
    _assert_same_ranking(
        [(a.id, a.score) for a in again.artists],
        [(r.id, r.score) for r in offline.for_user(user, 10, mode="ranked")],
    )


def test_a_new_version_switches_vocabulary_and_version_together(run_dir, tmp_path_factory):
    """Version 2 (another catalogue) is loaded while a client keeps asking: every answer
    is whole (names from its own version's vocabulary), none fails, and the gateway ends on 2.
    On a stack of its own, so the shared one keeps serving version 1 to the other tests."""
    root = tmp_path_factory.mktemp("second")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    own = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu",
                                            poll_interval_s=0.3),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(own) as running:
        _switch_under_traffic(running, root, repo)


def _switch_under_traffic(stack, root: Path, repo: Path) -> None:
    csv = generate_spotify_csv(
        root / "plays.csv", GeneratorConfig(rows=6_000, users=80, artists=150, seed=9)
    )
    assert musicrec(["train", "--data", str(csv), "--run-dir", str(root / "run"),
                     "--max-epochs", "1"]) == 0  # fmt: skip
    vocabs = {1: set(load_run(_RUN[0]).vocab.artist_names),
              2: set(load_run(root / "run").vocab.artist_names)}  # fmt: skip
    shared = sorted(vocabs[1] & vocabs[2])[:3] or sorted(vocabs[2])[:3]
    assert export_run(root / "run", repo).version == 2
    answers, errors, stop = [], [], threading.Event()

    def traffic():
        with RecommenderClient(stack.gateway.address, timeout_s=10) as client:
            while not stop.is_set():
                try:
                    answers.append(client.recommend(artists=shared, k=5))
                except RecommenderError as exc:
                    errors.append(exc)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        triton = tritonclient.grpc.InferenceServerClient(stack.triton.grpc_url)
        for model in LOAD_ORDER:  # the default mode's model last, as deploy does
            triton.load_model(model, headers=stack.triton.admin_headers)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a.model_version == 2 for a in answers):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors[:3]
    assert {a.model_version for a in answers} == {1, 2}
    for a in answers:
        assert set(a.names()) <= vocabs[a.model_version]
    assert answers[-1].model_version == 2


def test_a_stalled_triton_gives_a_deadline_error_not_a_hang(stack):
    os.killpg(stack.triton.process.pid, signal.SIGSTOP)
    try:
        with RecommenderClient(stack.address, timeout_s=30) as client:
            start = time.monotonic()
            with pytest.raises(RecommenderError) as err:
                client.recommend(_USERS[0], timeout_s=1.5)  # the caller's deadline
            assert time.monotonic() - start < 3
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED  # the caller's deadline
            start = time.monotonic()
            with pytest.raises(RecommenderError) as err:  # a loose caller deadline: the
                client.recommend(_USERS[1])  # gateway's own triton_timeout_s (3 s) bounds it
            assert time.monotonic() - start < 8  # (the client retries UNAVAILABLE 3 times)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE  # Triton, not the caller, late
    finally:
        os.killpg(stack.triton.process.pid, signal.SIGCONT)
    _wait_until_answered(stack)


def _wait_until_answered(stack, timeout_s: float = 60) -> float:
    deadline = time.monotonic() + timeout_s
    with RecommenderClient(stack.address, timeout_s=5) as client:
        while time.monotonic() < deadline:
            try:
                client.recommend(_USERS[0])
                return time.monotonic()
            except RecommenderError:
                time.sleep(0.2)
    raise AssertionError("the gateway did not recover")


def test_triton_restart_gives_unavailable_then_the_gateway_recovers_alone(stack):
    stack.triton.stop()
    time.sleep(1.0)  # a few version polls
    with RecommenderClient(stack.address) as client:
        with pytest.raises(RecommenderError) as err:
            client.recommend(_USERS[0], timeout_s=5)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert health_status(stack.address) == "NOT_SERVING"
    stack.triton.start()
    _wait_until_answered(stack)
    assert health_status(stack.address) == "SERVING"


def test_health_is_not_serving_while_triton_is_unreachable(tmp_path, stack):
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=f"127.0.0.1:{free_port()}",
                           repository=stack.root / "model_repository", backend="cpu",
                           poll_interval_s=0.3)  # fmt: skip
    gw = GatewayProcess(config, log_file=tmp_path / "gw.log").start(wait_for="ANY")
    try:
        assert health_status(gw.address) == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as err, grpc.insecure_channel(gw.address) as channel:
            pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(user_id="u"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gw.stop()


def test_overload_is_shed_with_resource_exhausted_not_queued(tmp_path, stack):
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=stack.triton.grpc_url,
                           repository=stack.root / "model_repository", backend="cpu",
                           max_concurrent_rpcs=2, triton_timeout_s=3.0)  # fmt: skip
    gw = GatewayProcess(config, log_file=tmp_path / "gw.log").start()
    os.killpg(stack.triton.process.pid, signal.SIGSTOP)  # two requests hold both slots

    async def burst():
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            calls = [asyncio.ensure_future(stub.Recommend(pb.RecommendRequest(user_id=u),
                                                          timeout=10))
                     for u in _USERS[:6]]  # fmt: skip
            await asyncio.sleep(1.0)  # both slots held: health must still answer, not be shed
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2)  # fmt: skip
            return await asyncio.gather(*calls, return_exceptions=True), health.status

    try:
        start = time.monotonic()
        answers, health_during = asyncio.run(burst())
    finally:
        os.killpg(stack.triton.process.pid, signal.SIGCONT)
        gw.stop()
    codes = [a.code() for a in answers if isinstance(a, grpc.RpcError)]
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4, codes
    assert health_during == health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - start < 12
    _wait_until_answered(stack)


def test_sigterm_reports_not_serving_and_keeps_answering_for_the_drain_window(tmp_path, stack):
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=stack.triton.grpc_url,
                           repository=stack.root / "model_repository", backend="cpu",
                           drain_s=3.0)  # fmt: skip
    gw = GatewayProcess(config, log_file=tmp_path / "gw.log").start()
    try:
        gw.process.send_signal(signal.SIGTERM)
        assert _eventually(lambda: health_status(gw.address) == "NOT_SERVING", 2.0)
        with RecommenderClient(gw.address, timeout_s=5) as client:  # a balancer's last calls
            assert len(client.recommend(_USERS[0], k=3).artists) == 3
        assert gw.process.wait(timeout=20) == 0
    finally:
        gw.stop()


def test_shutdown_drains_in_flight_requests(stack, tmp_path):
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=stack.triton.grpc_url,
                           repository=stack.root / "model_repository", backend="cpu",
                           grace_s=10.0)  # fmt: skip
    gateway = GatewayProcess(config, log_file=tmp_path / "gw.log").start()  # its own: it stops
    os.killpg(stack.triton.process.pid, signal.SIGSTOP)  # hold requests in flight

    async def in_flight():
        async with AsyncRecommenderClient(gateway.address, timeout_s=20) as client:
            calls = [asyncio.ensure_future(client.recommend(u, k=3)) for u in _USERS[:4]]
            await asyncio.sleep(0.5)
            gateway.process.send_signal(signal.SIGTERM)  # graceful stop begins
            await asyncio.sleep(0.5)
            os.killpg(stack.triton.process.pid, signal.SIGCONT)
            return await asyncio.gather(*calls, return_exceptions=True)

    try:
        answers = asyncio.run(in_flight())
    finally:
        os.killpg(stack.triton.process.pid, signal.SIGCONT)
    assert all(not isinstance(a, BaseException) and len(a.artists) == 3 for a in answers), answers
    assert gateway.process.wait(timeout=20) == 0
    gateway.stop()
