"""Real quality checks on real data (HetRec Last.fm, one split): the trained dnn beats
popularity, and the served default (``ranked``) beats EASE, the strongest baseline, for known
users and for new listeners.

A reduced run (6 epochs, no early stopping, the blend's default settings, the ranker's base
settings untuned) keeps it to a few minutes on two cores; benchmarks/quality.py runs the full
comparison over five seeds.
"""

from __future__ import annotations

import dataclasses

import pytest

from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import DNNConfig, DNNRecommender, Popularity
from training.models.ease import EASE
from training.split import SplitConfig, split_interactions

pytestmark = pytest.mark.slow

REDUCED_EPOCHS = 6


@pytest.fixture(scope="module")
def fitted(hetrec):
    """Split seed 0 and the network trained briefly on it."""
    split = split_interactions(hetrec.matrix, SplitConfig())
    cfg = dataclasses.replace(DNNConfig(), max_epochs=REDUCED_EPOCHS, patience=REDUCED_EPOCHS)
    return split, DNNRecommender(cfg).fit(split.train, split.val)


def _ndcg(model, split) -> tuple[float, float]:
    return (evaluate_known_users(model, split)["ndcg@10"],
            evaluate_new_users(model, split)["ndcg@10"])  # fmt: skip


def test_dnn_beats_popularity_on_hetrec(fitted):
    split, dnn = fitted
    pop_known, pop_new = _ndcg(Popularity().fit(split.train_full), split)
    dnn_known, dnn_new = _ndcg(dnn, split)
    assert dnn_known > 1.2 * pop_known, (dnn_known, pop_known)
    assert dnn_new > pop_new, (dnn_new, pop_new)  # the new-user path (similar known users)


def test_the_served_default_beats_ease_on_hetrec(fitted):
    from core.candidates import TwoStageSettings
    from training.models.als import fit_als_factors
    from training.ranker import RankedRecommender, fit_ranker
    from training.two_stage import TwoStageRecommender

    split, dnn = fitted
    settings = TwoStageSettings()
    ranker = fit_ranker(TwoStageRecommender(dnn, settings).fit(split.train), split.val)
    dnn.use_known_plays(split.train_full)
    ranked = RankedRecommender(dnn, ranker, settings, als=fit_als_factors(split.train_full))
    served_known, served_new = _ndcg(ranked.fit(split.train_full), split)
    ease_known, ease_new = _ndcg(EASE().fit(split.train_full), split)
    assert served_known > ease_known, (served_known, ease_known)
    assert served_new > ease_new, (served_new, ease_new)


def test_the_ablations_leave_out_every_feature_group_the_ranker_has():
    """The ablation table must cover every source and feature group: a feature no ablation
    leaves out would never have to earn its place."""
    from benchmarks.quality import ABLATIONS
    from core.ranker_features import ranker_features

    covered = {f for group in ABLATIONS.values() for f in group}
    assert set(ranker_features(tags=True)) <= covered
