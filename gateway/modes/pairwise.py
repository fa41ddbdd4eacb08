"""``pairwise``: the seed's way. Every (group member, artist) pair goes to ``pair_scorer`` in
requests of at most its ``max_batch_size`` pairs, sent concurrently; the scores are summed per
artist, weighted by similarity, and ranked here."""

from __future__ import annotations

import asyncio

import numpy as np
import scipy.sparse as sp

from core.contract import ARTIST_INPUT, PAIR, PAIR_SCORER, SCORE_OUTPUT, USER_INPUT
from core.ranking import top_k_excluding
from gateway.inference import Inference, tensor
from gateway.modes.base import Ranked, ScoringRequest

PAIRS_PER_REQUEST = PAIR.max_batch_size
CONCURRENT_CALLS = 4  # per request: a 290k-artist group is 45 calls, not 45 at once


class Pairwise:
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def top_k(self, r: ScoringRequest) -> Ranked:
        n = r.n_artists
        users = np.repeat(r.group.astype(np.int32), n).reshape(-1, 1)
        artists = np.tile(np.arange(n, dtype=np.int32), len(r.group)).reshape(-1, 1)
        limit = asyncio.Semaphore(CONCURRENT_CALLS)

        async def call(s: int):
            part_u, part_a = users[s : s + PAIRS_PER_REQUEST], artists[s : s + PAIRS_PER_REQUEST]
            inputs = [tensor(USER_INPUT, part_u, "INT32"), tensor(ARTIST_INPUT, part_a, "INT32")]
            async with limit:
                return await self.inference.infer(PAIR_SCORER, r.version, inputs, r.timeout_s)

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the pending calls
                tasks = [group.create_task(call(s))
                         for s in range(0, len(users), PAIRS_PER_REQUEST)]  # fmt: skip
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first cause, with its status code
        results = [t.result() for t in tasks]
        grid = np.concatenate([res.as_numpy(SCORE_OUTPUT).ravel() for res in results])
        summed = r.weights.astype(np.float32) @ grid.reshape(len(r.group), n)
        excluded = sp.csr_matrix(
            (np.ones(len(r.exclude), np.float32), (np.zeros(len(r.exclude), int), r.exclude)),
            shape=(1, n),
        )
        top = top_k_excluding(summed[None, :], excluded, r.k)[0]
        top = top[top >= 0]
        return Ranked(top.astype(np.int64), summed[top])
