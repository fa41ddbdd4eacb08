"""The GPU route without a GPU: its numeric core run with NumPy against onnxruntime, the gpu
model configuration, the request handling both Python-backend runners share, the GPU runner's
own request path (with a stand-in for Triton's ``triton_python_backend_utils``), and the export
without TensorFlow that the GPU check uses. A real Triton with KIND_GPU instances needs a GPU:
``scripts/gpu_check.sh`` (benchmarks/GPU.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from core.contract import CANDIDATE_SCORER, CATALOGUE_SCORER, MODELS, PAIR_SCORER, SERVED_MODELS
from export import gpu_scorers, request_batching
from export.from_weights import Weights, export_weights, pair_scorer_from_weights
from export.onnx_models import candidate_scorer, catalogue_scorer
from export.parity import session
from export.staging import RUNNER_FILES
from export.triton_config import GPU_MODEL_FILE, GPU_RUNNER_MODELS, gpu_config, write_configs

N_USERS, N_ARTISTS = 60, 2_000


@pytest.fixture(scope="module")
def weights():
    from training.models.network import NetworkWeights, build_network

    model = build_network(N_USERS, N_ARTISTS, seed=4)
    rng = np.random.default_rng(1)
    for w in model.weights:  # spread the weights so that ReLU cuts and rankings are non-trivial
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    return NetworkWeights.from_model(model)


@pytest.fixture(scope="module")
def protos(weights):
    return {
        CATALOGUE_SCORER: catalogue_scorer(weights),
        CANDIDATE_SCORER: candidate_scorer(weights),
    }


def _batch(rng, rows=6, group=7):
    users = rng.integers(0, N_USERS, (rows, group))
    weights = rng.random((rows, group)).astype(np.float32)
    weights[0, 3:] = 0.0  # a padded request: zero weights on user 0
    users[0, 3:] = 0
    return users, weights


@pytest.mark.parametrize("workspace_mb", [None, 0.05])  # one pass; 25 uneven artist slices
def test_numpy_core_top_k_is_onnxruntime_top_k(protos, workspace_mb):
    rng = np.random.default_rng(0)
    scorer = gpu_scorers.load(protos[CATALOGUE_SCORER], gpu_scorers.array_module("numpy"),
                              workspace_mb)  # fmt: skip
    users, weights = _batch(rng)
    k = np.array([[3], [100], [7], [1], [40], [20]])
    got_artists, got_scores = scorer.catalogue(users, weights, k)
    artists, scores = session(protos[CATALOGUE_SCORER]).run(
        ["artists", "scores"], {"users": users, "weights": weights, "k": k}
    )
    assert got_artists.shape == artists.shape == (6, 100)  # the batch's largest k for every row
    assert got_artists.dtype == np.int64 and got_scores.dtype == np.float32
    np.testing.assert_array_equal(got_artists, artists)
    diff = float(np.max(np.abs(got_scores - scores)))
    print(f"catalogue top-100 max |numpy core - onnxruntime| = {diff:.2e}")
    assert diff <= 1e-4
    every = scorer.scores(users, weights)  # and they are the best of every artist's score
    assert np.all(got_scores[:, -1:] >= np.sort(every, axis=1)[:, -100:-99] - 1e-6)


def test_numpy_core_caps_k_at_the_catalogue_and_answers_k_zero(protos):
    scorer = gpu_scorers.load(protos[CATALOGUE_SCORER], gpu_scorers.array_module("numpy"))
    users, weights = np.array([[1, 2], [3, 4]]), np.ones((2, 2), np.float32)
    artists, scores = scorer.catalogue(users, weights, np.array([[5], [50_000]]))
    assert artists.shape == scores.shape == (2, N_ARTISTS)
    assert np.all(np.diff(scores, axis=1) <= 0)
    artists, _ = scorer.catalogue(users, weights, np.array([[0], [0]]))
    assert artists.shape == (2, 0)


@pytest.mark.parametrize("workspace_mb", [None, 0.01])
def test_numpy_core_candidates_are_onnxruntime_candidates(protos, workspace_mb):
    rng = np.random.default_rng(2)
    scorer = gpu_scorers.load(protos[CANDIDATE_SCORER], gpu_scorers.array_module("numpy"),
                              workspace_mb)  # fmt: skip
    users, weights = _batch(rng)
    candidates = rng.integers(0, N_ARTISTS, (6, 300))
    mask = rng.random((6, 300)) < 0.9
    mask[0, 250:] = False  # a padded request
    got = scorer.candidates(users, weights, candidates, mask)
    (expected,) = session(protos[CANDIDATE_SCORER]).run(
        ["scores"], {"users": users, "weights": weights, "candidates": candidates, "mask": mask}
    )
    diff = float(np.max(np.abs(got[mask] - expected[mask])))
    print(f"candidates max |numpy core - onnxruntime| = {diff:.2e}")
    assert diff <= 1e-4
    assert np.all(np.isneginf(got[~mask])) and np.all(np.isfinite(got[mask]))


def test_weights_come_from_the_graph_and_only_from_a_scorer_graph(weights, protos):
    expected_artists = weights.artist_half()
    for proto in protos.values():
        read = gpu_scorers.read_weights(proto)
        assert read.shape == (N_USERS, N_ARTISTS, 128)
        np.testing.assert_allclose(read.artist_half, expected_artists, atol=1e-6)
        np.testing.assert_allclose(read.out_kernel, weights.output_kernel[:, 0])
    with pytest.raises(ValueError, match="not a scorer graph"):
        gpu_scorers.read_weights(pair_scorer_from_weights(Weights(*_fields(weights))))


def test_array_modules_refuse_what_cannot_run_here():
    with pytest.raises(ValueError, match="unknown runner"):
        gpu_scorers.array_module("tensorflow")
    try:  # CI has neither CuPy nor PyTorch nor a GPU; a machine with one returns a module
        module = gpu_scorers.array_module("auto")
    except RuntimeError as exc:
        assert "cupy" in str(exc) and "torch" in str(exc)
    else:
        assert module.name != "numpy"


def test_gpu_configuration_parses_with_gpu_instances_and_the_python_backend(tmp_path):
    for name in SERVED_MODELS:
        write_configs(tmp_path / name, name, serving=[3])
        cfg = text_format.Parse((tmp_path / name / "configs" / "gpu.pbtxt").read_text(),
                                mc.ModelConfig())  # fmt: skip
        assert cfg.name == name and cfg.backend == "python"
        assert list(cfg.version_policy.specific.versions) == [3]  # deploy's pin, as in cpu.pbtxt
        assert [i.name for i in cfg.input] == MODELS[name].input_names
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
        (group,) = cfg.instance_group
        if name in GPU_RUNNER_MODELS:
            assert group.kind == mc.ModelInstanceGroup.KIND_GPU
            assert cfg.default_model_filename == GPU_MODEL_FILE
            assert cfg.parameters["runner"].string_value == "auto"
            assert cfg.max_batch_size == MODELS[name].max_batch_size
        else:  # pair_scorer stays on its onnxruntime CPU runner
            assert group.kind == mc.ModelInstanceGroup.KIND_CPU
            assert cfg.default_model_filename == ""
    assert set(GPU_RUNNER_MODELS) == {CATALOGUE_SCORER, CANDIDATE_SCORER}
    dry = gpu_config(CATALOGUE_SCORER, kind="cpu", runner="numpy")
    assert dry.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert dry.parameters["runner"].string_value == "numpy"


# -- request handling shared by model.py and model_gpu.py --------------------------------------

NAMES = ["users", "weights", "candidates", "mask"]
BOUNDS = {"users": N_USERS, "candidates": N_ARTISTS}


def _request(group, cands, rows=1, user=0, candidate=0):
    return [np.full((rows, group), user, np.int64), np.ones((rows, group), np.float32),
            np.full((rows, cands), candidate, np.int64), np.ones((rows, cands), bool)]  # fmt: skip


def test_join_pads_ragged_requests_with_zeros_and_false():
    users, weights, candidates, mask = request_batching.join(
        [_request(2, 3, user=5), _request(4, 1, rows=2, candidate=7)]
    )
    assert users.shape == weights.shape == (3, 4) and candidates.shape == mask.shape == (3, 3)
    assert users[0].tolist() == [5, 5, 0, 0] and weights[0].tolist() == [1, 1, 0, 0]
    assert mask[1].tolist() == [True, False, False] and candidates[1].tolist() == [7, 0, 0]


@pytest.mark.parametrize(("arrays", "message"), [
    (lambda r: [r[0] + N_USERS, *r[1:]], "users values must be in 0..59"),
    (lambda r: [r[0] - 1, *r[1:]], "users values must be in 0..59"),
    (lambda r: [r[0], r[1] * np.nan, *r[2:]], "weights holds non-finite values"),
    (lambda r: [r[0], r[1], r[2] + N_ARTISTS, r[3]], "candidates values must be in 0..1999"),
    (lambda r: [r[0][:0], *r[1:]], "different batch sizes"),
])  # fmt: skip
def test_check_refuses_what_no_model_could_score(arrays, message):
    with pytest.raises(request_batching.InvalidRequest, match=message):
        request_batching.check(NAMES, arrays(_request(2, 3)), BOUNDS)


def test_read_bounds_takes_the_sizes_from_the_manifest(tmp_path):
    manifest = {"users": 10, "artists": 20,
                "inputs": [{"name": n, "indexes": s.indexes} for n, s in
                           zip(NAMES, MODELS[CANDIDATE_SCORER].inputs, strict=True)]}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert request_batching.read_bounds(str(tmp_path / "manifest.json")) == {
        "users": 10, "candidates": 20}  # fmt: skip


def _execute(per_request, run, names=NAMES):
    return request_batching.execute(
        per_request, names, BOUNDS, run,
        lambda outputs: ("ok", outputs),
        lambda message, error: ("internal" if error else "invalid", message),
    )  # fmt: skip


def test_one_computation_per_batch_and_bad_requests_answered_alone():
    calls = []

    def run(joined):
        calls.append([a.shape for a in joined])
        return [joined[2].astype(np.float32)]  # "scores": the candidate ids

    good, bad = _request(2, 3, candidate=4), _request(2, 3, user=N_USERS)
    answers = _execute([good, bad, _request(1, 2, rows=2, candidate=9)], run)
    assert calls == [[(3, 2), (3, 2), (3, 3), (3, 3)]]  # the valid two, joined and padded
    assert answers[1] == ("invalid", "invalid request: users values must be in 0..59, got 60..60")
    assert answers[0][0] == "ok" and answers[0][1][0].tolist() == [[4, 4, 4]]
    assert answers[2][1][0].tolist() == [[9, 9], [9, 9]]  # its rows and its own columns


def test_each_request_gets_its_own_k_and_a_failing_batch_is_retried_alone():
    names = ["users", "weights", "k"]

    def catalogue(k):
        return [np.zeros((1, 2), np.int64), np.ones((1, 2), np.float32), np.array([[k]])]

    def run(joined):
        if len(joined[0]) > 1 and joined[0].shape[1] > 1:
            raise RuntimeError("device out of memory")  # the joined batch fails...
        if joined[2][0, 0] == 13:
            raise RuntimeError("boom")  # ...and so does one request alone
        k = int(joined[2].max())
        return [np.tile(np.arange(k), (len(joined[0]), 1)), np.zeros((len(joined[0]), k))]

    answers = _execute([catalogue(2), catalogue(5), catalogue(13)], run, names)
    assert answers[0][1][0].tolist() == [[0, 1]] and answers[1][1][0].shape == (1, 5)
    assert answers[2] == ("internal", "model error: boom")


# -- model_gpu.py itself, with a stand-in for Triton's Python-backend module --------------------


class _Error:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code):
        self.message, self.code = message, code


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def _pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.InferenceResponse, module.TritonError = _Tensor, _Response, _Error
    module.TritonModelException = type("TritonModelException", (Exception,), {})
    module.Logger = types.SimpleNamespace(log_info=lambda m: None, log_error=lambda m: None)
    module.get_input_tensor_by_name = lambda request, name: request[name]
    module.triton_string_to_numpy = lambda t: {"TYPE_INT64": np.int64, "TYPE_FP32": np.float32,
                                               "TYPE_BOOL": bool}[t]  # fmt: skip
    return module


def _fields(w):
    return (w.user_embedding, w.artist_embedding, w.hidden_kernel, w.hidden_bias,
            w.output_kernel, w.output_bias)  # fmt: skip


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """A version exported without TensorFlow (what the GPU check serves)."""
    import scipy.sparse as sp

    from core.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("gpu_route")
    Vocabulary(tuple(f"u{i}" for i in range(N_USERS)), tuple(f"a{i}" for i in range(N_ARTISTS)),
               tuple(f"Artist {i}" for i in range(N_ARTISTS))).save(root / "vocab")  # fmt: skip
    rng = np.random.default_rng(3)
    plays = sp.random(N_USERS, N_ARTISTS, density=0.02, format="csr", random_state=rng,
                      data_rvs=lambda n: rng.integers(1, 20, n)).astype(np.float32)  # fmt: skip
    result = export_weights(Weights(*_fields(weights)), root / "repo", vocab_dir=root / "vocab",
                            plays=plays, provenance={"source_run": "test"})  # fmt: skip
    return root / "repo", result


def _load_gpu_model(monkeypatch, repo, name):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    monkeypatch.setattr(sys, "path", list(sys.path))  # the runner puts its directory first
    for module in ("gpu_scorers", "request_batching"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    path = repo / name / "1" / GPU_MODEL_FILE
    spec = importlib.util.spec_from_file_location(f"model_gpu_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sys.modules["gpu_scorers"].__file__ == str(repo / name / "1" / "gpu_scorers.py")
    config = json_format.MessageToDict(gpu_config(name, kind="cpu", runner="numpy"),
                                       preserving_proto_field_name=True)  # fmt: skip
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / name),
                      "model_version": "1", "model_instance_device_id": "0"})  # fmt: skip
    return model


def _tensors(**arrays):
    return {name: _Tensor(name, a) for name, a in arrays.items()}


def test_gpu_runner_answers_a_dynamic_batch_as_onnxruntime_does(exported, monkeypatch):
    repo, _ = exported
    model = _load_gpu_model(monkeypatch, repo, CATALOGUE_SCORER)
    ort = session(_onnx(repo, CATALOGUE_SCORER))
    rng = np.random.default_rng(5)
    jobs = [(rng.integers(0, N_USERS, (1, g)), rng.random((1, g)).astype(np.float32),
             np.array([[k]])) for g, k in ((3, 5), (10, 40), (1, 1))]  # fmt: skip
    bad = (np.array([[N_USERS]]), np.ones((1, 1), np.float32), np.array([[5]]))
    requests = [_tensors(users=u, weights=w, k=k) for u, w, k in [*jobs[:2], bad, jobs[2]]]
    responses = model.execute(requests)
    assert responses[2].error.code == "INVALID_ARG" and "users" in responses[2].error.message
    for (users, weights, k), response in zip(jobs, [responses[i] for i in (0, 1, 3)], strict=True):
        assert response.error is None
        artists, scores = ort.run(["artists", "scores"], {"users": users, "weights": weights,
                                                          "k": k})  # fmt: skip
        assert response.outputs["artists"].shape == (1, int(k[0, 0]))  # trimmed to its own k
        np.testing.assert_array_equal(response.outputs["artists"], artists)
        np.testing.assert_allclose(response.outputs["scores"], scores, atol=1e-4)

    model = _load_gpu_model(monkeypatch, repo, CANDIDATE_SCORER)
    ort = session(_onnx(repo, CANDIDATE_SCORER))
    users, weights = rng.integers(0, N_USERS, (1, 4)), rng.random((1, 4)).astype(np.float32)
    candidates, mask = rng.integers(0, N_ARTISTS, (1, 50)), rng.random((1, 50)) < 0.8
    requests = [_tensors(users=users, weights=weights, candidates=candidates, mask=mask),
                _tensors(users=users[:, :1], weights=weights[:, :1],
                         candidates=candidates[:, :9], mask=mask[:, :9])]  # fmt: skip
    for request, response in zip(requests, model.execute(requests), strict=True):
        feed = {n: t.array for n, t in request.items()}
        (expected,) = ort.run(["scores"], feed)
        got = response.outputs["scores"]
        assert got.shape == expected.shape  # padding removed
        np.testing.assert_allclose(got[feed["mask"]], expected[feed["mask"]], atol=1e-4)
        assert np.all(np.isneginf(got[~feed["mask"]]))


def _onnx(repo, name):
    import onnx

    return onnx.load(str(repo / name / "1" / "model.onnx"))


def test_gpu_runner_refuses_a_model_it_does_not_serve(exported, monkeypatch):
    repo, _ = exported
    with pytest.raises(Exception, match="no GPU runner for inputs"):
        _load_gpu_model(monkeypatch, repo, PAIR_SCORER)


# -- the export without TensorFlow --------------------------------------------------------------


def test_export_without_tensorflow_writes_the_same_scorers_and_seals_runners(weights, exported):
    repo, result = exported
    builders = {CATALOGUE_SCORER: catalogue_scorer, CANDIDATE_SCORER: candidate_scorer}
    for name, build in builders.items():  # byte for byte what export_network builds from Keras
        expected = build(weights).SerializeToString()
        assert (repo / name / "1" / "model.onnx").read_bytes() == expected
    for name in SERVED_MODELS:
        manifest = json.loads((repo / name / "1" / "manifest.json").read_text())
        assert set(RUNNER_FILES) <= set(manifest["files"])  # checked by deploy's validation
        assert manifest["parity"]["max_abs_diff"] <= MODELS[name].parity_tolerance
        assert (repo / name / "configs" / "gpu.pbtxt").is_file()
    assert result.version == 1


def test_pair_scorer_from_weights_is_the_keras_network(weights):
    from training.models.network import build_network

    model = build_network(N_USERS, N_ARTISTS, seed=4)
    for w, value in zip(model.weights, _fields(weights), strict=True):
        w.assign(value)
    rng = np.random.default_rng(6)
    feed = {"user": rng.integers(0, N_USERS, (500, 1), dtype=np.int32),
            "artist": rng.integers(0, N_ARTISTS, (500, 1), dtype=np.int32)}  # fmt: skip
    got = session(pair_scorer_from_weights(Weights(*_fields(weights)))).run(None, feed)[0]
    np.testing.assert_allclose(got, model.predict(feed, verbose=0), atol=1e-5)


def test_random_weights_are_random_networks_weights():
    from benchmarks.common import random_network
    from benchmarks.gpu import random_weights
    from training.models.network import NetworkWeights

    expected = NetworkWeights.from_model(random_network(30, 70, seed=2))
    for got, want in zip(_fields(random_weights(30, 70, seed=2)), _fields(expected), strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_gpu_route_and_its_export_load_no_tensorflow():
    probe = ("import sys, export.from_weights, export.gpu_scorers, export.request_batching, "
             "export.staging, export.triton_config, benchmarks.gpu\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tensorflow', 'keras', 'tf2onnx')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
