"""Top-K ranking metrics with binary relevance.

For one user with recommended list ``r_1..r_K`` (best first), relevant set ``T`` (their held-out
artists) and ``rel_i = 1 if r_i in T else 0``:

* ``precision@K`` = sum(rel_i) / K
* ``recall@K``    = sum(rel_i) / |T|
* ``map@K``       = (1 / min(|T|, K)) * sum_i rel_i * precision@i   (average precision, truncated)
* ``ndcg@K``      = DCG / IDCG, DCG = sum_i rel_i / log2(i + 1), IDCG = the DCG of a perfect list,
                    sum_{i <= min(|T|, K)} 1 / log2(i + 1)
* ``hit@K``       = 1 if any rel_i else 0

Each is averaged over users with a non-empty ``T``. ``coverage`` is the share of the catalogue
that appears in at least one user's list. Slots holding ``-1`` (no candidate left) never hit.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def relevance_matrix(top_k: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """``rel[u, i]`` = 1.0 if ``top_k[u, i]`` is in row ``u`` of ``relevant``."""
    n, k = top_k.shape
    rows = np.repeat(np.arange(n), k)
    cols = top_k.ravel()
    valid = cols >= 0
    rel = np.zeros(n * k, np.float64)
    binary = relevant.astype(bool).tocsr()
    rel[valid] = np.asarray(binary[rows[valid], cols[valid]]).ravel()
    return rel.reshape(n, k)


def ranking_metrics(
    top_k: np.ndarray, relevant: sp.csr_matrix, n_items: int | None = None
) -> dict[str, float]:
    """Mean top-K metrics of ``top_k`` (users x K item indices) against ``relevant`` rows.

    ``relevant`` must have one row per row of ``top_k``. Users without relevant items are left
    out of the means. Keys are ``"<name>@K"`` plus ``"coverage"`` (when ``n_items`` is given)
    and ``"users"`` (how many users were averaged).
    """
    top_k = np.asarray(top_k)
    if top_k.ndim != 2 or top_k.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"top_k must be (users, K) with one row per relevant row; got {top_k.shape} "
            f"and {relevant.shape}"
        )
    k = top_k.shape[1]
    n_rel = np.diff(relevant.tocsr().indptr)
    users = n_rel > 0
    rel = relevance_matrix(top_k, relevant)[users]
    n_rel = n_rel[users].astype(np.float64)
    hits = rel.sum(axis=1)
    ranks = np.arange(1, k + 1)
    discounts = 1.0 / np.log2(ranks + 1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k).astype(int) - 1]
    precision_at_i = np.cumsum(rel, axis=1) / ranks
    out = {
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / n_rel,
        f"map@{k}": (precision_at_i * rel).sum(axis=1) / np.minimum(n_rel, k),
        f"ndcg@{k}": (rel * discounts).sum(axis=1) / ideal,
        f"hit@{k}": (hits > 0).astype(np.float64),
    }
    result = {name: float(v.mean()) if len(v) else 0.0 for name, v in out.items()}
    if n_items is not None:
        shown = np.unique(top_k[top_k >= 0])
        result["coverage"] = len(shown) / n_items if n_items else 0.0
    result["users"] = int(users.sum())
    return result
