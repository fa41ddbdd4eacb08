"""Listeners of a HetRec split replayed through the gateway: each asks ``Recommend`` (a known
user by id, a held-out new listener by the artist ids of their history), then sends one
``Feedback`` for the answer: PLAYED for every recommended artist among their held-out plays,
SKIPPED for the rest. Every impression is tallied with the version that answered and, from the
Feedback's attributions, the version and team credited for each play (an interleaved list's
plays are credited to teams: what an interleaving scenario reads)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from client import AsyncRecommenderClient, FeedbackEvent, RecommenderError
from core.vocabulary import Vocabulary
from training.split import Split

K = 10


@dataclass(frozen=True)
class Listener:
    """A known user (``user_id``) or a new listener (``history``: artist ids), and the artist
    ids of their held-out plays."""

    key: str
    held_out: frozenset[str]
    user_id: str | None = None
    history: tuple[str, ...] | None = None


def listeners(split: Split, vocab: Vocabulary, seed: int = 0) -> list[Listener]:
    """Every known user with test plays and every new listener, shuffled."""
    ids, users = list(vocab.artist_ids), list(vocab.user_ids)

    def artists(m, row: int) -> list[str]:
        return [ids[a] for a in m.indices[m.indptr[row] : m.indptr[row + 1]]]

    out = [
        Listener(f"u{u}", frozenset(artists(split.test, u)), user_id=users[u])
        for u in range(split.test.shape[0])
        if split.test.indptr[u + 1] > split.test.indptr[u]
    ]
    out += [Listener(f"n{u}", frozenset(artists(split.new_user_targets, u)),
                     history=tuple(artists(split.new_user_history, u)))
            for u in split.new_users]  # fmt: skip
    random.Random(seed).shuffle(out)
    return out


@dataclass(frozen=True)
class Impression:
    """One answered list and what the listener did with it."""

    t: float  # monotonic seconds when the feedback was acknowledged
    listener: str
    version: int  # the version that answered (Recommend's model_version)
    played_ranks: tuple[int, ...]  # 1-based ranks of the played artists
    credits: tuple[tuple[int, str], ...] = ()  # (version, team) credited per play
    teams: tuple[str, ...] = ()  # the team that placed each position ("": not interleaved)

    @property
    def hit(self) -> bool:
        return bool(self.played_ranks)

    @property
    def reciprocal_rank(self) -> float:
        return 1.0 / min(self.played_ranks) if self.played_ranks else 0.0


@dataclass
class Tally:
    """Impressions so far, and every failed call (client-visible)."""

    impressions: list[Impression] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def by_version(self, since: float = 0.0) -> dict[int, dict[str, float]]:
        """``{version: {"impressions", "hits", "hit_rate", "mrr"}}`` of impressions after
        ``since`` (monotonic)."""
        out: dict[int, dict[str, float]] = {}
        for imp in self.impressions:
            if imp.t < since:
                continue
            row = out.setdefault(imp.version, {"impressions": 0, "hits": 0, "rr": 0.0})
            row["impressions"] += 1
            row["hits"] += imp.hit
            row["rr"] += imp.reciprocal_rank
        for row in out.values():
            row["hit_rate"] = row["hits"] / row["impressions"]
            row["mrr"] = row.pop("rr") / row["impressions"]
        return out


def feedback_events(artist_ids: Sequence[str], held_out: frozenset[str]) -> list[FeedbackEvent]:
    """PLAYED for the held-out artists of a list, SKIPPED for the others."""
    return [FeedbackEvent("played" if a in held_out else "skipped", a) for a in artist_ids]


async def one(client: AsyncRecommenderClient, listener: Listener) -> Impression:
    """One Recommend and its Feedback."""
    if listener.user_id is not None:
        rec = await client.recommend(listener.user_id, k=K)
    else:
        rec = await client.recommend(artist_ids=list(listener.history or ()), k=K)
    ids = [a.id for a in rec.artists]
    credits = await client.feedback(rec.recommendation_id, feedback_events(ids, listener.held_out))
    played = [c for c in credits if c.artist_id in listener.held_out]
    return Impression(time.monotonic(), listener.key, rec.model_version,
                      tuple(c.rank for c in played),
                      tuple((c.model_version, c.team) for c in played),
                      tuple(c.team for c in sorted(credits, key=lambda c: c.rank)))  # fmt: skip


class Replay:
    """``with Replay(address, listeners) as r:`` replays the listeners round and round from
    ``concurrency`` asyncio workers in a thread until the block ends; ``r.tally`` grows."""

    def __init__(self, address: str, people: list[Listener], concurrency: int = 4) -> None:
        self.address, self.people, self.concurrency = address, people, concurrency
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    @property
    def count(self) -> int:
        return len(self.tally.impressions)

    def wait_for(self, impressions: int, timeout_s: float = 600) -> bool:
        """Wait until ``impressions`` lists were answered and fed back (False on timeout)."""
        deadline = time.monotonic() + timeout_s
        while self.count < impressions and time.monotonic() < deadline \
                and self._thread.is_alive():  # fmt: skip
            time.sleep(0.05)
        return self.count >= impressions

    async def _run(self) -> None:
        async with AsyncRecommenderClient(self.address, timeout_s=30) as client:

            async def worker(w: int) -> None:
                i = w
                while not self._stop.is_set():
                    try:
                        imp = await one(client, self.people[i % len(self.people)])
                    except RecommenderError as exc:
                        self.tally.failures.append(str(exc))
                    else:
                        self.tally.impressions.append(imp)
                    i += self.concurrency

            await asyncio.gather(*[worker(w) for w in range(self.concurrency)])

    def __enter__(self) -> Replay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
