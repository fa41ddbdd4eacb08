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
from loadtests.fuzz import (
    DOCUMENTED,
    METHODS,
    answer,
    recommend_request,
    request_fields,
    similar_users_request,
)
from musicrec.v1 import recommender_pb2_grpc as pb_grpc
from serving.gateway_process import health_status
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.run import load_run

pytestmark = pytest.mark.slow
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


def _check(call) -> None:
    code, details = answer(call)
    assert code in DOCUMENTED, (code, details)
    assert details, code


def test_recommend_answers_every_request_with_a_documented_status(gateway):
    running, channel, vocab = gateway
    stub = pb_grpc.RecommenderStub(channel)

    @FUZZ
    @given(request_fields(_words(vocab)))
    def fuzz(r):
        SENT["recommend"] = SENT.get("recommend", 0) + 1
        _check(lambda: stub.Recommend(recommend_request(r), timeout=20))

    fuzz()
    assert SENT["recommend"] >= 400  # with the other two tests: 1,050 requests
    assert health_status(running.gateway.address) == "SERVING"


def test_similar_users_answers_every_request_with_a_documented_status(gateway):
    running, channel, vocab = gateway
    stub = pb_grpc.RecommenderStub(channel)

    @settings(FUZZ, max_examples=400)
    @given(request_fields(_words(vocab)))
    def fuzz(r):
        SENT["similar"] = SENT.get("similar", 0) + 1
        _check(lambda: stub.SimilarUsers(similar_users_request(r), timeout=20))

    fuzz()
    assert SENT["similar"] >= 400
    assert health_status(running.gateway.address) == "SERVING"


def test_raw_bytes_on_any_method_are_invalid_argument_never_internal(gateway):
    running, channel, _ = gateway
    before = _rss_kb(running.gateway.process.pid)

    @settings(FUZZ, max_examples=250)
    @given(st.sampled_from(METHODS), st.binary(max_size=2048))
    def fuzz(method, data):
        SENT["raw"] = SENT.get("raw", 0) + 1
        _check(lambda: channel.unary_unary(method)(data, timeout=20))

    fuzz()
    assert SENT["raw"] >= 250
    assert health_status(running.gateway.address) == "SERVING"
    assert _rss_kb(running.gateway.process.pid) - before < 200_000  # memory stays bounded


def _words(vocab) -> list[str]:
    return [*vocab.user_ids[:20], *vocab.artist_names[:20], *vocab.artist_ids[:20]]


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
