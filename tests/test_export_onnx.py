"""ONNX exports answer exactly as the Keras network: pairwise scores and whole-catalogue top-K."""

from __future__ import annotations

import numpy as np
import pytest

from export.onnx_models import catalogue_scorer, pair_scorer
from export.parity import ParityError, check_catalogue_scorer, check_pair_scorer, session
from training.models.network import CatalogueScorer, NetworkWeights, build_network


@pytest.fixture(scope="module")
def network():
    model = build_network(60, 2_000, seed=4)
    rng = np.random.default_rng(1)
    for w in model.weights:  # spread the weights so that ReLU cuts and rankings are non-trivial
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    return model


def test_pair_scorer_matches_keras_on_10k_pairs(network):
    proto = pair_scorer(network)
    assert [i.name for i in proto.graph.input] == ["user", "artist"]
    assert [o.name for o in proto.graph.output] == ["score"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # dynamic batch dimension
    report = check_pair_scorer(network, proto, pairs=10_000)
    assert report.max_abs_diff <= 1e-4
    rng = np.random.default_rng(7)  # and checked here directly, not through the gate
    feed = {"user": rng.integers(0, 60, (500, 1), dtype=np.int32),
            "artist": rng.integers(0, 2_000, (500, 1), dtype=np.int32)}  # fmt: skip
    expected = network.predict(feed, verbose=0)
    np.testing.assert_allclose(session(proto).run(None, feed)[0], expected, atol=1e-5)


def test_catalogue_top_k_is_the_pairwise_ranking(network):
    proto = catalogue_scorer(NetworkWeights.from_model(network))
    report = check_catalogue_scorer(network, proto, groups=6, group_size=10, k=100)
    assert report.topk_agreement == 1.0
    # A single user with weight 1 ranks exactly as that user's pairwise scores do.
    artists, scores = session(proto).run(
        ["artists", "scores"],
        {"users": np.array([[7]]), "weights": np.ones((1, 1), np.float32),
         "k": np.array([[20]])},
    )  # fmt: skip
    pairwise = CatalogueScorer.from_model(network).score_users(np.array([7]))[0]
    assert artists[0].tolist() == np.argsort(-pairwise, kind="stable")[:20].tolist()
    np.testing.assert_allclose(scores[0], pairwise[artists[0]], atol=1e-4)


def test_catalogue_batch_uses_the_largest_k_and_caps_it_at_the_catalogue(network):
    proto = catalogue_scorer(NetworkWeights.from_model(network))
    artists, _ = session(proto).run(
        ["artists", "scores"],
        {"users": np.array([[1, 2], [3, 4]]), "weights": np.ones((2, 2), np.float32),
         "k": np.array([[5], [50_000]])},
    )  # fmt: skip
    assert artists.shape == (2, 2_000)


def test_parity_gate_rejects_a_model_that_disagrees(network):
    other = build_network(60, 2_000, seed=99)
    with pytest.raises(ParityError, match="differs from Keras"):
        check_pair_scorer(network, pair_scorer(other), pairs=1_000)
    with pytest.raises(ParityError, match="disagrees"):
        check_catalogue_scorer(network, catalogue_scorer(NetworkWeights.from_model(other)))


def test_a_bare_export_records_the_sizes_its_runner_bounds_ids_by(network, tmp_path):
    """Benchmarks export random networks without a run's provenance; the version's manifest
    must still give Triton's runner the sizes it bounds ids by (it failed to load before)."""
    import json

    import scipy.sparse as sp

    from core.contract import MODELS
    from core.vocabulary import Vocabulary
    from export.repository import export_network

    vocab = Vocabulary(tuple(f"u{i}" for i in range(60)), tuple(f"a{i}" for i in range(2_000)),
                       tuple(f"A{i}" for i in range(2_000)))  # fmt: skip
    vocab.save(tmp_path / "vocab")
    plays = sp.random(60, 2_000, density=0.01, format="csr", random_state=0, dtype=np.float32)
    export_network(network, tmp_path / "repo", vocab_dir=tmp_path / "vocab", plays=plays,
                   provenance={})  # fmt: skip
    for name, spec in MODELS.items():
        manifest = json.loads((tmp_path / "repo" / name / "1" / "manifest.json").read_text())
        assert (manifest["users"], manifest["artists"]) == (60, 2_000)
        for tensor in spec.inputs:
            if tensor.indexes:
                assert manifest[tensor.indexes] > 0, (name, tensor.name)
