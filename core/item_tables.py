"""Stage 1's item-item table: for each artist its ``n`` nearest artists, computed at export.

Two similarities, chosen by :class:`core.candidates.CandidateConfig`'s ``item_similarity``
(stored in each version's manifest; the gateway serves whichever table the version ships):

* ``"cosine"``: cosine similarity over ``log1p`` plays (the item-kNN baseline's);
* ``"rp3beta"`` (Paudel et al., 2016; Dacrema et al., 2019): the probability of a two-step
  random walk artist -> listener -> artist over binary plays, ``P_iu @ P_ui`` with each step's
  rows normalised to sum to 1, divided by the target artist's listeners to the power ``beta``
  (``beta`` = 0 is the plain walk, which favours popular artists; larger values favour the tail).

Both count each user with their ``max_user_artists`` most-played artists only (co-occurrence
costs the square of a history's length, and a heavy listener's long tail says little about which
artists go together) and compute rows in chunks sized so the product holds about
:data:`_PRODUCT_BUDGET` entries at a time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from core.similarity import l2_normalize_rows, log_weights

_PRODUCT_BUDGET = 20_000_000  # co-occurrence entries computed at once (bounds memory)


def item_neighbour_table(
    plays: sp.csr_matrix, n: int, max_user_artists: int = 200
) -> sp.csr_matrix:
    """Artists x artists cosine similarity over ``log1p`` plays, each row pruned to its ``n``
    largest entries (the diagonal left out)."""
    capped = _top_per_row(sp.csr_matrix(plays, dtype=np.float32), max_user_artists)
    items = l2_normalize_rows(log_weights(capped).T.tocsr())  # artists x users
    return _pruned_product(items, sp.csr_matrix(items.T), n)


def rp3beta_neighbour_table(
    plays: sp.csr_matrix, n: int, beta: float, max_user_artists: int = 200
) -> sp.csr_matrix:
    """Artists x artists RP3beta weights (module docstring), each row pruned to its ``n``
    largest entries (the diagonal left out), scaled so the largest weight is 1."""
    capped = _top_per_row(sp.csr_matrix(plays, dtype=np.float32), max_user_artists)
    binary = sp.csr_matrix(capped, dtype=np.float64)
    binary.data[:] = 1.0
    listeners = np.asarray(binary.sum(axis=0), np.float64).ravel()
    history = np.asarray(binary.sum(axis=1), np.float64).ravel()
    to_users = sp.diags(1.0 / np.maximum(listeners, 1.0)) @ binary.T.tocsr()  # artists x users
    penalty = 1.0 / np.maximum(listeners, 1.0) ** beta
    to_artists = sp.diags(1.0 / np.maximum(history, 1.0)) @ binary @ sp.diags(penalty)
    table = _pruned_product(sp.csr_matrix(to_users), sp.csr_matrix(to_artists), n)
    top = float(table.data.max(initial=0.0))
    if top > 0:
        table.data /= top
    return table


def _pruned_product(left: sp.csr_matrix, right: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``left @ right`` (artists x users x artists), diagonal dropped, each row's ``n`` largest
    entries kept; float32, indices sorted. Rows are computed a chunk at a time."""
    # Upper bound of each row's product entries: the summed history lengths of its users.
    cost = left.astype(bool).astype(np.float64) @ np.diff(right.indptr).astype(np.float64)
    n_artists = left.shape[0]
    parts, start = [], 0
    while start < n_artists:
        stop = int(np.searchsorted(np.cumsum(cost[start:]), _PRODUCT_BUDGET)) + start + 1
        stop = min(max(stop, start + 1), n_artists)
        sim = (left[start:stop] @ right).tocsr()
        _drop_diagonal(sim, start)
        sim.eliminate_zeros()
        parts.append(_top_per_row(sim, n))
        start = stop
    table = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((n_artists, n_artists))
    table = sp.csr_matrix(table, dtype=np.float32)
    table.sort_indices()
    return table


def _drop_diagonal(sim: sp.csr_matrix, offset: int) -> None:
    """Zero the entries of rows ``i`` at column ``offset + i`` (in place)."""
    rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
    sim.data[sim.indices == rows + offset] = 0.0


def _top_per_row(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Each row's ``n`` largest entries (which of equal values at the cut is kept is arbitrary:
    kept as it is so that cosine tables equal those of earlier versions, entry for entry)."""
    m = sp.csr_matrix(m)
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= n:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    span = float(np.abs(m.data).max(initial=0.0)) or 1.0
    # One float64 key: the row, then the value descending inside it (|values| <= span).
    key = rows + (1.0 - m.data.astype(np.float64) / span) * 0.25
    order = np.argsort(key)
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = np.sort(order[rank < n])
    indptr = np.r_[0, np.cumsum(np.minimum(counts, n))]
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)
