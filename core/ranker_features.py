"""The learned ranker's features of one listener's candidates: one definition for training,
offline evaluation and the gateway.

The gateway computes :data:`GATEWAY_FEATURES` from stage 1 (``core.candidates``) and sends them
to Triton's ``candidate_ranker``, which prepends :data:`NETWORK_FEATURES` (the DNN's group score
of each candidate and its z-score over the listener's candidates) before its trees; the trees
see :data:`RANKER_FEATURES` in that order. Ranks and z-scores are taken over the candidates,
so they mean the same offline and when served.
"""

from __future__ import annotations

import numpy as np

from core.candidates import FEATURES, LISTENER, Candidates

SCORED = ("neighbourhood", "item_knn", "ease", "als")  # with score, z-score, rank, share of max
SOURCES = ("neighbourhood", "item_knn", "ease")  # stage 1's candidate sources
NETWORK_FEATURES = ("dnn", "dnn_z")
GATEWAY_FEATURES = (
    *(f"{s}_{kind}" for s in SCORED for kind in ("score", "z", "rank", "share")),
    "log_listeners", "popularity_z", "popularity_rank", "sources",
    *LISTENER, "known",
)  # fmt: skip
RANKER_FEATURES = (*NETWORK_FEATURES, *GATEWAY_FEATURES)


def candidate_features(candidates: Candidates, known: bool) -> np.ndarray:
    """``(C, len(GATEWAY_FEATURES))`` float32 for one listener's candidates."""
    raw = np.asarray(candidates.features, np.float64)
    n = raw.shape[0]
    columns = []
    for source in SCORED:
        v = raw[:, FEATURES.index(source)]
        top = v.max(initial=0.0)
        columns += [v, zscore(v), ranks(v), v / top if top > 0 else np.zeros(n)]
    pop = raw[:, FEATURES.index("popularity")]
    sources = sum((raw[:, FEATURES.index(s)] != 0).astype(np.float64) for s in SOURCES)
    columns += [pop, zscore(pop), ranks(pop), sources]
    listener = np.broadcast_to(np.asarray(candidates.listener, np.float64), (n, len(LISTENER)))
    out = np.column_stack([*columns, listener, np.full(n, float(known))]) if n else \
        np.zeros((0, len(GATEWAY_FEATURES)))  # fmt: skip
    return out.astype(np.float32)


def zscore(v: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit variance (population std; all zeros when constant)."""
    v = np.asarray(v, np.float64)
    std = v.std() if len(v) else 0.0
    return (v - v.mean()) / std if std > 0 else np.zeros_like(v)


def ranks(v: np.ndarray) -> np.ndarray:
    """0 for the highest value, ties sharing their lowest rank, as ``log1p`` (ranks deep in a
    list differ little)."""
    v = np.asarray(v, np.float64)
    order = np.sort(-v)
    return np.log1p(np.searchsorted(order, -v, side="left").astype(np.float64))


def network_features(dnn: np.ndarray) -> np.ndarray:
    """``(C, 2)``: the DNN scores and their z-score, as ``candidate_ranker`` computes them."""
    dnn = np.asarray(dnn, np.float32)
    return np.column_stack([dnn, zscore(dnn)]).astype(np.float32)
