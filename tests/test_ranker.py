"""The learned ranking stage offline: the EASE table, the ranker's features, LambdaRank on
validation labels, the ``candidate_ranker`` ONNX graph and its parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from onnx import numpy_helper

from core.candidates import FEATURES, LISTENER, CandidateConfig, Candidates, rank_candidates
from core.ease_table import ease_neighbour_table
from core.ranker_features import (
    GATEWAY_FEATURES,
    RANKER_FEATURES,
    SCORED,
    SOURCES,
    candidate_features,
    network_features,
    ranks,
    zscore,
)
from export.parity import ParityError, check_candidate_ranker, session
from export.ranker_model import candidate_ranker, ranker_trees
from export.request_batching import join
from tests.conftest import community_matrix
from training.models.ease import EASE
from training.models.network import NetworkWeights


@pytest.fixture(scope="module")
def trained(network):
    """A network and a ranker trained on a community matrix's held-out plays."""
    from training.models.dnn import NetworkRecommender
    from training.ranker import RankerConfig, fit_ranker
    from training.two_stage import TwoStageRecommender, TwoStageSettings

    plays = community_matrix(seed=4)
    rng = np.random.default_rng(0)
    held = rng.random(plays.nnz) < 0.25
    coo = plays.tocoo()
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=plays.shape)  # noqa: E731
    train, val = part(~held), part(held)
    rec = NetworkRecommender.from_trained(network, train)
    config = CandidateConfig(max_candidates=30, popular=5, ease_neighbours=10)
    inner = TwoStageRecommender(rec, TwoStageSettings(config)).fit(train)
    ranker = fit_ranker(inner, val, RankerConfig(trees=20, min_child_samples=5, leaves=7))
    return rec, inner, ranker, train, val


def test_ease_table_keeps_each_rows_weights_largest_in_magnitude():
    plays = community_matrix(seed=1)
    model = EASE(l2=50.0).fit(plays)
    table = ease_neighbour_table(plays, 5, l2=50.0, max_items=10_000)
    full = np.zeros((plays.shape[1],) * 2, np.float32)
    full[np.ix_(model.items_, model.items_)] = model.b_
    for i in range(plays.shape[1]):
        row = table[i].toarray()[0]
        kept = np.flatnonzero(row)
        assert len(kept) <= 5
        np.testing.assert_allclose(row[kept], full[i, kept], rtol=1e-5)
        if len(kept):  # nothing left out is larger than what was kept
            rest = np.delete(full[i], kept)
            assert np.abs(rest).max() <= np.abs(row[kept]).min() + 1e-6
    assert (table.data < 0).any() and (table.data > 0).any()  # negative weights are kept


def test_ease_table_covers_only_the_most_listened_artists_when_capped():
    plays = community_matrix(seed=2)
    listeners = np.diff(plays.tocsc().indptr)
    table = ease_neighbour_table(plays, 10, l2=50.0, max_items=8)
    covered = np.flatnonzero(np.diff(table.indptr) > 0)
    assert 0 < len(covered) <= 8
    assert listeners[covered].min() >= np.sort(listeners)[-8]


