"""Triton Python-backend model: runs its version's ``model.onnx`` with onnxruntime on a CPU.

Export copies this file into every version directory as ``model.py``; the ``cpu`` custom model
configuration (``configs/cpu.pbtxt``) selects it, so the same ONNX file runs here and on the
onnxruntime backend of a GPU host. Triton hands ``execute`` a dynamically batched list of
requests; they are joined into one onnxruntime call (padding a ragged second dimension with
zeros, which the catalogue scorer's zero weights ignore) and split back, one response each. A
request's ``k`` (when the model has that input) trims its own outputs.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _pad_to(parts, width):
    return [
        p if p.shape[1] == width else np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts
    ]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("MUSICREC_ORT_THREADS", "0"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
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

    def execute(self, requests):
        per_request = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        try:
            results = self._run(per_request)
        except Exception:
            return [self._respond_alone(arrays) for arrays in per_request]
        responses, start = [], 0
        for arrays in per_request:
            n = arrays[0].shape[0]
            responses.append(self._response(arrays, [out[start : start + n] for out in results]))
            start += n
        return responses

    def _run(self, per_request):
        feed = {}
        for j, name in enumerate(self.inputs):
            parts = [arrays[j] for arrays in per_request]
            width = max(p.shape[1] for p in parts)
            feed[name] = np.concatenate(_pad_to(parts, width))
        return self.session.run(self.outputs, feed)

    def _respond_alone(self, arrays):
        try:
            return self._response(arrays, self._run([arrays]))
        except Exception as exc:
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"invalid request: {exc}")
            )

    def _response(self, arrays, outputs):
        limit = int(arrays[self.inputs.index("k")].max()) if "k" in self.inputs else None
        tensors = []
        for name, dtype, part in zip(self.outputs, self.out_dtypes, outputs, strict=True):
            if limit is not None:
                part = part[:, :limit]
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part, dtype=dtype)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
