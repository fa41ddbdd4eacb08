"""Tags as side information (issue 24 item 3): the artist tag table, the listener's tag features,
the per-run feature list, and the same figures offline and in the gateway (the real Triton and
gateway processes on a run with synthetic tag assignments)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from core.candidates import CandidateConfig
from core.contract import ARTIFACT_MODEL, ARTIST_TAGS, CATALOGUE_SCORER, MANIFEST, SERVED_MODELS
from core.ranker_features import (
    GATEWAY_FEATURES,
    RANKER_FEATURES,
    TAG_FEATURES,
    candidate_features,
    rank_rows,
    ranker_features,
    zscore_rows,
)
from core.tag_profile import ArtistTags, TagAssignments
from tests.conftest import community_matrix


def _tags_of(plays: sp.csr_matrix, seed: int = 0, extra: int = 0) -> TagAssignments:
    """Synthetic assignments with signal: each tag of a played pair is the user's most played
    artist (so artists of one community share tags); ``extra`` random pairs besides."""
    plays = sp.csr_matrix(plays)
    coo = plays.tocoo()
    top = np.asarray(plays.argmax(axis=1)).ravel()
    rng = np.random.default_rng(seed)
    users = np.concatenate([coo.row, rng.integers(0, plays.shape[0], extra)])
    artists = np.concatenate([coo.col, rng.integers(0, plays.shape[1], extra)])
    return TagAssignments(users.astype(np.int64), artists.astype(np.int64),
                          top[users].astype(np.int64))  # fmt: skip


def _dense_table(assignments: TagAssignments, plays: sp.csr_matrix) -> np.ndarray:
    """The table's definition, written out densely."""
    dense = sp.csr_matrix(plays).toarray()
    counts: dict[tuple[int, int], float] = {}
    for u, a, t in zip(assignments.users, assignments.artists, assignments.tags, strict=True):
        if dense[u, a] > 0:
            counts[(a, t)] = counts.get((a, t), 0.0) + 1.0
    tags = sorted({t for _, t in counts})
    out = np.zeros((dense.shape[1], len(tags)))
    for (a, t), c in counts.items():
        out[a, tags.index(t)] = c
    df = (out > 0).sum(axis=0)
    out *= np.log((dense.shape[1] + 1) / (df + 1))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def test_the_table_counts_only_tags_on_fitted_plays_tfidf_weighted_and_normalised():
    plays = community_matrix(seed=3)
    assignments = _tags_of(plays, extra=300)  # random pairs: most are not plays
    table = ArtistTags.fit(assignments, plays)
    np.testing.assert_allclose(table.table.toarray(), _dense_table(assignments, plays), atol=1e-12)
    tagged = table.tagged
    assert tagged.any() and np.allclose(np.linalg.norm(table.table[tagged].toarray(), axis=1), 1)


def test_a_listeners_features_are_their_profiles_cosine_with_each_candidate():
    plays = community_matrix(seed=3)
    assignments = _tags_of(plays)
    table = ArtistTags.fit(assignments.select(assignments.artists >= 5), plays)  # 0-4 untagged
    history = plays[4]
    dense = table.table.toarray()
    profile = np.log1p(history.data.astype(np.float64)) @ dense[history.indices]
    profile /= np.linalg.norm(profile)
    untagged = np.flatnonzero(~table.tagged)
    artists = np.r_[np.arange(10), untagged[:2]]
    got = table.features(history, artists)
    assert got.dtype == np.float32 and got.shape == (len(artists), 2)
    np.testing.assert_allclose(got[:, 0], dense[artists] @ profile, rtol=1e-6)
    np.testing.assert_array_equal(got[:, 1], table.tagged[artists])
    assert not got[-2:].any()  # an untagged candidate: no similarity, not tagged
    empty = sp.csr_matrix((1, plays.shape[1]), dtype=np.float32)
    assert not table.features(empty, artists)[:, 0].any()  # a profile without tags


