"""Concurrent Recommends' Triton calls joined into one: fewer gRPC calls, same answers.

Each Triton call costs the gateway about 0.5-0.7 ms of CPU whatever it carries (``grpc.aio``'s
machinery; serialising the candidate tensors is 0.03 ms, ``benchmarks/cost.py``) and Triton
its own per-request share again. So while ``max_in_flight`` calls of a model version are
waiting on Triton, the requests that arrive queue here, and the next call carries up to
``max_batch`` of them: the rows stacked, a ragged second dimension padded with zeros (False for
masks) exactly as Triton's dynamic batcher pads a batch in the Python-backend runners, so a
request's own row of the answer is what it would have got alone. A request never waits for
company: with a call slot free it goes at once (concurrency 1 costs nothing).

A joined call's timeout is the longest of its requests'; each request still waits only as long
as its own (DEADLINE_EXCEEDED for it alone). A failed call fails each of its requests with the
same error. The Triton request id is the first request's.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway.errors import DeadlineExceeded
from gateway.inference import DTYPES, InferResult, Tensor


class _Inference:  # what is wrapped: gateway.replicas.ReplicaSet or gateway.inference.Inference
    async def infer(
        self, model: str, version: int, inputs: list[Tensor], timeout_s: float
    ) -> InferResult: ...  # fmt: skip


class RowResult:
    """One request's row of a joined call's answer, read as :class:`InferResult` is."""

    __slots__ = ("result", "row")

    def __init__(self, result: InferResult, row: int) -> None:
        self.result, self.row = result, row

    def as_numpy(self, name: str) -> np.ndarray | None:
        out = self.result.as_numpy(name)
        return None if out is None else out[self.row : self.row + 1]


@dataclass
class _Pending:
    inputs: list[Tensor]
    timeout_s: float
    answer: asyncio.Future
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


@dataclass
class _Lane:
    """One model version's queue and its calls in flight."""

    waiting: list[_Pending] = field(default_factory=list)
    in_flight: int = 0


def join(inputs: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """The requests' tensors (each of batch 1) stacked into one batch, the second dimension
    padded with zeros (False) to the longest."""
    joined = []
    for parts in zip(*inputs, strict=True):
        first = parts[0]
        arrays = [np.frombuffer(t.content, DTYPES[t.datatype]).reshape(t.shape) for t in parts]
        width = max(a.shape[1] for a in arrays)
        batch = np.zeros((sum(a.shape[0] for a in arrays), width, *arrays[0].shape[2:]),
                         arrays[0].dtype)  # fmt: skip
        row = 0
        for a in arrays:
            batch[row : row + a.shape[0], : a.shape[1]] = a
            row += a.shape[0]
        joined.append(Tensor(first.name, first.datatype, batch.shape, batch.tobytes()))
    return joined


class CoalescingInference:
    """``infer`` as the wrapped Triton client's, joining concurrent calls of the models in
    ``models`` (inputs of batch 1, outputs read by row); other calls pass straight through."""

    def __init__(self, inner: _Inference, models: Sequence[str], *, max_batch: int = 4,
                 max_in_flight: int = 2,
                 on_call: Callable[[str, int], None] = lambda model, n: None) -> None:  # fmt: skip
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self.inner, self.models = inner, frozenset(models)
        self.max_batch, self.max_in_flight, self.on_call = max_batch, max_in_flight, on_call
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._calls: set[asyncio.Task] = set()

    def __getattr__(self, name: str):  # readiness, close, ...: the wrapped client's
        return getattr(self.inner, name)

    async def infer(self, model: str, version: int, inputs: list[Tensor],
                    timeout_s: float) -> InferResult | RowResult:  # fmt: skip
        if model not in self.models or self.max_batch == 1 or inputs[0].shape[0] != 1:
            return await self.inner.infer(model, version, inputs, timeout_s)
        if timeout_s <= 0:
            raise DeadlineExceeded("the deadline passed before Triton was called")
        pending = _Pending(inputs, timeout_s, asyncio.get_running_loop().create_future())
        lane = self._lanes.setdefault((model, version), _Lane())
        lane.waiting.append(pending)
        self._dispatch(model, version, lane)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.answer), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded("Triton did not answer before the deadline") from None
        finally:
            if pending in lane.waiting:  # cancelled or timed out before its call left
                lane.waiting.remove(pending)

    def _dispatch(self, model: str, version: int, lane: _Lane) -> None:
        while lane.waiting and lane.in_flight < self.max_in_flight:
            batch, lane.waiting = lane.waiting[: self.max_batch], lane.waiting[self.max_batch :]
            lane.in_flight += 1
            # the call runs in the first request's context: Triton gets its request id
            call = asyncio.get_running_loop().create_task(
                self._call(model, version, lane, batch), context=batch[0].context)  # fmt: skip
            self._calls.add(call)  # a reference until it ends (the loop keeps weak ones only)
            call.add_done_callback(self._calls.discard)

    async def _call(self, model: str, version: int, lane: _Lane, batch: list[_Pending]) -> None:
        try:
            self.on_call(model, len(batch))
            inputs = batch[0].inputs if len(batch) == 1 else join([p.inputs for p in batch])
            timeout_s = max(p.timeout_s for p in batch)
            result = await self.inner.infer(model, version, inputs, timeout_s)
        except Exception as exc:  # each request fails as it would have alone
            for p in batch:
                if not p.answer.done():
                    p.answer.set_exception(exc)
        else:
            for row, p in enumerate(batch):
                if not p.answer.done():
                    p.answer.set_result(RowResult(result, row))
        finally:
            for p in batch:  # retrieved, so an abandoned one logs no "never retrieved"
                if p.answer.done() and not p.answer.cancelled():
                    p.answer.exception()
            lane.in_flight -= 1
            self._dispatch(model, version, lane)
