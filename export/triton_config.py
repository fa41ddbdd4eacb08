"""Triton model configurations (``config.pbtxt``), built as protobufs from the contract.

Each model gets three:

* ``config.pbtxt``, production: the onnxruntime backend on GPU instances (NVIDIA's images only);
* ``configs/cpu.pbtxt``, the embedded server: Python backend + onnxruntime on CPU instances
  (``--model-config-name=cpu``);
* ``configs/gpu.pbtxt``, a GPU route that the wheel's ``tritonserver`` runs
  (``--model-config-name=gpu``): ``catalogue_scorer`` and ``candidate_scorer`` on ``KIND_GPU``
  Python-backend instances running ``model_gpu.py`` (CuPy, else PyTorch; parameter ``runner``),
  ``pair_scorer`` on its onnxruntime CPU runner (see :data:`GPU_RUNNER_MODELS`).

The version policy is the serving pin that ``deploy`` manages, the same in all three. Light on
purpose (no TensorFlow): deploy imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from core.contract import CANDIDATE_SCORER, CATALOGUE_SCORER, MODELS, TensorSpec
from core.files import write_atomically

GPU_MODEL_FILE = "model_gpu.py"  # export/python_gpu_model.py, in every version directory
# The models the gpu configuration runs on GPU instances. pair_scorer keeps its onnxruntime CPU
# runner there: a request is a few pairs (one 200x128 product each), too little to pay for a
# device round trip, and its graph is tf2onnx's (initializer names and layouts are the
# converter's, not this project's), so a GPU runner would have to guess its weights.
GPU_RUNNER_MODELS = (CATALOGUE_SCORER, CANDIDATE_SCORER)
GPU_QUEUE_DELAY_US = 1000  # a GPU gains more from a fuller batch than a CPU instance does


@dataclass(frozen=True)
class OrtThreads:
    """onnxruntime's threads in the embedded server's runners (``configs/cpu.pbtxt``
    parameters, read by ``export/python_model.py``; ``MUSICREC_ORT_THREADS`` and
    ``MUSICREC_ORT_SPINNING`` override them per Triton process).

    One intra-op thread and no spinning, as measured (``benchmarks/cost.py --sweep``): a
    request's graph is a few hundred candidates, too little work to split, and an idle pool
    that spins takes a core from the gateway and the other models' runners on a CPU host."""

    intra_op: int = 1  # 0: one per core
    inter_op: int = 1  # the graphs run sequentially; this pool is unused
    spinning: bool = False

    def parameters(self) -> dict[str, str]:
        return {"intra_op_thread_count": str(self.intra_op),
                "inter_op_thread_count": str(self.inter_op),
                "allow_spinning": "1" if self.spinning else "0"}  # fmt: skip


CPU_HOST_THREADS = OrtThreads()

_TENSORRT_NOTE = """\
# Optional on GPU hosts: run the ONNX graph through TensorRT inside the onnxruntime backend by
# adding
#   optimization { execution_accelerators { gpu_execution_accelerator: [
#     { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
# (first load builds the engine; check parity before enabling FP16).
"""


def _tensor(spec: TensorSpec, cls: type) -> object:
    return cls(name=spec.name, data_type=mc.DataType.Value(spec.dtype), dims=list(spec.dims))


def _policy(serving: Sequence[int] | None) -> mc.ModelVersionPolicy:
    if serving:
        return mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=serving))
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1))


def model_config(
    name: str, *, production: bool, serving: Sequence[int] | None = None
) -> mc.ModelConfig:
    """``config.pbtxt`` (production, GPU) or ``configs/cpu.pbtxt`` (embedded, Python backend).

    ``serving``: the versions Triton loads (set by ``deploy``); None means the newest one."""
    spec = MODELS[name]
    cfg = mc.ModelConfig(
        name=name,
        max_batch_size=spec.max_batch_size if production else spec.cpu_max_batch_size,
        input=[_tensor(s, mc.ModelInput) for s in spec.inputs],
        output=[_tensor(s, mc.ModelOutput) for s in spec.outputs],
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=500),
        version_policy=_policy(serving),
    )
    if production:
        cfg.platform = "onnxruntime_onnx"
        cfg.instance_group.append(
            mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
        )
    else:
        cfg.backend = "python"
        cfg.instance_group.append(
            mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
        )
        for key, value in CPU_HOST_THREADS.parameters().items():
            cfg.parameters[key].string_value = value
    return cfg


def gpu_config(
    name: str,
    serving: Sequence[int] | None = None,
    *,
    kind: str = "gpu",
    runner: str = "auto",
    workspace_mb: int | None = None,
) -> mc.ModelConfig:
    """``configs/gpu.pbtxt``: the Python backend on ``KIND_GPU`` instances running
    ``model_gpu.py`` with the array module ``runner`` (``auto``: CuPy, else PyTorch) for the
    models of :data:`GPU_RUNNER_MODELS`; the others as in the cpu configuration. ``kind="cpu"``
    and ``runner="numpy"`` give the same route on a machine without a GPU (the dry run)."""
    if name not in GPU_RUNNER_MODELS:
        return model_config(name, production=False, serving=serving)
    spec = MODELS[name]
    cfg = mc.ModelConfig(
        name=name,
        backend="python",
        default_model_filename=GPU_MODEL_FILE,
        max_batch_size=spec.max_batch_size,
        input=[_tensor(s, mc.ModelInput) for s in spec.inputs],
        output=[_tensor(s, mc.ModelOutput) for s in spec.outputs],
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=GPU_QUEUE_DELAY_US),
        version_policy=_policy(serving),
    )
    group = {"gpu": mc.ModelInstanceGroup.KIND_GPU, "cpu": mc.ModelInstanceGroup.KIND_CPU}[kind]
    cfg.instance_group.append(mc.ModelInstanceGroup(kind=group, count=1))
    cfg.parameters["runner"].string_value = runner
    cfg.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value = "yes"  # inputs as NumPy
    if workspace_mb:
        cfg.parameters["workspace_mb"].string_value = str(workspace_mb)
    return cfg


def serving_policy(model_dir: Path) -> list[int] | None:
    """The versions a model's configuration pins (``deploy``), or None (newest serves)."""
    path = model_dir / "configs" / "cpu.pbtxt"
    if not path.is_file():
        return None
    cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    return list(cfg.version_policy.specific.versions) or None


def write_configs(model_dir: Path, name: str, serving: Sequence[int] | None = None) -> None:
    """(Re)write the three configurations of one model, each file atomically; ``serving`` pins
    versions, and without it the pinned versions already configured (if any) are kept."""
    (model_dir / "configs").mkdir(parents=True, exist_ok=True)
    serving = serving if serving is not None else serving_policy(model_dir)
    prod = text_format.MessageToString(model_config(name, production=True, serving=serving))
    cpu = text_format.MessageToString(model_config(name, production=False, serving=serving))
    gpu = text_format.MessageToString(gpu_config(name, serving))
    write_atomically(model_dir / "configs" / "cpu.pbtxt", cpu)
    write_atomically(model_dir / "configs" / "gpu.pbtxt", gpu)
    write_atomically(model_dir / "config.pbtxt", _TENSORRT_NOTE + prod)