def test_tag_columns_rank_and_standardise_over_the_candidates():
    plays = community_matrix(seed=3)
    from core.candidates import CandidateIndex

    index = CandidateIndex(plays, CandidateConfig().item_table(plays), CandidateConfig(),
                           tags=ArtistTags.fit(_tags_of(plays), plays))  # fmt: skip
    found = index.candidates(plays[2], np.array([1, 3]), np.array([0.5, 0.2]))
    x = candidate_features(found, True)
    assert x.shape == (len(found.artists), len(GATEWAY_FEATURES) + len(TAG_FEATURES))
    sim = found.tags[:, 0].astype(np.float64)[None]
    tag = x[:, len(GATEWAY_FEATURES) :]
    np.testing.assert_array_equal(tag[:, 0], found.tags[:, 0])
    np.testing.assert_array_equal(tag[:, 1], zscore_rows(sim)[0].astype(np.float32))
    np.testing.assert_array_equal(tag[:, 2], rank_rows(sim)[0].astype(np.float32))
    np.testing.assert_array_equal(tag[:, 3], found.tags[:, 1])
    plain = CandidateIndex(plays, CandidateConfig().item_table(plays), CandidateConfig())
    bare = plain.candidates(plays[2], np.array([1, 3]), np.array([0.5, 0.2]))
    assert bare.tags is None and candidate_features(bare, True).shape[1] == len(GATEWAY_FEATURES)
    np.testing.assert_array_equal(candidate_features(bare, True), x[:, : len(GATEWAY_FEATURES)])


def test_min_count_filters_keep_the_tags_of_what_they_keep():
    from core.vocabulary import Vocabulary
    from training.data.interactions import Interactions, filter_min_counts

    plays = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 1], [3, 1, 1]], np.float32))
    vocab = Vocabulary(("u0", "u1", "u2"), ("a0", "a1", "a2"), ("A0", "A1", "A2"))
    tags = TagAssignments(np.array([0, 1, 2, 2]), np.array([0, 2, 1, 2]), np.array([7, 8, 9, 7]))
    data = filter_min_counts(Interactions(plays, vocab, "", tags), min_artist_users=2,
                             min_user_artists=2)  # fmt: skip
    assert data.vocab.user_ids == ("u0", "u2") and data.vocab.artist_ids == ("a0", "a2")
    kept = {
        (data.vocab.user_ids[u], data.vocab.artist_ids[a], t)
        for u, a, t in zip(data.tags.users, data.tags.artists, data.tags.tags, strict=True)
    }
    assert kept == {("u0", "a0", 7), ("u2", "a2", 7)}  # u1 and a1 dropped with their tags


def test_hetrec_gives_its_tag_assignments(hetrec):
    tags = hetrec.tags
    assert tags is not None and 180_000 < len(tags) <= 186_479  # those of users and artists kept
    assert tags.users.max() < hetrec.matrix.shape[0] and tags.artists.max() < hetrec.matrix.shape[1]


@pytest.fixture(scope="module")
def ranker_data(network):
    """A community matrix split into train and validation, the network over it."""
    from training.models.dnn import NetworkRecommender

    plays = community_matrix(seed=4)
    held = np.random.default_rng(0).random(plays.nnz) < 0.25
    coo = plays.tocoo()
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=plays.shape)  # noqa: E731
    train, val = part(~held), part(held)
    return NetworkRecommender.from_trained(network, train), train, val, _tags_of(plays)


def _tuned(ranker_data, tags):
    from training.config import TuningConfig
    from training.ranker import RankerConfig
    from training.ranker_tuning import candidate_settings, tune_ranker
    from training.two_stage import TwoStageRecommender, TwoStageSettings

    rec, train, val, _ = ranker_data
    config = CandidateConfig(max_candidates=30, popular=5, ease_neighbours=10)
    inner = TwoStageRecommender(rec, TwoStageSettings(config), tags=tags).fit(train)
    settings = candidate_settings(RankerConfig(trees=20, min_child_samples=5, leaves=7))
    tuning = TuningConfig(("base", "without_tag_features"), 0.3)
    return inner, tune_ranker(inner, val, tuning, settings=settings)