def test_features_rank_and_standardise_over_the_listeners_candidates():
    # neighbourhood, item_knn, popularity, ease, als
    raw = np.array([[0.5, 0.0, 2.0, 0.1, -0.2], [0.2, 1.0, 3.0, 0.0, 0.4],
                    [0.5, 0.3, 1.0, 0.0, 0.1]], np.float32)  # fmt: skip
    listener = np.array([np.log1p(4), 1.5, 0.9, 2], np.float32)
    x = candidate_features(Candidates(np.array([7, 3, 9]), raw, listener), known=True)
    col = lambda name: x[:, GATEWAY_FEATURES.index(name)]  # noqa: E731
    assert x.shape == (3, len(GATEWAY_FEATURES)) and x.dtype == np.float32
    np.testing.assert_allclose(col("neighbourhood_score"), raw[:, FEATURES.index("neighbourhood")])
    np.testing.assert_allclose(col("neighbourhood_rank"), np.log1p([0, 2, 0]))  # ties share
    np.testing.assert_allclose(col("item_knn_share"), [0.0, 1.0, 0.3], rtol=1e-6)
    assert abs(col("ease_z").mean()) < 1e-6 and abs(col("ease_z").std() - 1) < 1e-5
    np.testing.assert_allclose(col("sources"), [2, 2, 2])  # ALS is a feature, not a source
    np.testing.assert_allclose(col("als_rank"), np.log1p([2, 0, 1]))
    assert (col("known") == 1).all() and (x[:, -1 - len(LISTENER) : -1] == listener).all()
    assert candidate_features(Candidates(np.zeros(0, np.int64), raw[:0], listener), False).shape \
        == (0, len(GATEWAY_FEATURES))  # fmt: skip
    np.testing.assert_allclose(ranks(np.array([3.0, 1.0, 2.0])), np.log1p([0, 2, 1]))
    assert network_features(np.array([1.0, 1.0])).tolist() == [[1, 0], [1, 0]]


def test_features_computed_over_all_sources_at_once_equal_each_column_alone():
    """Issue 22: the gateway's one-call-per-feature version gives the per-column definitions'
    figures bit for bit (ties, constant and all-zero columns included)."""
    rng = np.random.default_rng(4)
    raw = rng.choice([0.0, 0.25, 0.5, 1.0, 3.0], size=(400, len(FEATURES))).astype(np.float32)
    raw[:, FEATURES.index("ease")] = 0.0  # all zero: z 0, share 0
    raw[:, FEATURES.index("als")] = rng.normal(size=400)
    listener = np.array([np.log1p(7), 2.5, 0.8, 10], np.float32)
    x = candidate_features(Candidates(np.arange(400), raw, listener), known=False)
    columns = []
    for source in (*SCORED, "popularity"):
        v = raw[:, FEATURES.index(source)].astype(np.float64)
        top = v.max()
        share = [v / top if top > 0 else np.zeros(len(v))] if source != "popularity" else []
        columns += [v, zscore(v), ranks(v), *share]
    sources = sum((raw[:, FEATURES.index(s)] != 0).astype(np.float64) for s in SOURCES)
    expected = np.column_stack([*columns, sources, np.tile(listener, (400, 1)), np.zeros(400)])
    assert np.array_equal(x, expected.astype(np.float32))


def test_top_k_from_the_contenders_alone_is_the_full_sorts_order():
    """Issue 22: ranking only the candidates that can reach the top k (ties of the k-th score
    included) gives the full sort's order: score descending, ties to the lower artist."""
    rng = np.random.default_rng(11)
    for _ in range(500):
        scores = rng.choice([0.0, 0.5, 1.0, 2.0, np.nan], size=int(rng.integers(1, 60)),
                            p=[0.3, 0.3, 0.2, 0.18, 0.02])  # fmt: skip
        artists = rng.permutation(len(scores))
        k = int(rng.integers(1, 70))
        expected = np.lexsort((artists, -scores))[:k]
        assert np.array_equal(rank_candidates(artists, scores, k), expected)


def test_ranker_learns_from_validation_labels_and_beats_chance(trained):
    from training.metrics import ranking_metrics

    rec, inner, ranker, _, val = trained
    seen = ranker.validation
    assert seen["lists"] > 0 and seen["positives"] > 0 and ranker.booster.num_trees() >= 1
    assert set(seen["gain"]) == set(RANKER_FEATURES)
    users = np.flatnonzero(np.diff(val.indptr) > 0)
    from training.ranker import RankedRecommender

    ranked = RankedRecommender(rec, ranker, inner.settings).fit(inner.train_)
    scores = ranked.score_users(users)
    stage1 = ranked.stage1_users(users)
    for row, c in zip(scores, stage1.candidates, strict=True):
        assert set(np.flatnonzero(np.isfinite(row))) == set(c.artists.tolist())
    top = np.argsort(-scores, axis=1)[:, :10]
    rng = np.random.default_rng(1)
    shuffled = np.array([rng.permutation(c.artists)[:10] for c in stage1.candidates])
    learned = ranking_metrics(top, val[users])["ndcg@10"]
    assert learned > ranking_metrics(shuffled, val[users])["ndcg@10"]


