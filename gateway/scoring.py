"""Scoring through Triton: both modes behind one call, over one shared async gRPC client.

* ``all_artists``: one ``catalogue_scorer`` request (the group, its weights and K) returns the
  top K over the whole catalogue, computed inside the ONNX graph.
* ``pairwise``: the seed's way: every (group member, artist) pair goes to ``pair_scorer`` in
  requests of at most ``max_batch_size`` pairs, sent concurrently; the scores are summed per
  artist, weighted by similarity, and ranked here.

Both pin the model version the request's vocabulary belongs to, so an answer never mixes two
versions; Triton errors become :mod:`gateway.errors` with the right status code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from export.contract import (
    ARTIST_INPUT,
    CATALOGUE_SCORER,
    PAIR_SCORER,
    SCORE_OUTPUT,
    SERVED_MODELS,
    SIGNATURES,
    USER_INPUT,
)
from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, VersionRetired
from training.ranking import top_k_excluding

PAIRS_PER_REQUEST = SIGNATURES[PAIR_SCORER][2]


@dataclass(frozen=True)
class Ranked:
    """Artist indices best first, with their scores."""

    artists: np.ndarray
    scores: np.ndarray


def _input(name: str, array: np.ndarray, dtype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


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


class TritonScorer:
    """Top-K artists for a weighted group of known users, in either mode."""

    def __init__(self, client: triton.InferenceServerClient, url: str) -> None:
        self.client = client
        self.url = url

    async def _infer(self, model: str, version: int, inputs: list, timeout_s: float):
        if timeout_s <= 0:
            raise DeadlineExceeded("the deadline passed before Triton was called")
        try:
            return await self.client.infer(
                model, inputs, model_version=str(version), client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None

    async def top_k(
        self,
        mode: str,
        version: int,
        n_artists: int,
        group: np.ndarray,
        weights: np.ndarray,
        k: int,
        exclude: np.ndarray,
        timeout_s: float,
    ) -> Ranked:
        """The ``k`` best artists for ``sum_j weights[j] * score(group[j], artist)``, leaving
        out the artist indices in ``exclude``."""
        if mode == "pairwise":
            return await self._pairwise(version, n_artists, group, weights, k, exclude, timeout_s)
        return await self._all_artists(version, n_artists, group, weights, k, exclude, timeout_s)

    async def _all_artists(self, version, n_artists, group, weights, k, exclude, timeout_s):
        asked = min(n_artists, k + len(exclude))  # enough to still have k after exclusion
        inputs = [
            _input("users", group.reshape(1, -1).astype(np.int64), "INT64"),
            _input("weights", weights.reshape(1, -1).astype(np.float32), "FP32"),
            _input("k", np.array([[asked]], np.int64), "INT64"),
        ]
        result = await self._infer(CATALOGUE_SCORER, version, inputs, timeout_s)
        artists, scores = result.as_numpy("artists")[0], result.as_numpy("scores")[0]
        keep = ~np.isin(artists, exclude)
        return Ranked(artists[keep][:k], scores[keep][:k])

    async def _pairwise(self, version, n_artists, group, weights, k, exclude, timeout_s):
        users = np.repeat(group.astype(np.int32), n_artists).reshape(-1, 1)
        artists = np.tile(np.arange(n_artists, dtype=np.int32), len(group)).reshape(-1, 1)
        calls = []
        for s in range(0, len(users), PAIRS_PER_REQUEST):
            part_u, part_a = users[s : s + PAIRS_PER_REQUEST], artists[s : s + PAIRS_PER_REQUEST]
            inputs = [_input(USER_INPUT, part_u, "INT32"), _input(ARTIST_INPUT, part_a, "INT32")]
            calls.append(self._infer(PAIR_SCORER, version, inputs, timeout_s))
        results = await asyncio.gather(*calls)
        grid = np.concatenate([r.as_numpy(SCORE_OUTPUT).ravel() for r in results])
        summed = weights.astype(np.float32) @ grid.reshape(len(group), n_artists)
        excluded = sp.csr_matrix(
            (np.ones(len(exclude), np.float32), (np.zeros(len(exclude), int), exclude)),
            shape=(1, n_artists),
        )
        top = top_k_excluding(summed[None, :], excluded, k)[0]
        top = top[top >= 0]
        return Ranked(top.astype(np.int64), summed[top])

    async def is_ready(self, version: int, timeout_s: float) -> bool:
        """Whether the default model still serves ``version`` (true mid-swap)."""
        try:
            return await self.client.is_model_ready(
                CATALOGUE_SCORER, str(version), client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None

    async def ready_versions(self, timeout_s: float) -> set[int]:
        """The versions Triton reports READY for every served model."""
        try:
            index = await self.client.get_model_repository_index(client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise translate(exc, self.url) from None
        ready: dict[str, set[int]] = {m: set() for m in SERVED_MODELS}
        for model in index.models:
            if model.name in ready and model.state == "READY" and model.version.isdigit():
                ready[model.name].add(int(model.version))
        return set.intersection(*ready.values())