def test_a_run_without_tags_has_no_tag_features(ranker_data, network):
    from export.ranker_model import candidate_ranker, ranker_trees
    from training.models.network import NetworkWeights

    inner, ranker = _tuned(ranker_data, None)
    assert inner.tag_table_ is None and ranker.features == RANKER_FEATURES
    assert ranker.to_dict()["features"] == list(RANKER_FEATURES)
    tuning = ranker.validation["tuning"]
    assert set(tuning["tried"]) == {"base"} and "without_tag_features" in tuning["skipped"]
    proto = candidate_ranker(NetworkWeights.from_model(network), ranker_trees(ranker),
                             ranker.features)  # fmt: skip
    width = {i.name: i.type.tensor_type.shape.dim[2].dim_value for i in proto.graph.input
             if i.name == "features"}  # fmt: skip
    assert width == {"features": len(GATEWAY_FEATURES)}


def test_a_run_with_tags_ranks_with_them_and_the_choosers_judge_them(ranker_data, network):
    from export.parity import check_candidate_ranker
    from export.ranker_model import candidate_ranker, ranker_trees
    from training.models.network import NetworkWeights
    from training.ranker import LearnedRanker, RankedRecommender

    inner, ranker = _tuned(ranker_data, ranker_data[3])
    assert ranker.features == ranker_features(True) and ranker.uses_tags
    assert set(ranker.validation["tuning"]["tried"]) == {"base", "without_tag_features"}
    assert set(TAG_FEATURES) <= set(ranker.validation["gain"])
    proto = candidate_ranker(NetworkWeights.from_model(network), ranker_trees(ranker),
                             ranker.features)  # fmt: skip
    report = check_candidate_ranker(network, proto, ranker)  # the version's width, parity held
    assert report.topk_agreement >= 0.9
    with pytest.raises(ValueError, match="tag"):
        RankedRecommender(inner.network, ranker)  # a tag ranker without its table
    with pytest.raises(ValueError, match="feature columns"):
        ranker.predict(np.zeros((3, len(RANKER_FEATURES)), np.float32))
    with tempfile.TemporaryDirectory() as tmp:  # the saved ranker keeps its feature list
        ranker.save(Path(tmp) / "ranker.txt")
        assert LearnedRanker.load(Path(tmp) / "ranker.txt").features == ranker.features


# --- a whole run with tags, exported, loaded and served -------------------------------------


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    """A dnn run (2 epochs) on generated data with synthetic tag assignments."""
    from training.config import DataConfig, TrainConfig
    from training.data import load_dataset
    from training.data.generator import GeneratorConfig, generate_spotify_csv
    from training.models import DNNConfig
    from training.pipeline import train_and_evaluate
    from training.run import save_run

    root = tmp_path_factory.mktemp("tag_run")
    generator = GeneratorConfig(rows=20_000, users=200, artists=400, seed=5)
    csv = generate_spotify_csv(root / "plays.csv", generator)
    data, _ = load_dataset(str(csv))
    data = dataclasses.replace(data, tags=_tags_of(data.matrix, extra=500))
    cfg = TrainConfig(data=DataConfig(str(csv)), dnn=DNNConfig(max_epochs=2))
    result = train_and_evaluate(cfg, data)
    return save_run(root / "run", cfg, result)


@pytest.fixture(scope="module")
def tag_repo(tag_run, tmp_path_factory):
    from export.repository import export_run

    repo = tmp_path_factory.mktemp("tag_repo") / "model_repository"
    export_run(tag_run, repo)
    return repo


@pytest.mark.slow
def test_the_tag_table_ships_sealed_and_the_gateway_computes_the_offline_features(
    tag_run, tag_repo
):
    from core.similarity import CPU
    from gateway.artifacts import ModelVersion
    from training.recommend import RunRecommender
    from training.run import load_run

    run = load_run(tag_run)
    assert run.ranker.features == ranker_features(True) and run.tags is not None
    version = tag_repo / ARTIFACT_MODEL / "1"
    manifest = json.loads((version / MANIFEST).read_text())
    assert ARTIST_TAGS in manifest["files"] and manifest["ranker"]["features"] == list(
        ranker_features(True)
    )
    mv = ModelVersion.load(tag_repo, 1, CPU)
    assert mv.features == tuple(manifest["ranker"]["features"])
    offline = RunRecommender(run)._model("ranked")
    for u in (3, 7, 20):  # known users, then a history: bit for bit the same features
        row = run.plays[u]
        idx, sims = mv.similarity.query(row, 10, exclude=np.array([u]))
        served = mv.candidates.candidates(row, idx[0], sims[0])
        mine = offline.index_.candidates(row, idx[0], sims[0])
        np.testing.assert_array_equal(served.artists, mine.artists)
        np.testing.assert_array_equal(candidate_features(served, True),
                                      candidate_features(mine, True))  # fmt: skip
        assert served.tags is not None and served.tags[:, 1].any()
        known = offline.stage1_users(np.array([u])).candidates[0]  # what the ranker ranks
        np.testing.assert_array_equal(known.tags, served.tags)


