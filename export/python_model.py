"""Triton Python-backend model: runs its version's ``model.onnx`` with onnxruntime on a CPU.

Export copies this file into every version directory as ``model.py``; the ``cpu`` custom model
configuration (``configs/cpu.pbtxt``) selects it, so the same ONNX file runs here and on the
onnxruntime backend of a GPU host. Triton hands ``execute`` a dynamically batched list of
requests; they are joined into one onnxruntime call (padding a ragged second dimension with
zeros, which the catalogue scorer's zero weights ignore) and split back, one response each. A
request's ``k`` (when the model has that input) trims its own outputs.

Two kinds of failure, kept apart: a caller's bad tensors (an id outside the vocabulary, a
non-finite weight, a negative count) are answered INVALID_ARG for that request alone; a
failure of the model on valid tensors is a model error, logged and answered INTERNAL.
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


class InvalidRequest(ValueError):
    """The caller's tensors cannot be scored."""


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
        self.bounds = self._bounds(os.path.join(directory, "manifest.json"))

    @staticmethod
    def _bounds(manifest_path):
        """Input name -> number of rows its values index (from the version's manifest)."""
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"unreadable manifest.json: {exc}") from exc
        return {
            spec["name"]: int(manifest[spec["indexes"]])
            for spec in manifest.get("inputs", [])
            if spec.get("indexes") in ("users", "artists") and spec["indexes"] in manifest
        }

    def _check(self, arrays):
        """Raise :class:`InvalidRequest` for tensors no model could score."""
        rows = {a.shape[0] for a in arrays}
        if len(rows) != 1:
            raise InvalidRequest(f"inputs have different batch sizes {sorted(rows)}")
        for name, a in zip(self.inputs, arrays, strict=True):
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise InvalidRequest(f"{name} holds non-finite values")
            if a.dtype.kind in "iu" and a.size:
                low, high = int(a.min()), int(a.max())
                bound = self.bounds.get(name)
                if low < 0 or (bound is not None and high >= bound):
                    limit = f"0..{bound - 1}" if bound is not None else ">= 0"
                    raise InvalidRequest(f"{name} values must be in {limit}, got {low}..{high}")

    def execute(self, requests):
        per_request = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        responses, valid = [None] * len(requests), []
        for i, arrays in enumerate(per_request):
            try:
                self._check(arrays)
                valid.append(i)
            except InvalidRequest as exc:
                responses[i] = self._error(
                    f"invalid request: {exc}", pb_utils.TritonError.INVALID_ARG
                )
        try:
            results = self._run([per_request[i] for i in valid]) if valid else []
        except Exception:  # ragged shapes the join cannot pad: score each request alone
            for i in valid:
                responses[i] = self._respond_alone(per_request[i])
            return responses
        start = 0
        for i in valid:
            n = per_request[i][0].shape[0]
            responses[i] = self._response(
                per_request[i], [out[start : start + n] for out in results]
            )
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
        except Exception as exc:  # valid tensors, so the model itself failed
            pb_utils.Logger.log_error(f"model error on a valid request: {exc!r}")
            return self._error(f"model error: {exc}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _error(message, code):
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(message, code)
        )

    def _response(self, arrays, outputs):
        limit = int(arrays[self.inputs.index("k")].max()) if "k" in self.inputs else None
        tensors = []
        for name, dtype, part in zip(self.outputs, self.out_dtypes, outputs, strict=True):
            if limit is not None:
                part = part[:, :limit]
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part, dtype=dtype)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
