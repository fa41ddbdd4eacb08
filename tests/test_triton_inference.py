"""The gateway's raw gRPC path to Triton (gateway/inference.py), against a real Triton: the same
answers as tritonclient for the same requests, and failures as the gateway errors callers see."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from core.contract import (
    ARTIST_INPUT,
    CANDIDATE_SCORER,
    CATALOGUE_SCORER,
    PAIR_SCORER,
    SCORE_OUTPUT,
    SERVED_MODELS,
    USER_INPUT,
)
from export.repository import export_run
from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, VersionRetired
from gateway.inference import Inference, InferResult, open_channel, tensor, translate
from gateway.logs import bind_request_id
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton_inference")
    repo = root / "model_repository"
    export_run(run_dir, repo)
    server = TritonServer(TritonConfig(repo, free_port(), free_port(), free_port(),
                                       load_models=SERVED_MODELS,
                                       log_file=root / "triton.log"))  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _raw(url: str, call, *args):
    """Run ``call(inference, *args)`` on a fresh raw-path client inside one event loop."""

    async def main():
        inference = Inference(open_channel(url), url)
        try:
            return await call(inference, *args)
        finally:
            await inference.close()

    return asyncio.run(main())


def _requests() -> list[tuple[str, list[tuple[str, np.ndarray, str]]]]:
    rng = np.random.default_rng(7)
    n = 37
    mask = np.ones((1, n), bool)
    mask[0, -5:] = False  # padding slots: scored -inf, so the bool tensor must arrive intact
    return [
        (CANDIDATE_SCORER, [
            ("users", rng.integers(0, 150, (1, 6)).astype(np.int64), "INT64"),
            ("weights", rng.random((1, 6)).astype(np.float32), "FP32"),
            ("candidates", rng.integers(0, 400, (1, n)).astype(np.int64), "INT64"),
            ("mask", mask, "BOOL"),
        ]),
        (CATALOGUE_SCORER, [
            ("users", rng.integers(0, 150, (1, 4)).astype(np.int64), "INT64"),
            ("weights", rng.random((1, 4)).astype(np.float32), "FP32"),
            ("k", np.array([[25]], np.int64), "INT64"),
        ]),
        (PAIR_SCORER, [
            (USER_INPUT, rng.integers(0, 150, (64, 1)).astype(np.int32), "INT32"),
            (ARTIST_INPUT, rng.integers(0, 400, (64, 1)).astype(np.int32), "INT32"),
        ]),
    ]  # fmt: skip


OUTPUTS = {CANDIDATE_SCORER: ["scores"], CATALOGUE_SCORER: ["artists", "scores"],
           PAIR_SCORER: [SCORE_OUTPUT]}  # fmt: skip


def test_raw_outputs_equal_tritonclients_for_the_same_requests(triton):
    requests = _requests()
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    expected = []
    for model, arrays in requests:
        inputs = []
        for name, array, dtype in arrays:
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        result = client.infer(model, inputs, model_version="1")
        expected.append({o: result.as_numpy(o) for o in OUTPUTS[model]})
    client.close()

    async def raw_all(inference: Inference):
        out = []
        for model, arrays in requests:
            inputs = [tensor(name, array, dtype) for name, array, dtype in arrays]
            result = await inference.infer(model, 1, inputs, timeout_s=30)
            out.append({o: result.as_numpy(o) for o in OUTPUTS[model]})
        return out

    got = _raw(triton.grpc_url, raw_all)
    for (model, _), want, have in zip(requests, expected, got, strict=True):
        for name in OUTPUTS[model]:
            assert have[name].dtype == want[name].dtype, (model, name)
            assert have[name].shape == want[name].shape, (model, name)
            np.testing.assert_array_equal(have[name], want[name], err_msg=f"{model}.{name}")
    scores = got[0]["scores"][0]
    assert np.isneginf(scores[-5:]).all() and np.isfinite(scores[:-5]).all()  # mask arrived
    assert got[1]["artists"].dtype == np.int64 and got[1]["artists"].shape == (1, 25)


def test_the_decoder_reads_bool_int64_and_fp32_outputs_as_tritonclient_does():
    arrays = {
        "b": np.array([[True, False, True]]),
        "i": np.arange(6, dtype=np.int64).reshape(2, 3),
        "f": np.linspace(-1, 1, 4, dtype=np.float32),
        "empty": np.zeros((1, 0), np.float32),
    }
    types = {"b": "BOOL", "i": "INT64", "f": "FP32", "empty": "FP32"}
    response = service_pb2.ModelInferResponse(
        outputs=[service_pb2.ModelInferResponse.InferOutputTensor(
            name=n, datatype=types[n], shape=a.shape) for n, a in arrays.items()],
        raw_output_contents=[a.tobytes() for a in arrays.values()],
    )  # fmt: skip
    ours, theirs = InferResult(response), grpcclient.InferResult(response)
    for name, array in arrays.items():
        got = ours.as_numpy(name)
        assert got.dtype == theirs.as_numpy(name).dtype == array.dtype
        np.testing.assert_array_equal(got, theirs.as_numpy(name))
        np.testing.assert_array_equal(got, array)
    assert ours.as_numpy("missing") is None


def test_tensor_refuses_an_array_of_another_type():
    with pytest.raises(ValueError, match="int32"):
        tensor("users", np.zeros((1, 2), np.int32), "INT64")
    with pytest.raises(ValueError, match="BYTES"):
        tensor("names", np.array([b"a"], object), "BYTES")


def test_the_request_id_and_the_pinned_version_reach_triton(triton):
    async def call(inference: Inference):
        bind_request_id("trace-raw.1")
        inputs = [tensor(n, a, d) for n, a, d in _requests()[0][1]]
        return await inference.infer(CANDIDATE_SCORER, 1, inputs, timeout_s=30)

    result = _raw(triton.grpc_url, call)
    assert result.response.id == "trace-raw.1"  # Triton echoes the request's id
    assert result.response.model_name == CANDIDATE_SCORER
    assert result.response.model_version == "1"


def test_readiness_reports_the_served_version_only(triton):
    async def call(inference: Inference):
        repo = triton.config.repository
        return (await inference.is_ready(1, 5), await inference.is_ready(99, 5),
                await inference.ready_versions(repo, 5))  # fmt: skip

    assert _raw(triton.grpc_url, call) == (True, False, {1})


def test_an_unknown_version_is_version_retired(triton):
    async def call(inference: Inference):
        inputs = [tensor(n, a, d) for n, a, d in _requests()[0][1]]
        return await inference.infer(CANDIDATE_SCORER, 99, inputs, timeout_s=30)

    with pytest.raises(VersionRetired) as err:
        _raw(triton.grpc_url, call)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_tiny_timeout_is_deadline_exceeded(triton):
    async def call(inference: Inference, timeout_s: float):
        inputs = [tensor(n, a, d) for n, a, d in _requests()[0][1]]
        return await inference.infer(CANDIDATE_SCORER, 1, inputs, timeout_s=timeout_s)

    # gRPC rounds a deadline up to whole milliseconds and a warm Triton can answer inside one,
    # so the server is stopped (SIGSTOP) while the short deadline runs: no answer can come
    os.killpg(triton.process.pid, signal.SIGSTOP)
    try:
        for timeout_s in (0.05, 0.0):  # runs out at a stalled server; already spent (never sent)
            with pytest.raises(DeadlineExceeded) as err:
                _raw(triton.grpc_url, call, timeout_s)
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        os.killpg(triton.process.pid, signal.SIGCONT)
    assert _raw(triton.grpc_url, call, 30).response.model_name == CANDIDATE_SCORER  # recovered


def test_a_stopped_server_is_unavailable(triton):
    async def call(inference: Inference):
        inputs = [tensor(n, a, d) for n, a, d in _requests()[0][1]]
        await inference.infer(CANDIDATE_SCORER, 1, inputs, timeout_s=30)  # connected, then
        triton.stop()  # the server goes away under the open channel
        errors = []
        for attempt in (
            inference.infer(CANDIDATE_SCORER, 1, inputs, timeout_s=5),
            inference.is_ready(1, 5),
            inference.ready_versions(triton.config.repository, 5),
        ):
            try:
                await attempt
            except GatewayError as exc:
                errors.append(exc)
        return errors

    try:
        errors = _raw(triton.grpc_url, call)
    finally:
        triton.start()  # for any test after this one
    assert len(errors) == 3 and all(type(e) is Unavailable for e in errors), errors
    assert all(triton.grpc_url in str(e) for e in errors)


def test_grpc_errors_translate_like_tritonclients():
    """The raw path's AioRpcError maps as tritonclient's wrapping of the same error did."""

    def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    cases = [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceeded),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", Unavailable),
        (grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'candidate_scorer' version 3 is "
                                    "not at ready state", VersionRetired),
        (grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape for input 'users'", GatewayError),
    ]  # fmt: skip
    for code, details, kind in cases:
        assert type(translate(rpc_error(code, details), "triton:8001")) is kind, (code, details)