def test_candidate_ranker_is_the_network_then_the_trees_with_masked_slots(network, trained):
    _, _, ranker, _, _ = trained
    proto = candidate_ranker(NetworkWeights.from_model(network), ranker_trees(ranker))
    report = check_candidate_ranker(network, proto, ranker, candidates=50)
    assert report.topk_agreement >= 0.9
    # Padding a batch-mate's row changes nothing of a request's own scores (masked slots -inf).
    rng = np.random.default_rng(5)
    width = len(GATEWAY_FEATURES)
    feed = lambda c: {  # noqa: E731
        "users": np.array([[4, 9]]), "weights": np.array([[0.7, 0.3]], np.float32),
        "candidates": rng.integers(0, 60, (1, c)), "mask": np.ones((1, c), bool),
        "features": rng.normal(size=(1, c, width)).astype(np.float32),
    }  # fmt: skip
    a, b = feed(6), feed(9)
    joined = dict(zip(a, join([list(a.values()), list(b.values())]), strict=True))
    (alone,) = session(proto).run(["scores"], a)
    (both,) = session(proto).run(["scores"], joined)
    np.testing.assert_allclose(both[0, :6], alone[0], rtol=1e-5)
    assert np.isneginf(both[0, 6:]).all() and joined["features"].shape == (
        2,
        9,
        len(GATEWAY_FEATURES),
    )


def test_candidate_ranker_without_trees_ranks_by_the_network(network):
    from export.onnx_models import candidate_scorer
    from export.parity import check_candidate_scorer

    weights = NetworkWeights.from_model(network)
    proto = candidate_ranker(weights, None)
    check_candidate_ranker(network, proto, None, candidates=40)
    check_candidate_scorer(network, candidate_scorer(weights), candidates=40)


def test_ranker_parity_gate_refuses_a_tampered_model(network, trained):
    _, _, ranker, _, _ = trained
    proto = candidate_ranker(NetworkWeights.from_model(network), ranker_trees(ranker))
    tampered = onnx.ModelProto()
    tampered.CopyFrom(proto)
    (trees,) = [n for n in tampered.graph.node if n.op_type == "TreeEnsembleRegressor"]
    for attribute in trees.attribute:
        if attribute.name == "target_weights":  # the leaves' values, reversed
            attribute.floats[:] = [-w for w in attribute.floats]
    with pytest.raises(ParityError, match="candidate_ranker"):
        check_candidate_ranker(network, tampered, ranker)
    bare = candidate_ranker(NetworkWeights.from_model(network), None)
    for init in bare.graph.initializer:
        if init.name == "out_bias":  # without trees the network's score is the answer
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, "out_bias"))
    with pytest.raises(ParityError, match="candidate_ranker"):
        check_candidate_ranker(network, bare, None)


def test_dropped_features_are_zeroed_offline_and_in_onnx(network, trained):
    from training.ranker import RankerConfig, fit_ranker

    _, inner, _, _, val = trained
    config = RankerConfig(trees=10, min_child_samples=5, leaves=7, drop=("dnn", "dnn_z"))
    ranker = fit_ranker(inner, val, config)
    assert ranker.validation["gain"]["dnn"] == 0 and ranker.validation["gain"]["dnn_z"] == 0
    proto = candidate_ranker(NetworkWeights.from_model(network), ranker_trees(ranker))
    check_candidate_ranker(network, proto, ranker, candidates=40)


