"""Continuous Recommend traffic from a background thread (asyncio client), for swap proofs.

Locust drives the realistic mix; this drives a steady stream whose every answer is checked and
whose version changes are timed, which is what the swap test and benchmark need.
"""

from __future__ import annotations

import asyncio
import threading
import time

from client import AsyncRecommenderClient, RecommenderError


class AsyncLoad:
    """``with AsyncLoad(address, users) as load:`` sends until the block ends.

    ``histories`` (lists of artist names) are sent instead of known users when given.
    ``seen[i]``: the versions that answered listener ``i`` (a canary's split is sticky).
    ``rate``: requests per second in all (each worker paced), instead of as fast as answered."""

    def __init__(self, address: str, users: list[str], concurrency: int = 8, *,
                 histories: list[list[str]] | None = None,
                 rate: float | None = None) -> None:  # fmt: skip
        self.address, self.users, self.concurrency = address, users, concurrency
        self.histories, self.rate = histories, rate
        self.seen: dict[int, set[int]] = {}
        self.ok = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.switches: list[tuple[float, int]] = []  # (monotonic time, version) on each change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def first_answer_from(self, version: int, after: float) -> float | None:
        """When the first answer from ``version`` came after ``after`` (monotonic), if any."""
        return next((t for t, v in self.switches if v == version and t >= after), None)

    def wait_for(self, requests: int, timeout_s: float = 600) -> bool:
        """Wait until ``requests`` answers succeeded; False if the time ran out first or the
        load thread died."""
        deadline = time.monotonic() + timeout_s
        while self.ok < requests and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        return self.ok >= requests

    async def _run(self) -> None:
        async with AsyncRecommenderClient(self.address, timeout_s=30) as client:

            async def worker(w: int) -> None:
                i = w
                slot = time.monotonic() + (w / self.rate if self.rate else 0.0)
                while not self._stop.is_set():
                    if self.rate:  # paced: one request per worker every concurrency/rate s
                        await asyncio.sleep(max(0.0, slot - time.monotonic()))
                        slot += self.concurrency / self.rate
                    start = time.monotonic()
                    listener = i % len(self.histories or self.users)
                    try:
                        if self.histories:
                            rec = await client.recommend(artists=self.histories[listener], k=10)
                        else:
                            rec = await client.recommend(self.users[listener], k=10)
                    except RecommenderError as exc:
                        self.failures.append(str(exc))
                    else:
                        self.ok += 1
                        self.latencies.append(time.monotonic() - start)
                        self.seen.setdefault(listener, set()).add(rec.model_version)
                        if not self.switches or self.switches[-1][1] != rec.model_version:
                            self.switches.append((time.monotonic(), rec.model_version))
                    i += self.concurrency

            await asyncio.gather(*[worker(w) for w in range(self.concurrency)])

    def __enter__(self) -> AsyncLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
