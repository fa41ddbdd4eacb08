"""Export a trained run into a model repository and serve it with the real Triton (CPU)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from core.contract import (
    ARTIST_INPUT,
    CANDIDATE_SCORER,
    CATALOGUE_SCORER,
    PAIR_SCORER,
    SERVED_MODELS,
    USER_INPUT,
    versions,
)
from export.repository import ExportError, export_run
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer
from training.models.network import CatalogueScorer
from training.run import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(run_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    result = export_run(run_dir, repo)
    assert result.version == 1
    cfg = TritonConfig(repo, free_port(), free_port(), free_port(),
                       load_models=SERVED_MODELS,
                       log_file=repo.parent / "triton.log")  # fmt: skip
    with TritonServer(cfg) as server:
        yield repo, server


def test_version_directory_carries_what_serving_needs(served):
    repo, _ = served
    for name in (PAIR_SCORER, CATALOGUE_SCORER):
        v = repo / name / "1"
        for f in ("model.onnx", "model.py", "manifest.json", "plays.npz",
                  "vocab/users.json", "vocab/artists.json"):  # fmt: skip
            assert (v / f).is_file(), f
        assert (repo / name / "config.pbtxt").read_text().count("onnxruntime_onnx") == 1
        assert 'backend: "python"' in (repo / name / "configs" / "cpu.pbtxt").read_text()


def test_savedmodel_beside_the_onnx_answers_the_same(served, run_dir):
    import tensorflow as tf

    repo, _ = served
    saved = tf.saved_model.load(str(repo / PAIR_SCORER / "1" / "model.savedmodel"))
    model = load_run(run_dir).load_model()
    users = np.arange(20, dtype=np.int32).reshape(-1, 1)
    artists = np.arange(20, dtype=np.int32).reshape(-1, 1)
    out = saved.signatures["serving_default"](user=tf.constant(users), artist=tf.constant(artists))
    expected = model.predict({USER_INPUT: users, ARTIST_INPUT: artists}, verbose=0)
    np.testing.assert_allclose(next(iter(out.values())).numpy(), expected, atol=1e-5)


def test_triton_pairwise_scores_equal_keras(served, run_dir):
    _, server = served
    model = load_run(run_dir).load_model()
    rng = np.random.default_rng(0)
    n_users = model.get_layer("user_embedding").input_dim
    n_artists = model.get_layer("artist_embedding").input_dim
    users = rng.integers(0, n_users, (512, 1), dtype=np.int32)
    artists = rng.integers(0, n_artists, (512, 1), dtype=np.int32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput(USER_INPUT, [512, 1], "INT32"),
              grpcclient.InferInput(ARTIST_INPUT, [512, 1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(users)
    inputs[1].set_data_from_numpy(artists)
    got = client.infer(PAIR_SCORER, inputs, client_timeout=30).as_numpy("score")
    expected = model.predict({USER_INPUT: users, ARTIST_INPUT: artists}, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _catalogue(client, users: np.ndarray, weights: np.ndarray, k: int):
    inputs = [grpcclient.InferInput("users", list(users.shape), "INT64"),
              grpcclient.InferInput("weights", list(weights.shape), "FP32"),
              grpcclient.InferInput("k", [users.shape[0], 1], "INT64")]  # fmt: skip
    inputs[0].set_data_from_numpy(users.astype(np.int64))
    inputs[1].set_data_from_numpy(weights.astype(np.float32))
    inputs[2].set_data_from_numpy(np.full((users.shape[0], 1), k, np.int64))
    result = client.infer(CATALOGUE_SCORER, inputs, client_timeout=30)
    return result.as_numpy("artists"), result.as_numpy("scores")


def test_triton_catalogue_top_k_is_the_pairwise_ranking_under_concurrency(served, run_dir):
    _, server = served
    scorer = CatalogueScorer.from_model(load_run(run_dir).load_model())
    rng = np.random.default_rng(1)
    jobs = []
    for i in range(24):  # ragged groups and different k, sent at once so Triton batches them
        size = 1 + i % 10
        jobs.append((rng.integers(0, 200, (1, size)), rng.random((1, size)), 5 + i))

    def call(job):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        return _catalogue(client, *job)

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, jobs))
    for (users, weights, k), (artists, scores) in zip(jobs, answers, strict=True):
        assert artists.shape == (1, k)
        reference = scorer.score_groups(users, weights.astype(np.float32))[0]
        assert artists[0].tolist() == np.argsort(-reference, kind="stable")[:k].tolist()
        np.testing.assert_allclose(scores[0], reference[artists[0]], atol=1e-3)


def test_triton_candidate_scores_are_the_networks_each_at_its_own_width_under_concurrency(
    served, run_dir
):
    """Groups and candidate lists of many widths at once: each answer is the network's weighted
    score of exactly its own candidates. (Triton's dynamic batcher joins only requests of equal
    shapes; the runner's padding and per-request cut are a second line behind that.)"""
    _, server = served
    scorer = CatalogueScorer.from_model(load_run(run_dir).load_model())
    n_users, n_artists = scorer.weights.user_embedding.shape[0], scorer.artist_half.shape[0]
    rng = np.random.default_rng(2)
    jobs = []
    for i in range(32):
        size, width = 1 + i % 10, 3 + (7 * i) % 40
        jobs.append((rng.integers(0, n_users, (1, size)),
                     rng.random((1, size)).astype(np.float32),
                     rng.integers(0, n_artists, (1, width))))  # fmt: skip

    def call(job):
        users, weights, candidates = job
        arrays = [("users", users, "INT64"), ("weights", weights, "FP32"),
                  ("candidates", candidates, "INT64"),
                  ("mask", np.ones(candidates.shape, bool), "BOOL")]  # fmt: skip
        inputs = []
        for name, array, dtype in arrays:
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        return client.infer(CANDIDATE_SCORER, inputs).as_numpy("scores")

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, jobs))
    for (users, weights, candidates), scores in zip(jobs, answers, strict=True):
        assert scores.shape == candidates.shape
        expected = scorer.score_groups(users, weights)[0, candidates[0]]
        np.testing.assert_allclose(scores[0], expected, atol=1e-3)


