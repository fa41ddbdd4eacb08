"""Two ways of serving compared side by side: both stacks up at once, the load moved between
them in short alternating blocks (A B B A A B ...), each side's requests, CPU and latencies
summed over its blocks.

This machine's speed drifts by tens of percent over minutes (the same point read 243 and 364
requests/s within one run), more than most changes being judged; blocks of a few seconds,
alternated, put both sides through the same drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.process_cpu import CpuSample
from benchmarks.steady_load import LoadShape, run_point
from musicrec.v1 import recommender_pb2 as pb


@dataclass
class Side:
    """One way of serving: where its gateway listens and how to sample its processes."""

    address: str
    servers: dict[str, Callable[[], CpuSample]]
    requests: int = 0
    seconds: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # summed over answered requests
    p50s: list[float] = field(default_factory=list)

    def add(self, row: dict) -> None:
        n = row["requests"]
        self.requests += n
        self.seconds += row["seconds"]
        self.p50s.append(row["p50_ms"])
        for key, value in row.items():
            if key.endswith("_cpu_ms"):
                self.cpu_ms[key] = self.cpu_ms.get(key, 0.0) + value * n

    def summary(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 2),
                "rps": self.requests / self.seconds,
                "p50_ms_median_of_blocks": float(np.median(self.p50s)),
                **{k: v / self.requests for k, v in self.cpu_ms.items()}}  # fmt: skip


def interleave(a: Side, b: Side, requests: list[pb.RecommendRequest], concurrency: int,
               blocks: int = 8, block_s: float = 4.0, connections: int = 4) -> dict:  # fmt: skip
    """``blocks`` blocks of ``block_s`` seconds on each side, alternating (A B B A ...); the
    summary of each and the ratios of B to A."""
    shape = LoadShape(
        concurrency, seconds=block_s, min_requests=1, warmup_s=0.5, connections=connections
    )
    for i in range(blocks):
        for side in (a, b) if i % 2 == 0 else (b, a):
            side.add(asyncio.run(run_point(side.address, requests, shape, side.servers)))
    sa, sb = a.summary(), b.summary()
    ratios = {k: sb[k] / sa[k] for k in sa if k.endswith(("_cpu_ms", "rps", "_blocks"))}
    return {"a": sa, "b": sb, "b_over_a": ratios, "concurrency": concurrency,
            "blocks": blocks, "block_s": block_s}  # fmt: skip
