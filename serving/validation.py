"""Checks a version must pass before Triton sees it: files and their checksums, the tensor
contract, a passing parity record, a smoke inference with onnxruntime, the vocabulary and plays
loaded exactly as the gateway loads them, and its offline metric against the serving one's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.contract import (
    CATALOGUE_SCORER,
    MANIFEST,
    MODELS,
    ONNX_FILE,
    SERVED_MODELS,
    VERSION_FILES,
)
from core.errors import MusicrecError
from core.files import file_digests
from core.similarity import CPU
from gateway.artifacts import ModelVersion

GATE_METRIC = "ndcg@10"


class DeployError(MusicrecError):
    """The deploy was refused or failed; the message says which version serves."""


def _manifest(repository: Path, name: str, version: int) -> dict:
    directory = repository / name / str(version)
    for part in VERSION_FILES:
        if not (directory / part).is_file():
            raise DeployError(f"version {version} of {name} lacks {part}")
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except ValueError as exc:
        raise DeployError(f"version {version} of {name}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise DeployError(f"version {version} of {name}: the manifest is not a JSON object")
    return manifest


def _checksums(repository: Path, name: str, version: int, manifest: dict) -> None:
    """Every file the export sealed is there, unchanged, and nothing was added."""
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or not recorded:
        raise DeployError(f"version {version} of {name}: its manifest records no file "
                          "checksums (exported by an older musicrec); export it again")  # fmt: skip
    found = file_digests(repository / name / str(version), skip=(MANIFEST,))
    changed = sorted(p for p in recorded.keys() | found.keys() if recorded.get(p) != found.get(p))
    if changed:
        more = " ..." if len(changed) > 5 else ""
        raise DeployError(f"version {version} of {name}: checksum mismatch in "
                          f"{', '.join(changed[:5])}{more}")  # fmt: skip


def checksum_problems(repository: Path, version: int) -> str:
    """What differs from the export's seal in ``version`` of every served model ('' when
    nothing): ``musicrec status`` checks the serving version's files with it."""
    problems = []
    for name in SERVED_MODELS:
        try:
            manifest = _manifest(repository, name, version)
            _checksums(repository, name, version, manifest)
        except DeployError as exc:
            problems.append(str(exc))
    return "; ".join(problems)


def _smoke(repository: Path, name: str, version: int) -> None:
    """Run the ONNX file once with onnxruntime: the spec's example feed gives finite outputs."""
    spec = MODELS[name]
    path = repository / name / str(version) / ONNX_FILE
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DeployError(f"version {version} of {name}: model.onnx does not load: {exc}") from None
    declared = sorted(i.name for i in session.get_inputs())
    if declared != sorted(spec.input_names):
        raise DeployError(f"version {version} of {name}: inputs {declared} break the contract")
    try:
        results = session.run(spec.output_names, _sized_feed(session, spec.example_feed()))
    except Exception as exc:
        raise DeployError(f"version {version} of {name}: smoke inference failed: {exc}") from None
    if not all(np.all(np.isfinite(r)) for r in results if r.dtype.kind == "f"):
        raise DeployError(f"version {version} of {name}: smoke inference gave non-finite scores")


def _sized_feed(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict:
    """The spec's example feed with each input's last axis set to the width the model
    declares (``candidate_ranker``'s features are 25 columns, or 29 with tags)."""
    for tensor in session.get_inputs():
        width, value = (tensor.shape or [None])[-1], feed[tensor.name]
        if isinstance(width, int) and value.ndim and value.shape[-1] != width:
            feed[tensor.name] = np.zeros((*value.shape[:-1], width), value.dtype)
    return feed


def _gateway_loads(repository: Path, version: int) -> None:
    """Load the vocabulary, plays and similarity index exactly as the gateway will."""
    try:
        ModelVersion.load(repository, version, CPU)
    except Exception as exc:  # any cause the gateway would meet
        raise DeployError(f"version {version}: the gateway cannot load it: "
                          f"{type(exc).__name__}: {exc}") from None  # fmt: skip


def validate_version(repository: Path, version: int) -> dict:
    """Refuse a broken or incompatible version before Triton sees it; returns its manifest."""
    manifests = {name: _manifest(repository, name, version) for name in SERVED_MODELS}
    fingerprints = {m.get("vocab_fingerprint") for m in manifests.values()}
    if len(fingerprints) != 1:
        raise DeployError(f"version {version}: the models carry different vocabularies")
    for name, manifest in manifests.items():
        if manifest.get("version") != version or manifest.get("model") != name:
            raise DeployError(f"version {version} of {name}: manifest names another version")
        _checksums(repository, name, version, manifest)
        spec = MODELS[name]
        if [i.get("name") for i in manifest.get("inputs", [])] != spec.input_names:
            raise DeployError(f"version {version} of {name}: tensors differ from the contract")
        parity = manifest.get("parity") or {}
        if not parity.get("max_abs_diff", 1.0) <= spec.parity_tolerance:
            raise DeployError(f"version {version} of {name}: no passing parity record")
        _smoke(repository, name, version)
    _gateway_loads(repository, version)
    return manifests[CATALOGUE_SCORER]


def quality(manifest: dict) -> float | None:
    """The version's offline NDCG@10 for known users, if its manifest records one: the served
    default's (``metrics.served``, the ``ranked`` mode) where the run measured it, else the
    network's over the whole catalogue (versions exported before the learned ranker)."""
    metrics = manifest.get("metrics") or {}
    served = (metrics.get("served") or {}).get("known_users") or {}
    value = served.get(GATE_METRIC, (metrics.get("known_users") or {}).get(GATE_METRIC))
    return float(value) if value is not None else None


def metric_gate(new: dict, old: dict | None, max_drop: float, force: bool) -> str:
    """Refuse a version whose NDCG@10 falls more than ``max_drop`` below the serving one's."""
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise DeployError(f"max metric drop must be a finite number >= 0, got {max_drop}")
    if old is None:
        return "first version: no gate"
    new_q, old_q = quality(new), quality(old)
    if new_q is None or old_q is None:
        return f"skipped: {GATE_METRIC} missing from a manifest"
    verdict = f"{GATE_METRIC} {new_q:.4f} vs {old_q:.4f} (allowed drop {max_drop})"
    if new_q < old_q - max_drop:
        if not force:
            raise DeployError(f"refused: {verdict}; use --force to deploy anyway")
        return f"forced past: {verdict}"
    return f"passed: {verdict}"
