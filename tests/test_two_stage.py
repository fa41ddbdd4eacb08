"""Two-stage serving offline: stage-1 candidates, the blend, the candidate_scorer ONNX model and
its parity gate, and the two-stage recommender that the gateway must reproduce."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from onnx import numpy_helper

from core.candidates import (
    FEATURES,
    Blend,
    CandidateConfig,
    CandidateIndex,
    TwoStageSettings,
    rank_candidates,
)
from core.item_tables import item_neighbour_table, rp3beta_neighbour_table
from core.similarity import SimilarityIndex, user_vectors
from export.onnx_models import candidate_scorer
from export.parity import ParityError, check_candidate_scorer, session
from tests.conftest import community_matrix
from training.models.neighbors import ItemKNN, neighbour_sum
from training.models.network import CatalogueScorer, NetworkWeights
from training.two_stage import top_k_ordered


def test_item_table_is_item_knns_pruned_similarity():
    plays = community_matrix(seed=1)
    table = item_neighbour_table(plays, 7)
    reference = ItemKNN(k=7).fit(plays).sim_
    assert (np.diff(table.indptr) <= 7).all() and table.diagonal().sum() == 0
    np.testing.assert_allclose(table.toarray(), reference.toarray(), atol=1e-6)


def test_item_table_chunks_agree_with_one_pass(monkeypatch):
    import core.item_tables as item_tables

    plays = community_matrix(n_users=80, n_artists=90, seed=5)
    whole = item_neighbour_table(plays, 5).toarray()
    whole_rp3 = rp3beta_neighbour_table(plays, 5, 0.5)
    monkeypatch.setattr(item_tables, "_PRODUCT_BUDGET", 50)  # chunks of a few rows
    np.testing.assert_allclose(item_neighbour_table(plays, 5).toarray(), whole, atol=1e-6)
    # RP3beta's binary walk has ties at the cut: each row keeps the same weights
    assert_same_kept_weights(rp3beta_neighbour_table(plays, 5, 0.5), whole_rp3)


def assert_same_kept_weights(table: sp.csr_matrix, expected: sp.csr_matrix) -> None:
    """Row by row, the same multiset of kept weights (which of tied columns is kept may vary)."""
    for i in range(table.shape[0]):
        got = np.sort(table.data[table.indptr[i] : table.indptr[i + 1]])
        want = np.sort(expected.data[expected.indptr[i] : expected.indptr[i + 1]])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_rp3beta_table_is_the_two_step_walk_penalised_by_popularity_and_pruned():
    plays = community_matrix(n_users=60, n_artists=40, seed=3)
    binary = (plays.toarray() > 0).astype(np.float64)
    listeners, history = binary.sum(0), binary.sum(1)
    to_users = binary.T / np.maximum(listeners, 1)[:, None]
    walk = to_users @ (binary / np.maximum(history, 1)[:, None])
    walk /= np.maximum(listeners, 1) ** 0.7
    np.fill_diagonal(walk, 0.0)
    walk /= walk.max()
    expected = np.zeros_like(walk)
    for i, row in enumerate(walk):  # each row's 6 largest
        top = np.argsort(-row, kind="stable")[:6]
        expected[i, top] = row[top]
    table = rp3beta_neighbour_table(plays, 6, 0.7)
    assert (np.diff(table.indptr) <= 6).all() and table.diagonal().sum() == 0
    assert_same_kept_weights(table, sp.csr_matrix(expected))
    rows, cols = table.nonzero()  # every kept entry is the walk's weight there
    np.testing.assert_allclose(np.asarray(table[rows, cols]).ravel(), walk[rows, cols], atol=1e-6)
    # beta = 0 is the plain walk: its neighbours are more popular than with a penalty
    plain = rp3beta_neighbour_table(plays, 6, 0.0)
    assert listeners[plain.indices].mean() > listeners[table.indices].mean()


def test_item_similarity_is_validated_and_chooses_the_table():
    with pytest.raises(ValueError, match="item_similarity"):
        CandidateConfig(item_similarity="jaccard")
    with pytest.raises(ValueError, match="rp3_beta"):
        CandidateConfig(rp3_beta=-0.1)
    assert CandidateConfig().item_similarity == "cosine"  # the validation choice, see docs
    settings = TwoStageSettings(CandidateConfig(item_similarity="rp3beta", rp3_beta=0.3))
    assert TwoStageSettings.from_dict(settings.to_dict()) == settings
    plays = community_matrix(seed=4)
    cosine = CandidateConfig(item_neighbours=7).item_table(plays)
    np.testing.assert_allclose(cosine.toarray(), item_neighbour_table(plays, 7).toarray())
    rp3 = CandidateConfig(item_similarity="rp3beta", item_neighbours=7, rp3_beta=0.3)
    np.testing.assert_allclose(rp3.item_table(plays).toarray(),
                               rp3beta_neighbour_table(plays, 7, 0.3).toarray())  # fmt: skip


def test_item_table_counts_each_users_most_played_artists_only():
    plays = sp.csr_matrix(np.array([[5, 4, 1, 0], [3, 0, 2, 1], [0, 1, 0, 6]], np.float32))
    capped = item_neighbour_table(plays, 3, max_user_artists=2)
    top2 = sp.csr_matrix(np.array([[5, 4, 0, 0], [3, 0, 2, 0], [0, 1, 0, 6]], np.float32))
    np.testing.assert_allclose(capped.toarray(), item_neighbour_table(top2, 3).toarray())
    assert capped[0, 3] == 0 and item_neighbour_table(plays, 3)[0, 3] > 0


def test_candidates_come_from_neighbours_items_and_popularity_without_played():
    plays = community_matrix(seed=2)
    config = CandidateConfig(neighbours=5, item_neighbours=10, popular=4, max_candidates=1000)
    index = CandidateIndex(plays, item_neighbour_table(plays, 10), config)
    history = plays[0]
    idx, sims = SimilarityIndex(plays).query(history, 5, exclude=np.array([0]))
    found = index.candidates(history, idx[0], sims[0])
    played = set(history.indices)
    assert not played & set(found.artists.tolist())
    neighbours_artists = set(plays[idx[0][idx[0] >= 0]].indices) - played
    popular = set(np.argsort(-np.diff(plays.tocsc().indptr), kind="stable")[:4]) - played
    assert neighbours_artists | popular <= set(found.artists.tolist())
    # Features: the user-kNN score, the item-kNN score and log listeners, per candidate.
    expected_nb = neighbour_sum(idx, sims, user_vectors(plays))[0, found.artists]
    np.testing.assert_allclose(found.features[:, 0], expected_nb, rtol=1e-5, atol=1e-6)
    expected_item = ItemKNN(k=10).fit(plays).score_histories(history)[0, found.artists]
    np.testing.assert_allclose(found.features[:, 1], expected_item, rtol=1e-5, atol=1e-6)
    listeners = np.diff(plays.tocsc().indptr)[found.artists]
    np.testing.assert_allclose(found.features[:, 2], np.log1p(listeners), rtol=1e-6)


def test_candidates_are_capped_by_the_cheap_score():
    plays = community_matrix(seed=3)
    index = CandidateIndex(plays, item_neighbour_table(plays, 10),
                           CandidateConfig(max_candidates=6, popular=2))  # fmt: skip
    idx, sims = SimilarityIndex(plays).query(plays[1], 10, exclude=np.array([1]))
    capped = index.candidates(plays[1], idx[0], sims[0])
    assert len(capped.artists) == 6
    wide = CandidateIndex(plays, index.item_table, CandidateConfig(max_candidates=1000, popular=2))
    everything = wide.candidates(plays[1], idx[0], sims[0])
    # The cap keeps the first six of the uncapped pool in cheap-score order.
    assert capped.artists.tolist() == everything.artists[:6].tolist()


def test_blend_of_the_dnn_alone_ranks_by_the_dnn_and_ties_go_to_the_lower_artist():
    artists = np.array([9, 3, 5, 7])
    dnn = np.array([0.5, 2.0, 0.5, -1.0], np.float32)
    features = np.random.default_rng(0).random((4, len(FEATURES))).astype(np.float32)
    final = Blend().score(dnn, features)
    assert artists[rank_candidates(artists, final, 4)].tolist() == [3, 5, 9, 7]
    # A feature-only blend follows that feature.
    by_item = Blend(dnn=0.0, item_knn=1.0).score(dnn, features)
    assert rank_candidates(artists, by_item, 1)[0] == int(np.argmax(features[:, 1]))


def test_settings_round_trip_and_reject_nonsense():
    settings = TwoStageSettings(CandidateConfig(max_candidates=300), Blend(1.0, 0.5),
                                Blend(0.0, 1.0, 2.0, 0.25), {"known": {"users": 3}})  # fmt: skip
    assert TwoStageSettings.from_dict(settings.to_dict()) == settings
    assert TwoStageSettings.from_dict(None) == TwoStageSettings()
    with pytest.raises(ValueError, match="max_candidates"):
        CandidateConfig(max_candidates=0)


def test_candidate_scorer_is_the_weighted_pairwise_sum_with_masked_slots(network):
    proto = candidate_scorer(NetworkWeights.from_model(network))
    report = check_candidate_scorer(network, proto, candidates=50)
    assert report.max_abs_diff <= 1e-4
    users, weights = np.array([[4, 9, 0]]), np.array([[0.7, 0.3, 0.0]], np.float32)
    chosen = np.array([[10, 3, 59, 0]])
    mask = np.array([[True, True, True, False]])
    (scores,) = session(proto).run(["scores"], {"users": users, "weights": weights,
                                               "candidates": chosen, "mask": mask})  # fmt: skip
    grid = CatalogueScorer.from_model(network).score_users(np.array([4, 9]))
    expected = 0.7 * grid[0, [10, 3, 59]] + 0.3 * grid[1, [10, 3, 59]]
    np.testing.assert_allclose(scores[0, :3], expected, atol=1e-5)
    assert np.isneginf(scores[0, 3])


def test_candidate_parity_gate_refuses_a_tampered_model(network):
    proto = candidate_scorer(NetworkWeights.from_model(network))
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    for init in tampered.graph.initializer:
        if init.name == "out_bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.01, "out_bias"))
    with pytest.raises(ParityError, match="candidate_scorer"):
        check_candidate_scorer(network, tampered)


def test_two_stage_recommender_ranks_only_candidates_with_the_blend(network):
    from training.models.dnn import NetworkRecommender
    from training.two_stage import TwoStageRecommender, candidate_recall, tune_two_stage

    plays = community_matrix(seed=4)
    rec = NetworkRecommender.from_trained(network, plays)
    config = CandidateConfig(max_candidates=12, popular=3)
    two = TwoStageRecommender(rec, TwoStageSettings(config)).fit(plays)
    scores = two.score_users(np.array([0, 5]))
    stage1 = two.stage1_users(np.array([0, 5]))
    for row, c in zip(scores, stage1.candidates, strict=True):
        assert set(np.flatnonzero(np.isfinite(row))) == set(c.artists.tolist())
    dnn = rec.score_users(np.array([0]))[0, stage1.candidates[0].artists]
    np.testing.assert_allclose(scores[0, stage1.candidates[0].artists],
                               Blend().score(dnn, stage1.candidates[0].features),
                               atol=1e-5)  # fmt: skip
    assert candidate_recall(stage1, plays[[0, 5]])["candidate_recall"] == 0.0  # all played
    # Tuning picks, on validation, a blend at least as good as the DNN alone.
    rng = np.random.default_rng(0)
    val_mask = rng.random(plays.nnz) < 0.2
    coo = plays.tocoo()
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=plays.shape)  # noqa: E731
    settings = tune_two_stage(rec, part(~val_mask), part(val_mask), config)
    for who in ("known", "history"):
        seen = settings.validation[who]
        assert seen["ndcg_blend"] >= seen["ndcg_dnn_only"] and seen["users"] > 0
        assert 0 < seen["median_candidates"] <= 12


def test_the_blend_grids_top_k_equals_a_whole_row_sort_ties_included():
    """The blend tuning sorted every candidate row 600 times (101 s of the demo's training);
    the partitioned top-k must give the whole-row lexsort's answer, ties broken the same."""
    rng = np.random.default_rng(0)
    artists = np.stack([rng.permutation(5000)[:300] for _ in range(400)])
    for scale in (0.1, 1.0, 1e6):  # many ties at 0.1 (the whole-row fallback), none at 1e6
        scores = np.round(rng.normal(size=artists.shape) * scale)
        scores[:, rng.integers(0, 300, 400)] = -np.inf
        scores[:5, 3:] = -np.inf  # fewer finite scores than k
        order = np.lexsort((artists, -scores), axis=1)[:, :10]
        whole = np.where(np.isfinite(np.take_along_axis(scores, order, 1)),
                         np.take_along_axis(artists, order, 1), -1)  # fmt: skip
        assert np.array_equal(top_k_ordered(scores, artists, 10), whole)


def test_the_threaded_blend_grid_picks_the_first_best_of_a_plain_per_listener_loop():
    """The grid is scored on threads over all listeners at once; its choice must be what
    ranking each listener alone with ``Blend.score`` and taking the first best gives."""
    import itertools

    from core.candidates import Candidates
    from training.metrics import ranking_metrics
    from training.two_stage import DNN_GRID, FEATURE_GRID, _Stage1, _tune

    rng = np.random.default_rng(3)
    lists = [rng.choice(400, size=int(rng.integers(15, 60)), replace=False) for _ in range(120)]
    stage1 = _Stage1([Candidates(a, rng.random((len(a), len(FEATURES))).astype(np.float32))
                      for a in lists],
                     [rng.normal(size=len(a)).astype(np.float32) for a in lists])  # fmt: skip
    rows = [rng.choice(a, size=3, replace=False) for a in lists]
    targets = sp.csr_matrix((np.ones(360), np.concatenate(rows), np.arange(0, 361, 3)),
                            shape=(120, 400))  # fmt: skip
    best, best_ndcg = None, -1.0
    for w in itertools.product(DNN_GRID, *FEATURE_GRID.values()):
        if not any(w):
            continue
        blend = Blend(w[0], **dict(zip(FEATURE_GRID, w[1:], strict=True)))
        top = np.full((120, 10), -1)
        for i, (c, dnn) in enumerate(zip(stage1.candidates, stage1.dnn, strict=True)):
            order = rank_candidates(c.artists, blend.score(dnn, c.features), 10)
            top[i, : len(order)] = c.artists[order]
        ndcg = ranking_metrics(top, targets)["ndcg@10"]
        if ndcg > best_ndcg + 1e-9:
            best, best_ndcg = blend, ndcg
    for threads in (1, 2):
        chosen, seen = _tune(stage1, targets, 10, threads=threads)
        assert chosen == best and seen["ndcg_blend"] == pytest.approx(best_ndcg, abs=1e-6)


def test_the_default_item_table_is_the_one_validation_chose():
    import json

    from benchmarks.item_table_choice import CHOICES, RESULTS, chosen

    recorded = json.loads(RESULTS.read_text())
    assert recorded["judged_on"] == "validation plays only"
    assert recorded["chosen"] == chosen(recorded["per_seed"])
    choice, default = CHOICES[recorded["chosen"]], CandidateConfig()
    assert (choice.item_similarity, choice.rp3_beta) == (default.item_similarity, default.rp3_beta)


def test_an_item_table_replaces_the_default_only_when_better_on_every_seed_by_the_margin():
    from benchmarks.item_table_choice import CHOICES, chosen

    def seeds(**gain):
        return {str(s): {name: 0.16 + gain.get(name, [0.0] * 3)[s] for name in CHOICES}
                for s in range(3)}  # fmt: skip

    assert chosen(seeds()) == "cosine"
    assert chosen(seeds(**{"rp3beta_0.5": [0.003, 0.003, 0.003]})) == "rp3beta_0.5"
    assert chosen(seeds(**{"rp3beta_0.5": [0.009, 0.001, -0.0001]})) == "cosine"  # one seed
    assert chosen(seeds(**{"rp3beta_0.5": [0.001, 0.001, 0.001]})) == "cosine"  # the margin
    both = {"rp3beta_0.3": [0.003] * 3, "rp3beta_0.7": [0.004] * 3}
    assert chosen(seeds(**both)) == "rp3beta_0.7"
