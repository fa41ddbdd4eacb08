"""Behaviour every recommender shares, on a matrix whose answer is known (three communities)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from core.ranking import top_k_excluding
from tests.conftest import community_matrix
from training.evaluation import recommend_histories, recommend_users
from training.models import ALS, EASE, ItemKNN, Popularity, UserKNN

PERSONALISED = [UserKNN, ItemKNN, EASE, ALS]


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    return community_matrix()


def community(artists: np.ndarray, n_artists: int = 60, communities: int = 3) -> np.ndarray:
    return artists // (n_artists // communities)


@pytest.mark.parametrize("cls", PERSONALISED, ids=lambda c: c.name)
def test_known_users_get_their_community(cls, matrix):
    model = cls().fit(matrix)
    users = np.arange(30)
    top = recommend_users(model, users, matrix, k=5)
    assert top.shape == (30, 5)
    same = community(top) == (users % 3)[:, None]
    assert same.mean() > 0.9
    # Nothing already played is recommended.
    for u, row in zip(users, top, strict=True):
        assert not set(row) & set(matrix[u].indices)


@pytest.mark.parametrize("cls", PERSONALISED, ids=lambda c: c.name)
def test_new_listeners_get_their_community(cls, matrix):
    model = cls().fit(matrix[:90])
    history = matrix[90:]
    top = recommend_histories(model, history, k=5)
    same = community(top) == (np.arange(90, 120) % 3)[:, None]
    assert same.mean() > 0.9


def test_popularity_ranks_by_user_count():
    m = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [5, 1, 0]], np.float32))
    model = Popularity().fit(m)
    assert list(model.score_users(np.array([0]))[0]) == [3, 1, 1]


def test_top_k_excludes_breaks_ties_and_pads():
    scores = np.array([[0.5, 0.9, 0.9, 0.1]], np.float32)
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 1]]))
    assert top_k_excluding(scores, exclude, 3).tolist() == [[1, 2, 0]]
    assert top_k_excluding(scores, exclude, 4).tolist() == [[1, 2, 0, -1]]


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_dnn_learns_the_communities(loss, matrix):
    from training.models import DNNConfig, DNNRecommender
    from training.split import SplitConfig, split_interactions

    split = split_interactions(matrix, SplitConfig(new_user_fraction=0.2, seed=2))
    cfg = DNNConfig(
        loss=loss,
        max_epochs=40,
        patience=40,
        batch_size=64,
        softmax_negatives=32,
        learning_rate=0.01,
    )
    model = DNNRecommender(cfg).fit(split.train, split.val)
    assert model.history_[-1]["loss"] < model.history_[0]["loss"]
    known = np.flatnonzero(np.diff(split.test.indptr))
    top = recommend_users(model, known, split.train_full, k=5)
    assert (community(top) == (known % 3)[:, None]).mean() > 0.8
    new = split.new_users
    top_new = recommend_histories(model, split.new_user_history[new], k=5)
    assert (community(top_new) == (new % 3)[:, None]).mean() > 0.8


def test_ease_caps_its_dense_catalogue_at_the_most_played(matrix):
    model = EASE(min_item_users=1, max_items=10).fit(matrix)
    played = np.diff(matrix.tocsc().indptr)
    assert len(model.items_) == 10
    assert played[model.items_].min() >= np.sort(played)[-10]
    scores = model.score_users(np.arange(3))
    outside = np.setdiff1d(np.arange(matrix.shape[1]), model.items_)
    assert np.isneginf(scores[:, outside]).all()