def test_dynamic_batching_joins_concurrent_small_requests(served):
    """Triton's own metrics: 32 clients sending single pairs get fewer executions than requests."""
    repo, server = served
    manifest = json.loads((repo / PAIR_SCORER / "1" / "manifest.json").read_text())
    n_users, n_artists = manifest["users"], manifest["artists"]

    def client_loop(seed: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        rng = np.random.default_rng(seed)
        for _ in range(40):
            inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
                      grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
            inputs[0].set_data_from_numpy(rng.integers(0, n_users, (1, 1), dtype=np.int32))
            inputs[1].set_data_from_numpy(rng.integers(0, n_artists, (1, 1), dtype=np.int32))
            client.infer(PAIR_SCORER, inputs, client_timeout=30)

    with cf.ThreadPoolExecutor(32) as pool:
        list(pool.map(client_loop, range(32)))
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.config.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    requests = _metric(metrics, "nv_inference_request_success", PAIR_SCORER)
    executions = _metric(metrics, "nv_inference_exec_count", PAIR_SCORER)
    assert requests >= 32 * 40
    assert executions < requests / 2, (executions, requests)


def _metric(text: str, name: str, model: str = CATALOGUE_SCORER) -> float:
    pattern = rf'^{name}{{model="{model}",version="1"}} ([0-9.e+]+)$'
    return float(re.search(pattern, text, re.MULTILINE).group(1))


def test_failed_export_leaves_the_repository_untouched(served, tmp_path):
    repo, _ = served
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    with pytest.raises(ExportError, match="cannot read run"):
        export_run(tmp_path / "no-such-run", repo)
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert versions(repo, PAIR_SCORER) == [1]
    assert not list(repo.parent.glob(".export-*"))


def test_a_bad_request_gets_its_own_error_and_the_server_keeps_serving(served, run_dir):
    repo, server = served
    n_artists = json.loads((repo / PAIR_SCORER / "1" / "manifest.json").read_text())["artists"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
              grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(np.zeros((1, 1), np.int32))
    inputs[1].set_data_from_numpy(np.full((1, 1), n_artists + 5, np.int32))
    with pytest.raises(InferenceServerException, match="invalid request"):
        client.infer(PAIR_SCORER, inputs, client_timeout=30)
    inputs[1].set_data_from_numpy(np.zeros((1, 1), np.int32))
    assert client.infer(PAIR_SCORER, inputs, client_timeout=30).as_numpy("score").shape == (1, 1)


def test_bad_requests_batched_with_good_ones_fail_alone(served, run_dir):
    """Concurrent single-pair requests, every fourth with an artist outside the catalogue:
    Triton batches them together (fewer executions than requests), each bad one gets its own
    INVALID_ARGUMENT and every good one its exact score."""
    repo, server = served
    n_artists = json.loads((repo / PAIR_SCORER / "1" / "manifest.json").read_text())["artists"]
    model = load_run(run_dir).load_model()
    url = f"http://127.0.0.1:{server.config.metrics_port}/metrics"
    scrape = lambda name: _metric(urllib.request.urlopen(url, timeout=10).read().decode(),  # noqa: E731
                                  name, PAIR_SCORER)  # fmt: skip
    before = scrape("nv_inference_exec_count"), scrape("nv_inference_count")

    def one(i: int):
        artist = n_artists + i if i % 4 == 0 else i
        inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
                  grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
        inputs[0].set_data_from_numpy(np.full((1, 1), i % 7, np.int32))
        inputs[1].set_data_from_numpy(np.full((1, 1), artist, np.int32))
        try:
            return i, grpcclient.InferenceServerClient(server.grpc_url).infer(
                PAIR_SCORER, inputs, client_timeout=30).as_numpy("score")[0, 0]  # fmt: skip
        except InferenceServerException as exc:
            return i, exc

    with cf.ThreadPoolExecutor(32) as pool:
        answers = dict(pool.map(one, range(128)))
    for i in range(0, 128, 4):
        got = answers[i]
        assert isinstance(got, InferenceServerException), i
        assert "invalid request" in str(got) and got.status() == "StatusCode.INVALID_ARGUMENT"
    good = np.array([i for i in range(128) if i % 4])
    feed = {USER_INPUT: (good % 7).astype(np.int32).reshape(-1, 1),
            ARTIST_INPUT: good.astype(np.int32).reshape(-1, 1)}  # fmt: skip
    expected = model.predict(feed, verbose=0).ravel()
    np.testing.assert_allclose([answers[i] for i in good], expected, atol=1e-4)
    executions = scrape("nv_inference_exec_count") - before[0]
    assert executions < 96, executions  # the 96 good ones were joined into fewer runs


def test_a_parity_failure_leaves_the_repository_untouched(served, run_dir, monkeypatch):
    from export import repository
    from export.onnx_models import pair_scorer
    from export.parity import ParityError
    from training.models.network import build_network

    repo, _ = served
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    manifest = json.loads((repo / PAIR_SCORER / "1" / "manifest.json").read_text())
    other = build_network(manifest["users"], manifest["artists"], seed=3)  # other weights
    gate = repository.BUILDERS[PAIR_SCORER][1]
    monkeypatch.setitem(repository.BUILDERS, PAIR_SCORER, (lambda _: pair_scorer(other), gate))
    with pytest.raises(ParityError):
        export_run(run_dir, repo)
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert not list(repo.parent.glob(".export-*"))


def test_a_model_that_fails_on_valid_tensors_is_a_model_error_not_the_callers(served, tmp_path):
    repo, _ = served
    broken = tmp_path / "model_repository"
    shutil.copytree(repo / PAIR_SCORER, broken / PAIR_SCORER,
                    ignore=shutil.ignore_patterns("model.savedmodel"))  # fmt: skip
    manifest_path = broken / PAIR_SCORER / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    n_users = manifest["users"]
    manifest["users"] = n_users * 10  # claims rows the ONNX file does not have
    manifest_path.write_text(json.dumps(manifest))
    cfg = TritonConfig(broken, free_port(), free_port(), free_port(), load_models=(PAIR_SCORER,),
                       log_file=tmp_path / "triton.log")  # fmt: skip

    def infer(client, user: int):
        inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
                  grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
        inputs[0].set_data_from_numpy(np.full((1, 1), user, np.int32))
        inputs[1].set_data_from_numpy(np.zeros((1, 1), np.int32))
        return client.infer(PAIR_SCORER, inputs, client_timeout=30)

    with TritonServer(cfg) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="model error") as model_error:
            infer(client, n_users + 1)  # valid by the manifest: the model itself fails
        assert model_error.value.status() == "StatusCode.INTERNAL"
        with pytest.raises(InferenceServerException, match="invalid request") as caller_error:
            infer(client, n_users * 10)  # beyond the vocabulary: the caller's mistake
        assert caller_error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert infer(client, 0).as_numpy("score").shape == (1, 1)
    assert "model error on a valid request" in (tmp_path / "triton.log").read_text()


def test_new_version_loads_under_traffic_and_a_corrupt_one_never_serves(served, run_dir):
    repo, server = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stop, failures, answered = threading.Event(), [], []

    def traffic() -> None:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        while not stop.is_set():
            inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
                      grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
            inputs[0].set_data_from_numpy(np.zeros((1, 1), np.int32))
            inputs[1].set_data_from_numpy(np.zeros((1, 1), np.int32))
            try:
                own.infer(PAIR_SCORER, inputs, client_timeout=30)
                answered.append(1)
            except InferenceServerException as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert export_run(run_dir, repo).version == 2
        client.load_model(PAIR_SCORER, headers=server.admin_headers)  # pick up version 2
        assert client.is_model_ready(PAIR_SCORER, "2")
        assert not client.is_model_ready(PAIR_SCORER, "1")  # version policy: latest 1
        # A corrupt version 3 fails to load; version 2 keeps serving.
        broken = repo / PAIR_SCORER / "3"
        shutil.copytree(repo / PAIR_SCORER / "2", broken)
        (broken / "model.onnx").write_bytes(b"not an onnx model")
        with pytest.raises(InferenceServerException, match="load failed .* version 3"):
            client.load_model(PAIR_SCORER, headers=server.admin_headers)
        assert client.is_model_ready(PAIR_SCORER, "2")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        shutil.rmtree(repo / PAIR_SCORER / "3", ignore_errors=True)
    assert failures == []
    assert len(answered) > 50
