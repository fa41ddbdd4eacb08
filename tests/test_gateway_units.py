"""Gateway and client pieces that need no server: configuration, validation, logs."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from client._client import recommend_request, similar_users_request
from gateway.config import GatewayConfig, add_arguments, from_arguments
from gateway.errors import InvalidArgument
from gateway.logs import JsonFormatter
from gateway.service import parse_recommend
from musicrec.v1 import recommender_pb2 as pb
from serving.gateway_process import command


def _config_from(argv: list[str]) -> GatewayConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(argv))


def test_flags_and_environment_configure_the_gateway(monkeypatch):
    monkeypatch.setenv("MUSICREC_GATEWAY_TRITON_URL", "triton:8001")
    monkeypatch.setenv("MUSICREC_GATEWAY_LOG_JSON", "false")
    cfg = _config_from(["--port", "6000", "--scoring", "pairwise"])
    assert (cfg.port, cfg.scoring, cfg.triton_url, cfg.log_json) == (
        6000, "pairwise", "triton:8001", False)  # fmt: skip
    with pytest.raises(ValueError, match="neighbours"):
        GatewayConfig(neighbours=0)


def test_process_command_round_trips_through_the_flags():
    cfg = GatewayConfig(port=7000, metrics_port=0, log_json=False, neighbours=5)
    assert _config_from(command(cfg)[3:]) == cfg


def test_request_defaults_and_field_errors():
    cfg = GatewayConfig()
    q = parse_recommend(pb.RecommendRequest(user_id="7"), cfg)
    assert (q.k, q.exclude_played, q.mode, q.neighbours, q.strict) == (
        10, True, "ranked", 10, False)  # fmt: skip
    q = parse_recommend(
        pb.RecommendRequest(
            history=pb.History(items=[pb.ArtistPlay(name="A"), pb.ArtistPlay(id="9", plays=3)]),
            exclude_played=False, scoring=pb.SCORING_MODE_PAIRWISE, k=500,
        ), cfg,
    )  # fmt: skip
    assert [(r.name, r.id, r.plays) for r in q.listener.history] == [
        ("A", None, 1.0), (None, "9", 3.0)]  # fmt: skip
    assert (q.exclude_played, q.mode, q.k) == (False, "pairwise", 500)
    with pytest.raises(InvalidArgument, match=r"history.items\[1\]: set id or name"):
        parse_recommend(pb.RecommendRequest(history=pb.History(
            items=[pb.ArtistPlay(name="A"), pb.ArtistPlay(plays=2)])), cfg)  # fmt: skip


def test_client_checks_requests_before_sending():
    r = recommend_request(artists={"Radiohead": 12.0}, artist_ids=["89"], k=3)
    assert [(i.name, i.id, i.plays) for i in r.history.items] == [("Radiohead", "", 12.0),
                                                                  ("", "89", 0.0)]  # fmt: skip
    with pytest.raises(ValueError, match="either user_id or artists"):
        recommend_request()
    with pytest.raises(ValueError, match="either user_id or artists"):
        recommend_request("u", ["a"])
    with pytest.raises(ValueError, match="k must be"):
        recommend_request("u", k=0)
    with pytest.raises(ValueError, match="scoring"):
        recommend_request("u", scoring="fast")
    with pytest.raises(ValueError, match="n must be"):
        similar_users_request("u", n=0)


def test_json_log_lines_carry_extra_fields():
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "rpc", None, None)
    record.method, record.code = "Recommend", "OK"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "rpc" and entry["method"] == "Recommend" and entry["code"] == "OK"
    assert entry["level"] == "info" and entry["ts"].endswith("Z")


def test_a_supervised_task_that_dies_or_returns_is_logged_and_started_again(caplog):
    import asyncio

    from gateway.server import supervised

    runs, restarts = [], []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("poll blew up")
        if len(runs) == 3:
            await asyncio.sleep(3600)  # alive: the supervisor must not restart it again

    async def main() -> None:
        task = asyncio.create_task(
            supervised("poller", flaky, on_restart=lambda: restarts.append(1), pause_s=0.01)
        )
        while len(runs) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert len(runs) == 3 and len(restarts) == 2
    assert "poller died; restarting it" in caplog.text and "poller exited" in caplog.text


@pytest.mark.parametrize(
    "bad", [{"max_k": 0}, {"port": 70_000}, {"max_message_bytes": 10}, {"grace_s": -1},
            {"max_history": 0}],
)  # fmt: skip
def test_gateway_limits_are_validated_at_start(bad):
    with pytest.raises(ValueError):
        GatewayConfig(**bad)


def test_triton_failures_become_the_status_the_caller_should_see():
    import grpc
    from tritonclient.utils import InferenceServerException

    from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, VersionRetired
    from gateway.inference import translate

    def as_gateway(message: str, status: str | None = None) -> GatewayError:
        return translate(InferenceServerException(message, status=status), "triton:8001")

    assert type(as_gateway("late", "StatusCode.DEADLINE_EXCEEDED")) is DeadlineExceeded
    down = as_gateway("connection refused", "StatusCode.UNAVAILABLE")
    assert type(down) is Unavailable and "triton:8001" in str(down)
    retired = as_gateway("Request for unknown model: 'catalogue_scorer' version 3 is not at "
                         "ready state", "StatusCode.UNAVAILABLE")  # fmt: skip
    assert type(retired) is Unavailable  # the transport status wins: Triton is going away
    retired = as_gateway("Request for unknown model: 'catalogue_scorer' version 3 is not at "
                         "ready state", "StatusCode.NOT_FOUND")  # fmt: skip
    assert type(retired) is VersionRetired and retired.code == grpc.StatusCode.UNAVAILABLE
    other = as_gateway("onnxruntime failed", "StatusCode.INTERNAL")
    assert type(other) is GatewayError and other.code == grpc.StatusCode.INTERNAL
