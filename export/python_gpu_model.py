"""Triton Python-backend model of the GPU route: scores on the instance's GPU with CuPy, or
PyTorch where CuPy does not import, from the weights of its version's ``model.onnx``.

Export copies this file into every version directory as ``model_gpu.py``, beside
``gpu_scorers.py`` (the numeric core, the same code CI runs with NumPy) and
``request_batching.py`` (validation, joining and splitting, shared with ``model.py``). The
``gpu`` custom model configuration (``configs/gpu.pbtxt``, ``--model-config-name=gpu``) selects
it with ``default_model_filename`` for ``catalogue_scorer`` and ``candidate_scorer`` on a
``KIND_GPU`` instance; its parameter ``runner`` picks the array module (``auto``: CuPy, else
PyTorch; ``numpy`` runs it on a CPU) and ``workspace_mb`` bounds the intermediate. Behaviour
matches ``model.py``: one computation per dynamic batch, INVALID_ARG per bad request, ``k``
trimming (the top K is taken on the device), ``-inf`` for masked candidate slots.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its sibling modules

import gpu_scorers
import numpy as np
import request_batching
import triton_python_backend_utils as pb_utils

CATALOGUE_INPUTS = ("users", "weights", "k")
CANDIDATE_INPUTS = ("users", "weights", "candidates", "mask")


class TritonPythonModel(request_batching.TritonResponses):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        directory = os.path.join(args["model_repository"], args["model_version"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.out_dtypes = [
            pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        ]
        if tuple(self.inputs) == CATALOGUE_INPUTS:
            self._run = self._catalogue
        elif tuple(self.inputs) == CANDIDATE_INPUTS:
            self._run = self._candidates
        else:
            raise pb_utils.TritonModelException(
                f"no GPU runner for inputs {self.inputs}: the gpu configuration serves "
                f"{list(CATALOGUE_INPUTS)} or {list(CANDIDATE_INPUTS)}"
            )
        device = int(args.get("model_instance_device_id") or 0)
        workspace = float(params["workspace_mb"]) if params.get("workspace_mb") else None
        try:
            self.module = gpu_scorers.array_module(params.get("runner") or "auto", device)
            self.scorer = gpu_scorers.load(
                os.path.join(directory, "model.onnx"), self.module, workspace
            )
            self.bounds = request_batching.read_bounds(os.path.join(directory, "manifest.json"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise pb_utils.TritonModelException(f"cannot start the GPU runner: {exc}") from exc
        self._run([np_zeros(name) for name in self.inputs])  # warm up: kernels, allocator
        pb_utils.Logger.log_info(
            f"musicrec gpu runner: {config['name']} version {args['model_version']} on "
            f"{self.module.describe()}, {self.scorer.n_artists} artists"
        )

    def _catalogue(self, arrays):
        users, weights, k = arrays
        artists, scores = self.scorer.catalogue(users, weights, k)
        return [{"artists": artists, "scores": scores}[name] for name in self.outputs]

    def _candidates(self, arrays):
        users, weights, candidates, mask = arrays
        return [self.scorer.candidates(users, weights, candidates, mask)]


def np_zeros(name):
    """A one-row request of zeros (k = 1, mask True) for the warm-up run."""
    if name == "weights":
        return np.zeros((1, 1), np.float32)
    if name == "mask":
        return np.ones((1, 1), bool)
    return np.ones((1, 1), np.int64) if name == "k" else np.zeros((1, 1), np.int64)
