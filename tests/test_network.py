"""The seed network and its whole-catalogue scorer agree with Keras."""

from __future__ import annotations

import numpy as np

from core.contract import ARTIST_INPUT, USER_INPUT
from training.models.network import CatalogueScorer, build_network


def test_architecture_matches_the_report():
    model = build_network(50, 80)
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    assert shapes == {
        "user_embedding/embeddings": (50, 100),
        "artist_embedding/embeddings": (80, 100),
        "hidden/kernel": (200, 128),
        "hidden/bias": (128,),
        "score/kernel": (128, 1),
        "score/bias": (1,),
    }
    assert model.get_layer("hidden").activation.__name__ == "relu"


def test_catalogue_scorer_equals_pairwise_keras():
    model = build_network(40, 300, seed=3)
    rng = np.random.default_rng(0)
    for w in model.weights:  # move away from the near-zero init so ReLU cuts matter
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    users = np.array([0, 7, 39])
    scorer = CatalogueScorer.from_model(model)
    fast = scorer.score_users(users)
    u = np.repeat(users, 300).reshape(-1, 1)
    a = np.tile(np.arange(300), len(users)).reshape(-1, 1)
    slow = model.predict({USER_INPUT: u, ARTIST_INPUT: a}, verbose=0, batch_size=4096)
    np.testing.assert_allclose(fast, slow.reshape(len(users), 300), atol=1e-4)
    groups = np.array([[0, 7, -1], [39, -1, -1]])
    weights = np.array([[0.5, 0.25, 0.0], [2.0, 0.0, 0.0]], np.float32)
    summed = scorer.score_groups(groups, weights)
    np.testing.assert_allclose(summed[0], 0.5 * fast[0] + 0.25 * fast[1], atol=1e-4)
    np.testing.assert_allclose(summed[1], 2.0 * fast[2], atol=1e-4)
