"""The gateway's one Triton client: inference pinned to a version, readiness, error translation.

Raw gRPC asyncio: one ``grpc.aio`` channel per Triton server (the channel options
``tritonclient.grpc.aio`` uses: unlimited message sizes, its keepalive defaults) and the
generated ``GRPCInferenceServiceStub``. A request carries its tensors as
``raw_input_contents`` (the arrays' bytes) and the outputs are read from
``raw_output_contents`` with ``np.frombuffer``: none of tritonclient's per-tensor objects,
checks and conversions on the request path (measured in ``benchmarks/triton_client.py``).
Every call carries a client timeout and the request id of the RPC it serves; gRPC failures
leave as :mod:`gateway.errors` with the status code the caller should see.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from core.contract import SERVED_MODELS, common_versions
from core.modes import DEFAULT_MODE, MODES
from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, VersionRetired
from gateway.logs import current_request_id

_INT32_MAX = 2**31 - 1
# tritonclient.grpc.aio.InferenceServerClient's defaults (MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions).
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", _INT32_MAX),
    ("grpc.max_receive_message_length", _INT32_MAX),
    ("grpc.keepalive_time_ms", _INT32_MAX),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", False),
    ("grpc.http2.max_pings_without_data", 2),
)

# Triton data types the gateway sends and reads, with their numpy dtypes (no BYTES tensors).
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(t)
    for name, t in (("BOOL", np.bool_), ("INT8", np.int8), ("INT16", np.int16),
                    ("INT32", np.int32), ("INT64", np.int64), ("UINT8", np.uint8),
                    ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64),
                    ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64))
}  # fmt: skip


def open_channel(url: str) -> grpc.aio.Channel:
    """An insecure asyncio channel to Triton's gRPC port, with tritonclient's options."""
    return grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input tensor: its name, Triton data type, shape and the array's bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    content: bytes


def tensor(name: str, array: np.ndarray, dtype: str) -> Tensor:
    """A Triton input tensor holding ``array`` (whose dtype must be ``dtype``'s)."""
    expected = DTYPES.get(dtype)
    if expected is None:
        raise ValueError(f"unsupported Triton data type {dtype!r} for input {name!r}")
    if array.dtype != expected:
        raise ValueError(f"input {name!r}: got a {array.dtype} array for Triton type {dtype}")
    return Tensor(name, dtype, array.shape, array.tobytes())


class InferResult:
    """Triton's answer: ``as_numpy(name)`` views an output's raw bytes as an array
    (read-only, as tritonclient's)."""

    __slots__ = ("response",)

    def __init__(self, response: service_pb2.ModelInferResponse) -> None:
        self.response = response

    def as_numpy(self, name: str) -> np.ndarray | None:
        """The output called ``name``, shaped as Triton reports it; None when absent."""
        raw = self.response.raw_output_contents
        for i, output in enumerate(self.response.outputs):
            if output.name != name:
                continue
            dtype = DTYPES.get(output.datatype)
            if dtype is None:
                raise GatewayError(f"Triton output {name!r} has unsupported type "
                                   f"{output.datatype}")  # fmt: skip
            data = np.frombuffer(raw[i], dtype) if i < len(raw) else np.empty(0, dtype)
            return data.reshape(tuple(output.shape))
        return None


def translate(exc: grpc.aio.AioRpcError | InferenceServerException, url: str) -> GatewayError:
    """A failed Triton call (a gRPC error, or tritonclient's wrapping of one) as the gateway
    error the caller should see."""
    if isinstance(exc, grpc.RpcError):
        status, message = str(exc.code()), exc.details() or str(exc)
    else:
        status, message = str(exc.status() or ""), exc.message() or str(exc)
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded("Triton did not answer before the deadline")
    if "UNAVAILABLE" in status:
        return Unavailable(f"Triton at {url} is unavailable: {message}")
    if "not at ready state" in message or "unknown model" in message.lower():
        return VersionRetired(f"the model version is no longer served: {message}")
    return GatewayError(f"Triton failed: {message}")


class Inference:
    """Calls to one Triton server over a shared asyncio channel."""

    def __init__(self, channel: grpc.aio.Channel, url: str) -> None:
        self.channel = channel
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        self.url = url
        # models not ready in a version some other model has ready (a model that failed to load
        # there), as Triton's readiness API answered the last ready_versions: for messages
        self.not_ready: tuple[str, ...] = ()

    async def close(self) -> None:
        await self.channel.close()

    async def infer(self, model: str, version: int, inputs: list[Tensor],
                    timeout_s: float) -> InferResult:  # fmt: skip
        """One inference on ``version`` of ``model``, tagged with the RPC's request id."""
        if timeout_s <= 0:
            raise DeadlineExceeded("the deadline passed before Triton was called")
        request = service_pb2.ModelInferRequest(
            model_name=model,
            model_version=str(version),
            id=current_request_id(),
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
            raw_input_contents=[t.content for t in inputs],
        )  # fmt: skip
        try:
            return InferResult(await self.stub.ModelInfer(request, timeout=timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.url) from None

    async def _model_ready(self, model: str, version: int, timeout_s: float) -> bool:
        request = service_pb2.ModelReadyRequest(name=model, version=str(version))
        return (await self.stub.ModelReady(request, timeout=timeout_s)).ready

    async def is_ready(self, version: int, timeout_s: float) -> bool:
        """Whether the default mode's models still serve ``version`` (true mid-swap: deploy
        loads them last)."""
        try:
            ready = await asyncio.gather(*(
                self._model_ready(m, version, timeout_s) for m in MODES[DEFAULT_MODE].models
            ))  # fmt: skip
            return all(ready)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.url) from None

    async def ready_versions(self, repository: Path, timeout_s: float) -> set[int]:
        """The versions on disk that Triton reports READY in every served model."""
        ready = await self.ready_models(repository, timeout_s)
        return {v for v, models in ready.items() if models == set(SERVED_MODELS)}

    async def ready_models(self, repository: Path, timeout_s: float) -> dict[int, frozenset[str]]:
        """For each version on disk, the served models Triton reports READY in it.

        Asked model by model through the open readiness API: the repository index belongs to
        the model-repository API, which only deploy's admin key unlocks."""
        on_disk = common_versions(repository)
        checks = [(v, m) for v in sorted(on_disk) for m in SERVED_MODELS]
        try:
            ready = await asyncio.gather(*(
                self._model_ready(m, v, timeout_s) for v, m in checks
            ))  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.url) from None
        answers = dict(zip(checks, ready, strict=True))
        partly = {v for (v, _), ok in answers.items() if ok}
        self.not_ready = tuple(f"{m} version {v}" for (v, m), ok in answers.items()
                               if not ok and v in partly)  # fmt: skip
        return {v: frozenset(m for (w, m), ok in answers.items() if ok and w == v)
                for v in on_disk}  # fmt: skip
