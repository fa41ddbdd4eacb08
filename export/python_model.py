"""Triton Python-backend model: runs its version's ``model.onnx`` with onnxruntime on a CPU.

Export copies this file into every version directory as ``model.py``, beside
``request_batching.py`` (the request handling it shares with the GPU runner ``model_gpu.py``);
the ``cpu`` custom model configuration (``configs/cpu.pbtxt``) selects it, so the same ONNX file
runs here and on the onnxruntime backend of a GPU host. Triton hands ``execute`` a dynamically
batched list of requests; they are joined into one onnxruntime call (padding a ragged second
dimension with zeros, which the catalogue scorer's zero weights ignore) and split back, one
response each, cut to the request's own width (its ``k``, or its number of candidates).

Two kinds of failure, kept apart: a caller's bad tensors (an id outside the vocabulary, a
non-finite weight, a negative count) are answered INVALID_ARG for that request alone; a
failure of the model on valid tensors is a model error, logged and answered INTERNAL.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its sibling modules

import numpy as np
import onnxruntime as ort
import request_batching
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        directory = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("MUSICREC_ORT_THREADS", "0"))
        self.session = ort.InferenceSession(
            os.path.join(directory, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.out_dtypes = [
            pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        ]
        expected = {i.name for i in self.session.get_inputs()}
        if set(self.inputs) != expected:
            raise pb_utils.TritonModelException(
                f"config inputs {sorted(self.inputs)} differ from model.onnx's {sorted(expected)}"
            )
        try:
            self.bounds = request_batching.read_bounds(os.path.join(directory, "manifest.json"))
        except (OSError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"unreadable manifest.json: {exc}") from exc

    def execute(self, requests):
        per_request = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        return request_batching.execute(
            per_request, self.inputs, self.bounds, self._run, self._respond, self._fail
        )

    def _run(self, joined):
        return self.session.run(self.outputs, dict(zip(self.inputs, joined, strict=True)))

    def _respond(self, outputs):
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(part, dtype=dtype))
            for name, dtype, part in zip(self.outputs, self.out_dtypes, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _fail(message, error):
        if error is not None:  # valid tensors, so the model itself failed
            pb_utils.Logger.log_error(f"model error on a valid request: {error!r}")
        code = pb_utils.TritonError.INVALID_ARG if error is None else pb_utils.TritonError.INTERNAL
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(message, code)
        )
