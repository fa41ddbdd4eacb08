"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.metrics import ranking_metrics


def relevant(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [c for row in rows for c in row]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


def test_single_user_by_hand():
    # List [3, 1, 7, 5], relevant {1, 5, 9}: hits at ranks 2 and 4.
    m = ranking_metrics(np.array([[3, 1, 7, 5]]), relevant([[1, 5, 9]]), n_items=10)
    assert m["precision@4"] == pytest.approx(2 / 4)
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)
    assert m["hit@4"] == 1.0
    assert m["coverage"] == pytest.approx(4 / 10)


def test_means_skip_users_without_targets_and_padding_never_hits():
    top = np.array([[0, 1], [2, -1], [4, 5]])
    rel = relevant([[0], [2], []])
    m = ranking_metrics(top, rel, n_items=6)
    assert m["users"] == 2
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["ndcg@2"] == pytest.approx(1.0)  # both users have their one target first
    assert m["map@2"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(5 / 6)


def test_perfect_and_empty_lists():
    rel = relevant([[1, 2, 3]])
    assert ranking_metrics(np.array([[1, 2, 3]]), rel)["ndcg@3"] == pytest.approx(1.0)
    worst = ranking_metrics(np.array([[4, 5, 6]]), rel)
    assert worst["ndcg@3"] == 0.0 and worst["hit@3"] == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one row per relevant row"):
        ranking_metrics(np.array([[1, 2]]), relevant([[1], [2]]))
