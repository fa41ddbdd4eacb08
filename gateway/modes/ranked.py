"""``ranked`` (the default): stage 1 (``core.candidates``, done by the recommender) gives a few
hundred candidate artists and their features (``core.ranker_features``: in a version whose
ranker uses tags, the candidates carry their tag columns and the features end with
``TAG_FEATURES``, exactly the columns its manifest's ranker names, checked at load); one
``candidate_ranker`` request scores them in Triton, the network and the learned ranker's trees
in one graph, and the best are taken here."""

from __future__ import annotations

import numpy as np

from core.candidates import rank_candidates
from core.contract import CANDIDATE_RANKER
from core.ranker_features import candidate_features
from gateway.inference import Inference, tensor
from gateway.modes.base import Ranked, ScoringRequest, candidate_inputs


class RankedMode:
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def top_k(self, r: ScoringRequest) -> Ranked:
        if r.candidates is None:
            raise ValueError("ranked needs the request's stage-1 candidates")
        artists = r.candidates.artists
        if len(artists) == 0:
            return Ranked(np.zeros(0, np.int64), np.zeros(0, np.float32))
        features = candidate_features(r.candidates, r.known)
        inputs = [*candidate_inputs(r), tensor("features", features[None], "FP32")]
        result = await self.inference.infer(CANDIDATE_RANKER, r.version, inputs, r.timeout_s)
        scores = result.as_numpy("scores")[0][: len(artists)]  # never a batch-mate's padding
        best = rank_candidates(artists, scores, r.k)
        return Ranked(artists[best], scores[best])
