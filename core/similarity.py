"""Cosine similarity between listeners' artist histories, without a dense user x user matrix.

One code path for offline evaluation and the gateway, on two array backends: SciPy/NumPy on a
CPU, CuPy (``cupyx.scipy.sparse``) on a GPU. The known users' vectors are stored transposed
(artists x users, CSR), so a query touches only the rows of the artists it plays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)
BACKENDS = ("auto", "cpu", "gpu")


def as_csr(m: Any) -> sp.csr_matrix:
    """``m`` itself when it is a CSR matrix already (a request's one-row history), else a CSR
    copy: SciPy's constructor re-checks a matrix it is given, at a cost per request."""
    return m if type(m) is sp.csr_matrix else sp.csr_matrix(m)


def log_weights(m: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p`` of play counts: tames heavy listeners without discarding intensity."""
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.data = np.log1p(out.data)
    return out


def l2_normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty). Works on the CSR arrays directly:
    for the one-row queries of the request path, SciPy's general operators cost more than the
    arithmetic."""
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()
    lengths = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    norms = np.sqrt(np.bincount(rows, weights=np.square(m.data, dtype=np.float64),
                                minlength=m.shape[0]))  # fmt: skip
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    m.data *= np.repeat(inv, lengths).astype(np.float32)
    return m


def user_vectors(plays: sp.csr_matrix) -> sp.csr_matrix:
    """The vectors compared by cosine similarity: ``log1p`` play counts, L2-normalised rows."""
    return l2_normalize_rows(log_weights(plays))


def weighted_rows(m: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray):
    """The entries of ``m[rows]`` as (columns, values x that row's weight), concatenated: a
    sparse weighted sum of a few rows, left for the caller to accumulate, without SciPy's
    per-operation overhead or a vector as long as ``m`` is wide."""
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    starts, stops = m.indptr[rows], m.indptr[rows + 1]
    lengths = stops - starts
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return m.indices[offsets], m.data[offsets] * np.repeat(weights, lengths)


@dataclass(frozen=True)
class ArrayBackend:
    """Where the similarity product runs: ``xp`` (numpy/cupy) and its sparse module."""

    name: str
    xp: ModuleType
    sparse: ModuleType

    def to_device(self, m: sp.csr_matrix) -> Any:
        return m if self.name == "cpu" else self.sparse.csr_matrix(m)

    def to_host(self, a: Any) -> np.ndarray:
        return a if self.name == "cpu" else self.xp.asnumpy(a)


CPU = ArrayBackend("cpu", np, sp)


def array_backend(name: str = "auto") -> ArrayBackend:
    """``cpu``, ``gpu`` (CuPy; raises if unusable) or ``auto`` (GPU when CuPy sees a device)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cpu":
        return CPU
    try:
        import cupy
        import cupyx.scipy.sparse as cusparse

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # ImportError, CUDA driver errors
        if name == "gpu":
            raise ValueError(f"the gpu backend needs CuPy and a CUDA device: {exc}") from exc
        log.info("similarity on CPU (CuPy unavailable: %s)", exc)
        return CPU
    return ArrayBackend("gpu", cupy, cusparse)


def _top_n(xp: ModuleType, sims: Any, n: int) -> tuple[Any, Any]:
    """Per row, the ``n`` largest entries best first; ties go to the lower column index."""
    n_cols = sims.shape[1]
    n = min(n, n_cols)
    if n < n_cols:
        idx = xp.sort(xp.argpartition(-sims, n - 1, axis=1)[:, :n], axis=1)
    else:
        idx = xp.broadcast_to(xp.arange(n_cols), sims.shape).copy()
    top = xp.take_along_axis(sims, idx, axis=1)
    order = xp.argsort(-top, axis=1, kind="stable") if xp is np else xp.argsort(-top, axis=1)
    return xp.take_along_axis(idx, order, axis=1), xp.take_along_axis(top, order, axis=1)


class SimilarityIndex:
    """Known users' play vectors, ready for top-N cosine queries on the chosen backend."""

    def __init__(self, known_plays: sp.csr_matrix, backend: str | ArrayBackend = "cpu") -> None:
        self.backend = backend if isinstance(backend, ArrayBackend) else array_backend(backend)
        known = user_vectors(sp.csr_matrix(known_plays))
        self.n_users, self.n_artists = known.shape
        self._by_artist = self.backend.to_device(sp.csr_matrix(known.T))  # artists x users

    def query(
        self, histories: sp.csr_matrix, n: int = 10, *, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` most similar known users for each history row (raw play counts), best first.

        ``exclude[i]`` (optional; -1 for none) is a known-user index never returned for row
        ``i`` (the user itself). Returns ``(indices, similarities)``, each ``(rows, n)``; slots
        without a user of positive similarity hold index -1 and similarity 0.
        """
        if histories.shape[1] != self.n_artists:
            raise ValueError(f"histories have {histories.shape[1]} artists, not {self.n_artists}")
        b, xp = self.backend, self.backend.xp
        if b.name == "cpu" and histories.shape[0] == 1:
            sims = self._one_row(as_csr(histories))  # the request path
        else:
            q = b.to_device(user_vectors(sp.csr_matrix(histories)))
            sims = (q @ self._by_artist).toarray()  # rows x known users, a sparse product
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            sims[xp.asarray(rows), xp.asarray(exclude[rows])] = 0.0
        idx, top = (b.to_host(a) for a in _top_n(xp, sims, n))
        idx, top = idx.astype(np.int64), top.astype(np.float32)
        idx[top <= 0] = -1
        top[top <= 0] = 0.0
        return idx, top

    def _one_row(self, history: sp.csr_matrix) -> np.ndarray:
        """``user_vectors(history) @ by_artist`` for one row, on the CSR arrays: the rows of
        the artists it plays, weighted and summed (a gateway request's whole similarity)."""
        history = as_csr(history)
        history.sum_duplicates()
        weights = np.log1p(history.data.astype(np.float64))
        norm = float(np.sqrt(np.square(weights).sum()))
        if norm > 0:
            weights /= norm
        users, values = weighted_rows(self._by_artist, history.indices, weights)
        sims = np.bincount(users, weights=values, minlength=self.n_users)
        return sims.astype(np.float32)[None, :]
