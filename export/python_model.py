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

import onnxruntime as ort
import request_batching
import triton_python_backend_utils as pb_utils


def session_options(config):
    """onnxruntime's threads as the model configuration's parameters say (the onnxruntime
    backend's keys ``intra_op_thread_count`` and ``inter_op_thread_count``, and
    ``allow_spinning``), unless ``MUSICREC_ORT_THREADS`` / ``MUSICREC_ORT_SPINNING`` override
    them for this Triton process (a deployment's or a benchmark's choice)."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    intra = os.environ.get("MUSICREC_ORT_THREADS") or params.get("intra_op_thread_count", "0")
    spinning = os.environ.get("MUSICREC_ORT_SPINNING") or params.get("allow_spinning", "1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra)
    options.inter_op_num_threads = int(params.get("inter_op_thread_count", "0"))
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    pb_utils.Logger.log_info(f"{config['name']}: onnxruntime intra-op threads {intra} "
                             f"(0: one per core), spinning {spinning}")  # fmt: skip
    return options


class TritonPythonModel(request_batching.TritonResponses):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        directory = os.path.join(args["model_repository"], args["model_version"])
        self.session = ort.InferenceSession(
            os.path.join(directory, "model.onnx"), session_options(config),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
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

    def _run(self, joined):
        return self.session.run(self.outputs, dict(zip(self.inputs, joined, strict=True)))