def test_als_factor_folded_in_from_a_history_is_implicits_own():
    from training.models.als import ALS, fit_als_factors

    plays = community_matrix(seed=4)
    model = ALS().fit(plays)
    factors = fit_als_factors(plays)
    reference = model.score_histories(plays[[3, 8]])
    for i, u in enumerate((3, 8)):
        got = factors.scores(factors.user_factor(plays[u]), np.arange(plays.shape[1]))
        np.testing.assert_allclose(got, reference[i], atol=1e-4)
    assert not factors.user_factor(sp.csr_matrix((1, plays.shape[1]))).any()


def test_deploy_gate_reads_the_served_defaults_ndcg():
    from serving.validation import metric_gate, quality

    old = {"metrics": {"known_users": {"ndcg@10": 0.20}}}  # before the learned ranker
    new = {"metrics": {"known_users": {"ndcg@10": 0.15},
                       "served": {"mode": "ranked", "known_users": {"ndcg@10": 0.24}}}}  # fmt: skip
    assert quality(new) == 0.24 and quality(old) == 0.20
    assert metric_gate(new, old, 0.01, force=False).startswith("passed: ndcg@10 0.2400")
    worse = {"metrics": {"known_users": {"ndcg@10": 0.30},
                         "served": {"known_users": {"ndcg@10": 0.10}}}}  # fmt: skip
    with pytest.raises(Exception, match="refused"):
        metric_gate(worse, new, 0.01, force=False)


def test_the_ranker_settings_are_chosen_on_held_back_validation_users(trained):
    """tune_ranker judges each setting on validation users held out of its fit, keeps the best
    (a setting blind to every feature cannot win), refits it on every validation user, and
    records what it tried."""
    from training.config import TuningConfig
    from training.ranker import RankerConfig
    from training.ranker_tuning import tune_ranker

    _, inner, _, _, val = trained
    small = RankerConfig(trees=20, min_child_samples=5, leaves=7)
    settings = {"blind": RankerConfig(trees=20, min_child_samples=5, leaves=7,
                                      drop=RANKER_FEATURES),
                "small": small}  # fmt: skip
    ranker = tune_ranker(inner, val, TuningConfig(("blind", "small"), 0.3), settings=settings)
    record = ranker.validation["tuning"]
    assert set(record["tried"]) == {"blind", "small"}
    assert record["chosen"] == "small" and ranker.config == small
    assert record["chosen_ndcg@10"] == record["tried"]["small"]["ndcg@10"]
    assert record["tried"]["small"]["ndcg@10"] > record["tried"]["blind"]["ndcg@10"]
    users = int((np.diff(sp.csr_matrix(val).indptr) > 0).sum())
    assert record["choose_users"] == round(0.3 * users)
    assert record["fit_users"] + record["choose_users"] == users
    assert ranker.validation["lists"] > 0 and ranker.booster.num_trees() == 20  # refit on all


def test_the_tuning_config_names_every_candidate_setting_and_travels_with_the_run(tmp_path):
    """``train`` tries every setting by default; the names are checked, and a run's config.json
    keeps its tuning (runs saved before the field existed load the default)."""
    from training.config import TrainConfig, TuningConfig
    from training.ranker_tuning import candidate_settings, tune_ranker

    assert TuningConfig().settings == tuple(candidate_settings())
    cfg = TrainConfig(tuning=TuningConfig(("base",), 0.3))
    cfg.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == cfg
    raw = cfg.to_dict()
    del raw["tuning"]
    assert TrainConfig.from_dict(raw).tuning == TuningConfig()
    with pytest.raises(ValueError, match="at least one"):
        TuningConfig(())
    with pytest.raises(ValueError, match="unknown ranker settings"):
        tune_ranker(None, sp.csr_matrix((2, 2)), TuningConfig(("nope",)))
