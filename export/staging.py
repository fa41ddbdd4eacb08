"""Place built models into a Triton model repository as one new numbered version, atomically.

Every version directory gets its ``model.onnx``, the Python-backend runners (``model.py`` on
onnxruntime, ``model_gpu.py`` for the ``gpu`` configuration, and the modules both import), the
vocabulary, the known plays and, last, a manifest sealed with the sha256 of every other file
(``serving/validation.py`` checks them before a deploy). Everything is written in a staging
directory inside the repository, ``<repository>/catalogue_scorer/.staging/`` (on the
repository's own filesystem, so the final renames never cross devices when the repository is a
mount point; inside a model directory and not named by digits, so it is no model for Triton's
repository index and no version for Triton or :func:`core.contract.versions`), and renamed into
place only when complete; a failed export removes what it wrote, the staging directory
included.

No TensorFlow here: ``export.repository`` (Keras networks) and ``export.from_weights`` (NumPy
weights, for hosts without TensorFlow) both place their versions through :func:`place`.
"""

from __future__ import annotations

import contextlib
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


# Inside ARTIFACT_MODEL's directory: Triton lists every directory at the repository's top level
# as a model (dot names included), but inside a model only digit-named directories are versions.
STAGING_DIR = ".staging"


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


def _move_into(repository: Path, staging: Path, version: int) -> None:
    """Rename every staged model into the repository: a model new to the repository moves as a
    whole directory (configurations included), an existing one gets its configurations
    rewritten (same content: the pin is kept) and the new version directory. On any failure
    everything this call placed is removed again, so the repository is as it was."""
    placed: list[Path] = []
    try:
        for name in SERVED_MODELS:
            model_dir, staged = repository / name, staging / name
            target = model_dir / str(version)
            if target.exists():
                raise ExportError(f"version {version} of {name} already exists")
            if not model_dir.exists():  # ARTIFACT_MODEL's always does: staging is in it
                write_configs(staged, name)
                staged.rename(model_dir)
                placed.append(model_dir)
            else:
                write_configs(model_dir, name)
                (staged / str(version)).rename(target)
                placed.append(target)
    except BaseException:
        for path in reversed(placed):
            shutil.rmtree(path, ignore_errors=True)
        raise


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
    home = repository / ARTIFACT_MODEL
    made_home = not home.exists()  # a first export: a failure removes the directory again
    staging_root = home / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    for stale in staging_root.iterdir():  # left by a killed export: the lock is ours now
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix="export-", dir=staging_root))
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
        _move_into(repository, staging, version)
    except BaseException:
        if made_home:
            shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging_root.rmdir()  # only when empty: another export may be staging there
    return ExportResult(version, {name: report for name, (_, report) in built.items()})
