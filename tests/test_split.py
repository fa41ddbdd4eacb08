"""The evaluation protocol: no held-out pair leaks into training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.split import SplitConfig, split_interactions


def pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


@pytest.fixture(scope="module")
def split(hetrec):
    return split_interactions(hetrec.matrix, SplitConfig(seed=1))


def test_no_leakage_and_nothing_lost(hetrec, split):
    train, val, test = pairs(split.train), pairs(split.val), pairs(split.test)
    history, targets = pairs(split.new_user_history), pairs(split.new_user_targets)
    parts = [train, val, test, history, targets]
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            assert not a & b
    assert set().union(*parts) == pairs(hetrec.matrix)
    # Held-out users have no row at all in what models train on.
    new = set(split.new_users.tolist())
    assert not {u for u, _ in train | val} & new
    assert {u for u, _ in history | targets} == new
    # Values are the original play counts.
    total = split.train + split.val + split.test + split.new_user_history + split.new_user_targets
    assert abs(total - hetrec.matrix).max() == 0


def test_fractions_follow_the_config(hetrec, split):
    cfg = split.config
    eligible = (np.diff(hetrec.matrix.indptr) >= cfg.min_user_artists).sum()
    assert len(split.new_users) == round(cfg.new_user_fraction * eligible)
    test_share = split.test.nnz / (split.test.nnz + split.train_full.nnz)
    assert 0.17 < test_share < 0.23
    # Every evaluated user keeps some history to be scored from.
    for u in np.flatnonzero(np.diff(split.test.indptr)):
        assert split.train_full[u].nnz > 0


def test_split_is_deterministic_per_seed(hetrec):
    a = split_interactions(hetrec.matrix, SplitConfig(seed=5))
    b = split_interactions(hetrec.matrix, SplitConfig(seed=5))
    c = split_interactions(hetrec.matrix, SplitConfig(seed=6))
    assert (a.test != b.test).nnz == 0
    assert (a.test != c.test).nnz > 0


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="test_fraction"):
        SplitConfig(test_fraction=1.5)
