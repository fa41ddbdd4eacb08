"""A real quality check on real data: the trained dnn beats popularity on HetRec Last.fm.

A reduced run (few epochs, no early stopping) keeps it to a couple of minutes on two cores;
benchmarks/quality.py runs the full comparison.
"""

from __future__ import annotations

import dataclasses

import pytest

from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import DNNConfig, DNNRecommender, Popularity
from training.split import SplitConfig, split_interactions

pytestmark = pytest.mark.slow

REDUCED_EPOCHS = 6


def test_dnn_beats_popularity_on_hetrec(hetrec):
    split = split_interactions(hetrec.matrix, SplitConfig())
    popularity = Popularity().fit(split.train_full)
    cfg = dataclasses.replace(DNNConfig(), max_epochs=REDUCED_EPOCHS, patience=REDUCED_EPOCHS)
    dnn = DNNRecommender(cfg).fit(split.train, split.val)
    pop_known = evaluate_known_users(popularity, split)["ndcg@10"]
    dnn_known = evaluate_known_users(dnn, split)["ndcg@10"]
    assert dnn_known > 1.2 * pop_known, (dnn_known, pop_known)
    # The new-user path (similar known users, summed scores) must beat it too.
    pop_new = evaluate_new_users(popularity, split)["ndcg@10"]
    dnn_new = evaluate_new_users(dnn, split)["ndcg@10"]
    assert dnn_new > pop_new, (dnn_new, pop_new)
