"""A steady closed-loop load: ``concurrency`` callers send Recommends as fast as they are
answered, first for a warm-up, then for a measured window of at least ``seconds`` and
``min_requests`` answers, with the CPU time of the processes under test read at the window's
two edges while the load keeps running.

The load generator is as light as a gRPC client can be in Python (pre-built request messages
on a few ``grpc.aio`` connections, no client-side checks or retries), and its own CPU time per
request is reported beside the servers' so that what it takes from shared cores is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from benchmarks.process_cpu import CpuSample, sample_self
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc

MAX_WINDOW_S = 300.0  # a point that cannot reach min_requests in this long stops anyway


@dataclass(frozen=True)
class LoadShape:
    """How long and how hard one point runs."""

    concurrency: int
    seconds: float = 10.0
    min_requests: int = 1000
    warmup_s: float = 2.0
    connections: int = 4  # callers share this many connections (never more than callers)


def history_messages(histories: Sequence[Sequence[str]], mode: str,
                     k: int = 10) -> list[pb.RecommendRequest]:  # fmt: skip
    """One Recommend request per history (artist names), in scoring ``mode``."""
    scoring = pb.ScoringMode.Value(f"SCORING_MODE_{mode.upper()}")
    return [
        pb.RecommendRequest(
            history=pb.History(items=[pb.ArtistPlay(name=n) for n in h]), k=k, scoring=scoring
        )  # fmt: skip
        for h in histories
    ]


class _Window:
    """The measured window: open after the warm-up, closed once long and full enough."""

    def __init__(self, shape: LoadShape) -> None:
        self.shape = shape
        self.opened: float | None = None
        self.closed: float | None = None
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}

    def record(self, started: float, finished: float, error: str | None) -> None:
        if self.opened is None or self.closed is not None or finished < self.opened:
            return  # answers inside the window count, as the CPU read at its edges does
        if error is None:
            self.latencies.append(finished - started)
        else:
            self.failures[error] = self.failures.get(error, 0) + 1

    def full(self, now: float) -> bool:
        if self.opened is None:
            return False
        elapsed = now - self.opened
        answered = len(self.latencies) + sum(self.failures.values())
        long_enough = elapsed >= self.shape.seconds and answered >= self.shape.min_requests
        return long_enough or elapsed >= MAX_WINDOW_S


async def run_point(address: str, requests: list[pb.RecommendRequest], shape: LoadShape,
                    servers: dict[str, Callable[[], CpuSample]]) -> dict:  # fmt: skip
    """Drive ``requests`` (round robin) at ``shape`` and return the point: requests/s, p50/p99,
    failures, and CPU milliseconds per answered request of each of ``servers`` (a name and how
    to sample its processes) and of this load generator."""
    window = _Window(shape)
    # Separate connections (no shared subchannel pool), as separate clients would open: a
    # gateway's workers each take whole connections (SO_REUSEPORT).
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, min(shape.connections, shape.concurrency)))]  # fmt: skip
    try:
        stubs = [pb_grpc.RecommenderStub(c) for c in channels]
        await asyncio.gather(*(stub.Recommend(requests[0], timeout=60) for stub in stubs))
        stop = asyncio.Event()

        async def caller(c: int) -> None:
            stub, i = stubs[c % len(stubs)], c
            while not stop.is_set():
                started, error = time.perf_counter(), None
                try:
                    await stub.Recommend(requests[i % len(requests)], timeout=60)
                except grpc.aio.AioRpcError as exc:
                    error = exc.code().name
                window.record(started, time.perf_counter(), error)
                i += shape.concurrency

        callers = [asyncio.create_task(caller(c)) for c in range(shape.concurrency)]
        await asyncio.sleep(shape.warmup_s)
        before = _snapshot(servers)
        window.opened = time.perf_counter()
        while not window.full(time.perf_counter()):
            await asyncio.sleep(0.05)
        window.closed = time.perf_counter()
        after = _snapshot(servers)
        stop.set()
        await asyncio.gather(*callers)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return _point(window, before, after)


def burn_in(address: str, requests: list[pb.RecommendRequest], seconds: float) -> None:
    """Unmeasured load at concurrency 8 first: on this machine the first tens of seconds after
    an export ran slower (memory settling after the export's child exits), whatever ran then."""
    if seconds > 0:
        shape = LoadShape(8, seconds=seconds, min_requests=1, warmup_s=0)
        asyncio.run(run_point(address, requests, shape, {}))


def _snapshot(servers: dict[str, Callable[[], CpuSample]]) -> dict[str, CpuSample]:
    return {**{name: sample() for name, sample in servers.items()}, "load_generator": sample_self()}


def _point(window: _Window, before: dict[str, CpuSample], after: dict[str, CpuSample]) -> dict:
    wall = (window.closed or 0.0) - (window.opened or 0.0)
    lat = np.asarray(window.latencies)
    answered = max(len(lat), 1)
    out = {
        "concurrency": window.shape.concurrency,
        "seconds": round(wall, 2),
        "requests": len(lat),
        "failed": window.failures,
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else None,
    }
    for name in after:
        used = after[name] - before[name]
        out[f"{name}_cpu_ms"] = 1e3 * used.seconds / answered
        out[f"{name}_cores"] = used.seconds / wall
        out[f"{name}_involuntary_switches_per_request"] = used.involuntary / answered
        out[f"{name}_processes"] = after[name].processes
    return out
