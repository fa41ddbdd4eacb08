"""The learned ranker's features of one listener's candidates: one definition for training,
offline evaluation and the gateway.

The gateway computes :data:`GATEWAY_FEATURES` from stage 1 (``core.candidates``) and sends them
to Triton's ``candidate_ranker``, which prepends :data:`NETWORK_FEATURES` (the DNN's group score
of each candidate and its z-score over the listener's candidates) before its trees; the trees
see :data:`RANKER_FEATURES` in that order. Ranks and z-scores are taken over the candidates,
so they mean the same offline and when served.

A run whose data had tags adds :data:`TAG_FEATURES` after those (:func:`ranker_features`):
its candidates carry their tag columns (``core.tag_profile``), and the run's ranker names the
features it was trained on (``ranker.json``'s ``features``), which the gateway sends.
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
TAG_FEATURES = ("tag_sim", "tag_z", "tag_rank", "tagged")  # only where the data has tags


def ranker_features(tags: bool) -> tuple[str, ...]:
    """The ranker's features of a run with (or without) tags, in column order."""
    return (*RANKER_FEATURES, *TAG_FEATURES) if tags else RANKER_FEATURES


_SCORED_COLUMNS = [FEATURES.index(s) for s in (*SCORED, "popularity")]
_SOURCE_COLUMNS = [FEATURES.index(s) for s in SOURCES]


def candidate_features(candidates: Candidates, known: bool) -> np.ndarray:
    """``(C, len(GATEWAY_FEATURES))`` float32 for one listener's candidates, and the
    :data:`TAG_FEATURES` after them when the candidates carry tags.

    Every scored source (and popularity) is one row of a ``(5, C)`` array, so each derived
    feature is one NumPy call over all of them (the gateway computes this per request); each
    row is reduced along its contiguous axis, so the figures equal :func:`zscore` and
    :func:`ranks` of that column alone, bit for bit."""
    raw = np.asarray(candidates.features, np.float64)
    n = raw.shape[0]
    tags = candidates.tags
    out = np.empty((n, len(GATEWAY_FEATURES) + (0 if tags is None else len(TAG_FEATURES))),
                   np.float32)  # fmt: skip
    if n == 0:
        return out
    rows = np.ascontiguousarray(raw[:, _SCORED_COLUMNS].T)  # (5, C): 4 sources, popularity
    z, r = zscore_rows(rows), rank_rows(rows)
    top = rows[:4].max(axis=1, keepdims=True)
    share = np.divide(rows[:4], top, out=np.zeros((4, n)), where=top > 0)
    grouped = np.stack([rows[:4], z[:4], r[:4], share], axis=1).reshape(16, n)  # per source
    out[:, :16] = grouped.T
    out[:, 16], out[:, 17], out[:, 18] = rows[4], z[4], r[4]
    out[:, 19] = np.count_nonzero(raw[:, _SOURCE_COLUMNS], axis=1)
    out[:, 20 : 20 + len(LISTENER)] = np.asarray(candidates.listener, np.float64)
    out[:, len(GATEWAY_FEATURES) - 1] = float(known)
    if tags is not None:
        out[:, len(GATEWAY_FEATURES) :] = tag_columns(tags)
    return out


def tag_columns(tags: np.ndarray) -> np.ndarray:
    """``(C, 4)`` :data:`TAG_FEATURES` from the candidates' ``(C, 2)`` tag_sim and tagged."""
    sim = np.asarray(tags[:, 0], np.float64)[None, :]
    return np.column_stack([sim[0], zscore_rows(sim)[0], rank_rows(sim)[0], tags[:, 1]])


def zscore_rows(rows: np.ndarray) -> np.ndarray:
    """:func:`zscore` of each row of a 2-D float64 array."""
    std = rows.std(axis=1, keepdims=True)
    centred = rows - rows.mean(axis=1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(rows), where=std > 0)


def rank_rows(rows: np.ndarray) -> np.ndarray:
    """:func:`ranks` of each row of a 2-D array: the position of a value's first tie in the
    row sorted from the highest, as ``log1p``."""
    n_rows, n = rows.shape
    flat = (np.argsort(-rows, axis=1, kind="stable") + np.arange(0, n_rows * n, n)[:, None]).ravel()
    ordered = rows.ravel()[flat].reshape(n_rows, n)
    first = np.ones(rows.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0), axis=1)
    out = np.empty(n_rows * n, np.float64)
    out[flat] = start.ravel()
    return np.log1p(out.reshape(n_rows, n))


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
