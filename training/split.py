"""Evaluation protocol: per-user holdout for known users, and held-out users for the new-user path.

Every matrix keeps the full users x artists shape of the source data, so indices never need
translating. For a seeded split:

* ``new_users``: a share of eligible users (>= ``min_user_artists`` artists) removed from training
  entirely. Each one's artists are split into a ``new_user_history`` (what a listener would send
  us) and ``new_user_targets`` (what we should recommend).
* every other eligible user: ``test_fraction`` of their artists (at least one) go to ``test``;
* of those users, a ``val_user_fraction`` share (all, by default) also give ``val_fraction`` of
  their remaining artists (at least one) to ``val``: the DNN early-stops on it, and it holds
  the labels the two-stage blend and the learned ranker are tuned on (never the test plays);
* everything else is ``train``. Users with too few artists stay whole in ``train``.

Nothing in ``test``, ``val`` or ``new_user_*`` is in ``train`` (tested in tests/test_split.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class SplitConfig:
    """Knobs of the protocol; stored with every run and in quality.json."""

    test_fraction: float = 0.2
    new_user_fraction: float = 0.1
    val_user_fraction: float = 1.0  # every known user: the learned ranker's labels
    val_fraction: float = 0.15
    min_user_artists: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("test_fraction", "new_user_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not 0.0 <= self.val_user_fraction <= 1.0:
            raise ValueError(f"val_user_fraction must be in [0, 1], got {self.val_user_fraction}")
        if self.min_user_artists < 2:
            raise ValueError("min_user_artists must be >= 2 so every evaluated user keeps history")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """The matrices of one split (all users x artists, CSR, play counts)."""

    train: sp.csr_matrix
    val: sp.csr_matrix
    test: sp.csr_matrix
    new_user_history: sp.csr_matrix
    new_user_targets: sp.csr_matrix
    new_users: np.ndarray
    config: SplitConfig

    @property
    def train_full(self) -> sp.csr_matrix:
        """Train plus validation pairs: what models without early stopping fit on."""
        return (self.train + self.val).tocsr()

    def summary(self) -> dict[str, int]:
        rows = lambda m: int((np.diff(m.indptr) > 0).sum())  # noqa: E731
        return {
            "train_pairs": int(self.train.nnz),
            "val_pairs": int(self.val.nnz),
            "test_pairs": int(self.test.nnz),
            "test_users": rows(self.test),
            "val_users": rows(self.val),
            "new_users": len(self.new_users),
            "new_user_history_pairs": int(self.new_user_history.nnz),
            "new_user_target_pairs": int(self.new_user_targets.nnz),
        }


def _holdout_mask(
    m: sp.csr_matrix, users: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask over ``m.data``: ``fraction`` (>= 1 entry) of each listed user's entries."""
    mask = np.zeros(m.nnz, bool)
    for u in users:
        lo, hi = m.indptr[u], m.indptr[u + 1]
        n = hi - lo
        k = min(n - 1, max(1, round(fraction * n)))
        if k > 0:
            mask[lo + rng.choice(n, size=k, replace=False)] = True
    return mask


def _masked(m: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    out = m.copy()
    out.data = np.where(keep, out.data, 0).astype(m.dtype)
    out.eliminate_zeros()
    return out


def _rows(m: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
    keep = np.zeros(m.shape[0], np.float32)
    keep[users] = 1
    return sp.csr_matrix(sp.diags(keep) @ m)


def split_interactions(matrix: sp.csr_matrix, cfg: SplitConfig = SplitConfig()) -> Split:
    """Split a users x artists matrix following the module's protocol."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    rng = np.random.default_rng(cfg.seed)
    eligible = np.flatnonzero(np.diff(m.indptr) >= cfg.min_user_artists)
    n_new = int(round(cfg.new_user_fraction * len(eligible)))
    shuffled = rng.permutation(eligible)
    new_users = np.sort(shuffled[:n_new])
    known = np.sort(shuffled[n_new:])
    val_users = np.sort(rng.permutation(known)[: int(round(cfg.val_user_fraction * len(known)))])

    new_part = _rows(m, new_users)
    known_part = (m - new_part).tocsr()
    known_part.eliminate_zeros()

    nu_mask = _holdout_mask(new_part, new_users, cfg.test_fraction, rng)
    test_mask = _holdout_mask(known_part, known, cfg.test_fraction, rng)
    test = _masked(known_part, test_mask)
    rest = _masked(known_part, ~test_mask)
    val_mask = _holdout_mask(rest, val_users, cfg.val_fraction, rng)
    return Split(
        train=_masked(rest, ~val_mask),
        val=_masked(rest, val_mask),
        test=test,
        new_user_history=_masked(new_part, ~nu_mask),
        new_user_targets=_masked(new_part, nu_mask),
        new_users=new_users,
        config=cfg,
    )
