"""A closed control plane: the embedded Triton listens on loopback only, and its
model-repository API (load, unload, index) refuses callers without the admin key while
inference stays open."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from core.contract import ARTIST_INPUT, PAIR_SCORER, SERVED_MODELS, USER_INPUT
from export.repository import export_run
from loadtests.faults import listening
from serving import admin_key
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(run_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("security") / "model_repository"
    export_run(run_dir, repo)
    cfg = TritonConfig(repo, free_port(), free_port(), free_port(), load_models=SERVED_MODELS,
                       log_file=repo.parent / "triton.log")  # fmt: skip
    with TritonServer(cfg) as server:
        yield server


def test_triton_listens_on_loopback_only(triton):
    cfg = triton.config
    for port in (cfg.http_port, cfg.grpc_port, cfg.metrics_port):
        assert listening(port) == {"127.0.0.1"}, port


def test_model_control_needs_the_key_and_inference_does_not(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for call in (lambda h: client.unload_model(PAIR_SCORER, headers=h),
                 lambda h: client.load_model(PAIR_SCORER, headers=h),
                 lambda h: client.get_model_repository_index(headers=h)):  # fmt: skip
        wrong_key = admin_key.headers("not-the-key-at-all-but-long-enough")
        for wrong in (None, {"musicrec-admin-key": triton.admin_key}, wrong_key):
            with pytest.raises(InferenceServerException, match="restricted|expecting header"):
                call(wrong)
    assert client.is_model_ready(PAIR_SCORER, "1")  # nothing was unloaded

    inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
              grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
    for tensor in inputs:
        tensor.set_data_from_numpy(np.zeros((1, 1), np.int32))
    assert client.infer(PAIR_SCORER, inputs).as_numpy("score").shape == (1, 1)

    index = client.get_model_repository_index(headers=triton.admin_headers)
    assert {m.name for m in index.models} >= set(SERVED_MODELS)
    client.load_model(PAIR_SCORER, headers=triton.admin_headers)
