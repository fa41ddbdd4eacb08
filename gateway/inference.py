"""The gateway's one Triton client: inference pinned to a version, readiness, error translation.

One ``tritonclient.grpc.aio`` client per process (its examples' habit). Every call carries a
client timeout and the request id of the RPC it serves; tritonclient failures leave as
:mod:`gateway.errors` with the status code the caller should see.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from core.contract import SERVED_MODELS, common_versions
from core.modes import DEFAULT_MODE, MODES
from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, VersionRetired
from gateway.logs import current_request_id


def tensor(name: str, array: np.ndarray, dtype: str) -> triton.InferInput:
    """A Triton input tensor holding ``array``."""
    t = triton.InferInput(name, list(array.shape), dtype)
    t.set_data_from_numpy(array)
    return t


def translate(exc: InferenceServerException, url: str) -> GatewayError:
    """A tritonclient failure as the gateway error the caller should see."""
    status, message = str(exc.status() or ""), exc.message() or str(exc)
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded("Triton did not answer before the deadline")
    if "UNAVAILABLE" in status:
        return Unavailable(f"Triton at {url} is unavailable: {message}")
    if "not at ready state" in message or "unknown model" in message.lower():
        return VersionRetired(f"the model version is no longer served: {message}")
    return GatewayError(f"Triton failed: {message}")


class Inference:
    """Calls to one Triton server over a shared asyncio client."""

    def __init__(self, client: triton.InferenceServerClient, url: str) -> None:
        self.client = client
        self.url = url

    async def infer(self, model: str, version: int, inputs: list[triton.InferInput],
                    timeout_s: float) -> triton.InferResult:  # fmt: skip
        """One inference on ``version`` of ``model``, tagged with the RPC's request id."""
        if timeout_s <= 0:
            raise DeadlineExceeded("the deadline passed before Triton was called")
        try:
            return await self.client.infer(
                model, inputs, model_version=str(version), client_timeout=timeout_s,
                request_id=current_request_id(),
            )  # fmt: skip
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None

    async def is_ready(self, version: int, timeout_s: float) -> bool:
        """Whether the default mode's models still serve ``version`` (true mid-swap: deploy
        loads them last)."""
        try:
            ready = await asyncio.gather(*(
                self.client.is_model_ready(m, str(version), client_timeout=timeout_s)
                for m in MODES[DEFAULT_MODE].models
            ))  # fmt: skip
            return all(ready)
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None

    async def ready_versions(self, repository: Path, timeout_s: float) -> set[int]:
        """The versions on disk that Triton reports READY in every served model.

        Asked model by model through the open readiness API: the repository index belongs to
        the model-repository API, which only deploy's admin key unlocks."""
        on_disk = common_versions(repository)
        checks = [(v, m) for v in sorted(on_disk) for m in SERVED_MODELS]
        try:
            ready = await asyncio.gather(*(
                self.client.is_model_ready(m, str(v), client_timeout=timeout_s)
                for v, m in checks
            ))  # fmt: skip
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None
        return on_disk - {v for (v, _), ok in zip(checks, ready, strict=True) if not ok}
