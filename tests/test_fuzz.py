"""Fuzzing the gateway across the whole request space (hypothesis) and with raw bytes: every
answer is OK or a documented status with a message, never INTERNAL or UNKNOWN; the gateway
stays SERVING and its memory bounded. 1,050 requests here; ``benchmarks/reliability.py`` sends
more."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export.repository import export_run
from gateway.config import GatewayConfig
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.gateway_process import health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.run import load_run

pytestmark = pytest.mark.slow
DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip
SENT: dict[str, int] = {}


@pytest.fixture(scope="module")
def gateway(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    run = load_run(run_dir)
    cfg = StackConfig(repo, free_port(), free_port(), free_port(),
                      gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu"),
                      log_dir=root / "logs")  # fmt: skip
    with serving_stack(cfg) as running, grpc.insecure_channel(running.gateway.address) as ch:
        yield running, ch, run.vocab


def _text(vocab_words: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(vocab_words), st.text(max_size=40),
                     st.text(min_size=1000, max_size=1100), st.just(""), st.just("  "))  # fmt: skip


def _requests(vocab) -> st.SearchStrategy:
    words = list(vocab.user_ids[:20]) + list(vocab.artist_names[:20]) + list(vocab.artist_ids[:20])
    plays = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                      st.sampled_from([0.0, 1.0, 3e38, -1.0]))  # fmt: skip
    item = st.builds(lambda key, value, p: pb.ArtistPlay(**({key: value} if key else {}), plays=p),
                     st.sampled_from(["id", "name", None]), _text(words), plays)  # fmt: skip
    listener = st.one_of(
        st.builds(lambda u: {"user_id": u}, _text(words)),
        st.builds(
            lambda items: {"history": pb.History(items=items)}, st.lists(item, max_size=30)
        ),  # fmt: skip
        st.just({}),
    )
    count = st.one_of(st.integers(0, 600), st.integers(0, 2**32 - 1))
    return st.fixed_dictionaries({
        "listener": listener, "k": count, "neighbours": count,
        "scoring": st.integers(-3, 6), "strict": st.booleans(),
        "exclude": st.one_of(st.none(), st.booleans()),
    })  # fmt: skip


def _check(call) -> None:
    try:
        call()
        code, details = grpc.StatusCode.OK, "ok"
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
    assert code in DOCUMENTED, (code, details)
    assert details, code


def test_recommend_answers_every_request_with_a_documented_status(gateway):
    running, channel, vocab = gateway
    stub = pb_grpc.RecommenderStub(channel)

    @FUZZ
    @given(_requests(vocab))
    def fuzz(r):
        request = pb.RecommendRequest(**r["listener"], k=r["k"], neighbours=r["neighbours"],
                                      scoring=r["scoring"], strict=r["strict"])  # fmt: skip
        if r["exclude"] is not None:
            request.exclude_played = r["exclude"]
        SENT["recommend"] = SENT.get("recommend", 0) + 1
        _check(lambda: stub.Recommend(request, timeout=20))

    fuzz()
    assert SENT["recommend"] >= 400  # with the other two tests: 1,050 requests
    assert health_status(running.gateway.address) == "SERVING"


def test_similar_users_answers_every_request_with_a_documented_status(gateway):
    running, channel, vocab = gateway
    stub = pb_grpc.RecommenderStub(channel)

    @settings(FUZZ, max_examples=400)
    @given(_requests(vocab))
    def fuzz(r):
        SENT["similar"] = SENT.get("similar", 0) + 1
        request = pb.SimilarUsersRequest(**r["listener"], n=r["neighbours"])
        _check(lambda: stub.SimilarUsers(request, timeout=20))

    fuzz()
    assert SENT["similar"] >= 400
    assert health_status(running.gateway.address) == "SERVING"


def test_raw_bytes_on_any_method_are_invalid_argument_never_internal(gateway):
    running, channel, _ = gateway
    methods = ["/musicrec.v1.Recommender/Recommend", "/musicrec.v1.Recommender/SimilarUsers",
               "/musicrec.v1.Recommender/ServingInfo", "/grpc.health.v1.Health/Check"]  # fmt: skip
    before = _rss_kb(running.gateway.process.pid)

    @settings(FUZZ, max_examples=250)
    @given(st.sampled_from(methods), st.binary(max_size=2048))
    def fuzz(method, data):
        SENT["raw"] = SENT.get("raw", 0) + 1
        _check(lambda: channel.unary_unary(method)(data, timeout=20))

    fuzz()
    assert SENT["raw"] >= 250
    assert health_status(running.gateway.address) == "SERVING"
    assert _rss_kb(running.gateway.process.pid) - before < 200_000  # memory stays bounded


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
