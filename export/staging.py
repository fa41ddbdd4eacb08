"""Place built models into a Triton model repository as one new numbered version, atomically.

Every version directory gets its ``model.onnx``, the Python-backend runners (``model.py`` on
onnxruntime, ``model_gpu.py`` for the ``gpu`` configuration, and the modules both import), the
vocabulary, the known plays and, last, a manifest sealed with the sha256 of every other file
(``serving/validation.py`` checks them before a deploy). Everything is written in a staging
directory beside the repository and renamed into place only when complete.

No TensorFlow here: ``export.repository`` (Keras networks) and ``export.from_weights`` (NumPy
weights, for hosts without TensorFlow) both place their versions through :func:`place`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import scipy.sparse as sp

from core.contract import (
    ARTIFACT_MODEL,
    ITEM_NEIGHBOURS,
    MANIFEST,
    MODELS,
    ONNX_FILE,
    PLAYS,
    PYTHON_MODEL_FILE,
    SERVED_MODELS,
    VOCAB_DIR,
    versions,
)
from core.errors import MusicrecError
from core.files import file_digests
from export.triton_config import GPU_MODEL_FILE, write_configs

_HERE = Path(__file__).resolve().parent
# File in each version directory <- its source in export/ (the runners import the last two).
RUNNER_FILES = {
    PYTHON_MODEL_FILE: _HERE / "python_model.py",
    GPU_MODEL_FILE: _HERE / "python_gpu_model.py",
    "request_batching.py": _HERE / "request_batching.py",
    "gpu_scorers.py": _HERE / "gpu_scorers.py",
}


class ExportError(MusicrecError):
    """The run could not be exported; the repository is unchanged."""


@dataclass(frozen=True)
class ExportResult:
    version: int
    parity: dict[str, Any]  # by model name: its ParityReport


def next_version(repository: Path) -> int:
    return 1 + max((v for n in SERVED_MODELS for v in versions(repository, n)), default=0)


def write_version(
    directory: Path, proto: onnx.ModelProto, vocab_dir: Path, plays: sp.csr_matrix
) -> None:
    directory.mkdir(parents=True)
    onnx.save(proto, directory / ONNX_FILE)
    for name, source in RUNNER_FILES.items():
        shutil.copy2(source, directory / name)
    shutil.copytree(vocab_dir, directory / VOCAB_DIR)
    sp.save_npz(directory / PLAYS, plays)


def seal(directory: Path, manifest: dict) -> None:
    """Write the manifest last, with the sha256 of every other file of the version."""
    files = file_digests(directory, skip=(MANIFEST,))
    (directory / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2))


def _as_dict(report: Any) -> dict:
    return report if isinstance(report, dict) else dataclasses.asdict(report)


def place(
    repository: Path,
    built: dict[str, tuple[onnx.ModelProto, Any]],
    vocab_dir: Path,
    plays: sp.csr_matrix,
    provenance: dict,
    table: sp.csr_matrix,
    extra: Callable[[Path, int], None] | None = None,
) -> ExportResult:
    """Write every model of ``built`` (name -> (ONNX proto, parity report)) as the next version;
    ``extra(staging, version)`` may add files before the versions are sealed. The caller holds
    the repository's lock."""
    version = next_version(repository)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=repository.parent))
    manifests = {}
    try:
        for name, (proto, report) in built.items():
            spec = MODELS[name]
            manifests[name] = {
                "model": name,
                "version": version,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **provenance,
                "users": plays.shape[0],  # the rows "users" / "artists" inputs may index
                "artists": plays.shape[1],
                "inputs": [dataclasses.asdict(s) for s in spec.inputs],
                "outputs": [dataclasses.asdict(s) for s in spec.outputs],
                "parity": _as_dict(report),
            }
            write_version(staging / name / str(version), proto, vocab_dir, plays)
        sp.save_npz(staging / ARTIFACT_MODEL / str(version) / ITEM_NEIGHBOURS, table,
                    compressed=False)  # fmt: skip
        if extra is not None:
            extra(staging, version)
        for name, manifest in manifests.items():
            seal(staging / name / str(version), manifest)
        placed: list[Path] = []
        try:
            for name in SERVED_MODELS:
                write_configs(repository / name, name)
                target = repository / name / str(version)
                if target.exists():
                    raise ExportError(f"version {version} of {name} already exists")
                (staging / name / str(version)).rename(target)
                placed.append(target)
        except BaseException:
            for target in placed:
                shutil.rmtree(target, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(version, {name: report for name, (_, report) in built.items()})
