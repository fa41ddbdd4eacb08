"""``all_artists``: one ``catalogue_scorer`` request (the group, its weights and K) returns the
top K over the whole catalogue, computed inside the ONNX graph."""

from __future__ import annotations

import numpy as np

from core.contract import CATALOGUE_SCORER
from gateway.inference import Inference, tensor
from gateway.modes.base import Ranked, ScoringRequest


class AllArtists:
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def top_k(self, r: ScoringRequest) -> Ranked:
        asked = min(r.n_artists, r.k + len(r.exclude))  # enough to still have k after exclusion
        inputs = [
            tensor("users", r.group.reshape(1, -1).astype(np.int64), "INT64"),
            tensor("weights", r.weights.reshape(1, -1).astype(np.float32), "FP32"),
            tensor("k", np.array([[asked]], np.int64), "INT64"),
        ]
        result = await self.inference.infer(CATALOGUE_SCORER, r.version, inputs, r.timeout_s)
        artists, scores = result.as_numpy("artists")[0], result.as_numpy("scores")[0]
        keep = ~np.isin(artists, r.exclude)
        return Ranked(artists[keep][: r.k], scores[keep][: r.k])
