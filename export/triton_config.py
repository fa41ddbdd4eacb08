"""Triton model configurations (``config.pbtxt``), built as protobufs from the contract.

Each model gets two: ``config.pbtxt`` for production (onnxruntime backend on GPU instances) and
``configs/cpu.pbtxt`` for the embedded server (Python backend + onnxruntime, selected with
``--model-config-name=cpu``). The version policy is the serving pin that ``deploy`` manages.
Light on purpose (no TensorFlow): deploy imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from core.contract import MODELS, TensorSpec
from core.files import write_atomically

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
    return cfg


def serving_policy(model_dir: Path) -> list[int] | None:
    """The versions a model's configuration pins (``deploy``), or None (newest serves)."""
    path = model_dir / "configs" / "cpu.pbtxt"
    if not path.is_file():
        return None
    cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    return list(cfg.version_policy.specific.versions) or None


def write_configs(model_dir: Path, name: str, serving: Sequence[int] | None = None) -> None:
    """(Re)write both configurations of one model, each file atomically; ``serving`` pins
    versions, and without it the pinned versions already configured (if any) are kept."""
    (model_dir / "configs").mkdir(parents=True, exist_ok=True)
    serving = serving if serving is not None else serving_policy(model_dir)
    prod = text_format.MessageToString(model_config(name, production=True, serving=serving))
    cpu = text_format.MessageToString(model_config(name, production=False, serving=serving))
    write_atomically(model_dir / "configs" / "cpu.pbtxt", cpu)
    write_atomically(model_dir / "config.pbtxt", _TENSORRT_NOTE + prod)
