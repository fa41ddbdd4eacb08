"""Write a trained run into a Triton model repository as a new numbered version, atomically.

Layout (one export = the same version number in both models)::

    model_repository/<model>/config.pbtxt        production: onnxruntime_onnx on GPU instances
    model_repository/<model>/configs/cpu.pbtxt   embedded: Python backend + onnxruntime, CPU
    model_repository/<model>/<v>/model.onnx
    model_repository/<model>/<v>/model.py        the Python-backend runner (export/python_model.py)
    model_repository/<model>/<v>/manifest.json   version, source run, fingerprints, metrics, tensors
    model_repository/<model>/<v>/vocab/          users.json, artists.json (index <-> id/name)
    model_repository/<model>/<v>/plays.npz       known users' plays, for the similar-user lookup
    model_repository/pair_scorer/<v>/model.savedmodel/   the same network for TF Serving users

Everything is built and parity-checked in a staging directory beside the repository and renamed
into place only when complete; a failed export leaves the repository as it was. Version numbers
only increase and an existing version is never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import onnx
import scipy.sparse as sp

from core.contract import (
    CATALOGUE_SCORER,
    MANIFEST,
    MODELS,
    ONNX_FILE,
    PAIR_SCORER,
    PLAYS,
    PYTHON_MODEL_FILE,
    SERVED_MODELS,
    VOCAB_DIR,
    versions,
)
from core.errors import MusicrecError
from core.files import file_digests, repository_lock
from export.onnx_models import catalogue_scorer, pair_scorer
from export.parity import ParityReport, check_catalogue_scorer, check_pair_scorer
from export.triton_config import write_configs
from training.models.network import NetworkWeights
from training.run import load_run

PYTHON_MODEL = Path(__file__).resolve().parent / "python_model.py"
Builder = Callable[[keras.Model], onnx.ModelProto]
Gate = Callable[[keras.Model, onnx.ModelProto], ParityReport]
# How each served model is built from the trained network, and the gate it must pass.
BUILDERS: dict[str, tuple[Builder, Gate]] = {
    PAIR_SCORER: (pair_scorer, check_pair_scorer),
    CATALOGUE_SCORER: (lambda m: catalogue_scorer(NetworkWeights.from_model(m)),
                       check_catalogue_scorer),
}  # fmt: skip
if set(BUILDERS) != set(MODELS):  # pragma: no cover - a model spec without its builder
    raise ImportError(f"models {sorted(MODELS)} but builders {sorted(BUILDERS)}")


class ExportError(MusicrecError):
    """The run could not be exported; the repository is unchanged."""


@dataclass(frozen=True)
class ExportResult:
    version: int
    parity: dict[str, ParityReport]  # by model name


def next_version(repository: Path) -> int:
    return 1 + max((v for n in SERVED_MODELS for v in versions(repository, n)), default=0)


def _write_version(
    directory: Path, proto: onnx.ModelProto, vocab_dir: Path, plays: sp.csr_matrix
) -> None:
    directory.mkdir(parents=True)
    onnx.save(proto, directory / ONNX_FILE)
    shutil.copy2(PYTHON_MODEL, directory / PYTHON_MODEL_FILE)
    shutil.copytree(vocab_dir, directory / VOCAB_DIR)
    sp.save_npz(directory / PLAYS, plays)


def _seal(directory: Path, manifest: dict) -> None:
    """Write the manifest last, with the sha256 of every other file of the version."""
    files = file_digests(directory, skip=(MANIFEST,))
    (directory / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2))


def export_run(run_dir: Path | str, repository: Path | str) -> ExportResult:
    """Export a seed/dnn run as the next version of both models; raise :class:`ExportError`."""
    try:
        run = load_run(run_dir)
        keras_model = run.load_model()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot read run {run_dir}: {exc}") from exc
    provenance = {
        "source_run": str(Path(run.path).resolve()),
        "data_fingerprint": run.data_info.get("fingerprint"),
        "vocab_fingerprint": run.vocab.fingerprint(),
        "metrics": {k: run.metrics.get(k) for k in ("known_users", "new_users")},
    }
    return export_network(
        keras_model, repository, vocab_dir=run.path / "vocab", plays=run.plays,
        provenance=provenance,
    )  # fmt: skip


def export_network(
    keras_model: keras.Model,
    repository: Path | str,
    *,
    vocab_dir: Path,
    plays: sp.csr_matrix,
    provenance: dict,
) -> ExportResult:
    """Export a trained network with its vocabulary and known users' plays as the next version
    of both models, after the parity gates; the repository is untouched on any failure."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, (build, gate) in BUILDERS.items():
        proto = build(keras_model)
        built[name] = (proto, gate(keras_model, proto))

    with repository_lock(repository):  # one export or deploy at a time
        return _place(keras_model, repository, built, vocab_dir, plays, provenance)


def _place(keras_model: keras.Model, repository: Path, built: dict, vocab_dir: Path,
           plays: sp.csr_matrix, provenance: dict) -> ExportResult:  # fmt: skip
    version = next_version(repository)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=repository.parent))
    manifests = {}
    try:
        for name, (proto, report) in built.items():
            spec = MODELS[name]
            manifest = {
                "model": name,
                "version": version,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **provenance,
                "users": plays.shape[0],  # the rows "users" / "artists" inputs may index
                "artists": plays.shape[1],
                "inputs": [asdict(s) for s in spec.inputs],
                "outputs": [asdict(s) for s in spec.outputs],
                "parity": asdict(report),
            }
            manifests[name] = manifest
            _write_version(staging / name / str(version), proto, vocab_dir, plays)
        # The same network as a SavedModel, for TF Serving and other TensorFlow tools.
        keras_model.export(
            staging / PAIR_SCORER / str(version) / "model.savedmodel",
            format="tf_saved_model",
            verbose=False,
        )
        for name, manifest in manifests.items():
            _seal(staging / name / str(version), manifest)
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
