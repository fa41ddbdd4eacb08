"""``two_stage``: stage 1 (``core.candidates``, done by the recommender) gives a few hundred
candidate artists; one ``candidate_scorer`` request scores them for the group in Triton, and
the version's blend combines those scores with the stage-1 ones before ranking here."""

from __future__ import annotations

import numpy as np

from core.candidates import Blend, rank_candidates
from core.contract import CANDIDATE_SCORER
from gateway.inference import Inference
from gateway.modes.base import Ranked, ScoringRequest, candidate_inputs


class TwoStage:
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def top_k(self, r: ScoringRequest) -> Ranked:
        if r.candidates is None:
            raise ValueError("two_stage needs the request's stage-1 candidates")
        artists = r.candidates.artists
        if len(artists) == 0:
            return Ranked(np.zeros(0, np.int64), np.zeros(0, np.float32))
        result = await self.inference.infer(CANDIDATE_SCORER, r.version, candidate_inputs(r),
                                            r.timeout_s)  # fmt: skip
        dnn = result.as_numpy("scores")[0][: len(artists)]  # never a batch-mate's padding
        final = (r.blend or Blend()).score(dnn, r.candidates.features)
        best = rank_candidates(artists, final, r.k)
        return Ranked(artists[best], final[best])