@pytest.mark.slow
def test_deploy_validates_a_version_whose_ranker_reads_tags(tag_repo):
    """Deploy's smoke inference fed the 25 base columns, so it refused every version with tags
    (29 columns): every HetRec run, which has tags by default."""
    from serving.validation import validate_version

    manifest = validate_version(tag_repo, 1)
    assert manifest["version"] == 1


@pytest.mark.slow
def test_a_tampered_or_missing_tag_table_is_not_loaded(tag_repo, tmp_path):
    from core.similarity import CPU
    from gateway.artifacts import ArtifactError, ModelVersion

    for damage in ("tamper", "remove"):
        repo = tmp_path / damage
        shutil.copytree(tag_repo / ARTIFACT_MODEL, repo / ARTIFACT_MODEL, symlinks=True)
        path = repo / ARTIFACT_MODEL / "1" / ARTIST_TAGS
        if damage == "tamper":
            table = sp.load_npz(path)
            table.data[0] += 0.5
            sp.save_npz(path, table, compressed=False)
            with pytest.raises(ArtifactError, match=f"checksum mismatch in {ARTIST_TAGS}"):
                ModelVersion.load(repo, 1, CPU)
        else:
            path.unlink()
            with pytest.raises(ArtifactError, match=f"{ARTIST_TAGS} is missing"):
                ModelVersion.load(repo, 1, CPU)


@pytest.mark.slow
def test_served_answers_with_tags_equal_the_offline_ranked_recommender(tag_run, tag_repo):
    """The real Triton and gateway on a version whose ranker uses tags: the gateway sends the
    version's 29 columns, and the answers are the offline RankedRecommender's."""
    from client import RecommenderClient
    from gateway.config import GatewayConfig
    from serving.gateway_process import GatewayProcess
    from serving.processes import free_port
    from serving.triton_server import TritonConfig, TritonServer
    from tests.test_gateway import _assert_same_ranking
    from training.recommend import RunRecommender
    from training.run import load_run

    offline = RunRecommender(load_run(tag_run))
    root = tag_repo.parent
    triton = TritonServer(TritonConfig(tag_repo, free_port(), free_port(), free_port(),
                                       load_models=SERVED_MODELS,
                                       log_file=root / "triton.log"))  # fmt: skip
    triton.start()
    config = GatewayConfig(port=free_port(), metrics_port=free_port(), triton_url=triton.grpc_url,
                           repository=tag_repo, backend="cpu", triton_timeout_s=3.0,
                           poll_interval_s=0.3, grace_s=10.0)  # fmt: skip
    gateway = GatewayProcess(config, log_file=root / "gateway.log")
    try:
        gateway.start()
        vocab = offline.vocab
        with RecommenderClient(gateway.address) as client:
            for u in (3, 7, 20):
                rec = client.recommend(vocab.user_ids[u], k=10)
                assert rec.scoring == "ranked"
                expected = offline.for_user(vocab.user_ids[u], 10, mode="ranked")
                _assert_same_ranking([(a.id, a.score) for a in rec.artists],
                                     [(r.id, r.score) for r in expected])  # fmt: skip
            names = [vocab.artist_names[i] for i in (5, 17, 40, 41)]
            rec = client.recommend(artists=names, k=15, scoring="ranked")
        expected = offline.for_history(names, 15, mode="ranked")
        _assert_same_ranking([(a.name, a.score) for a in rec.artists],
                             [(r.name, r.score) for r in expected])  # fmt: skip
        manifest = json.loads((tag_repo / CATALOGUE_SCORER / "1" / MANIFEST).read_text())
        assert set(TAG_FEATURES) <= set(manifest["ranker"]["features"])
    finally:
        gateway.stop()
        triton.stop()
