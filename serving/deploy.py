"""Redeploys by swapping model versions in a running Triton, with no failed request.

``deploy`` validates a version (files, contract, parity record, a smoke inference with
onnxruntime, and its offline metrics against the serving version's), then swaps:

1. pin both versions in every model's configuration (``version_policy: specific``) and ask
   Triton to load them (explicit model control): the new version loads beside the old one;
2. wait until the gateway answers with the new version (it serves the newest ready one);
3. pin only the new version and load again: Triton unloads the old one after its in-flight
   requests; a request that still names it is retried by the gateway on the new one.

The pinned versions live in the repository's configuration, so a restarted Triton serves the
same version. If Triton cannot load the new version, the old pin is restored and the old
version keeps serving. ``rollback`` swaps back to the version served before, ``status`` lists
the versions. ``deployments.json`` beside the models records what was served when.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import RecommenderClient, RecommenderError
from core.contract import (
    CATALOGUE_SCORER,
    MANIFEST,
    MODELS,
    ONNX_FILE,
    SERVED_MODELS,
    VERSION_FILES,
    ready_versions,
    versions,
)
from core.errors import MusicrecError
from core.modes import DEFAULT_MODE, MODES
from export.triton_config import write_configs

HISTORY_FILE = "deployments.json"
GATE_METRIC = "ndcg@10"
# Loaded last in a swap, so the default mode's model switches once the others serve.
LOAD_ORDER = sorted(SERVED_MODELS, key=lambda name: name in MODES[DEFAULT_MODE].models)


class DeployError(MusicrecError):
    """The deploy was refused or failed; the serving version is unchanged."""


@dataclass(frozen=True)
class DeployConfig:
    """Where the repository, Triton and (optionally) the gateway are, and the deploy rules."""

    repository: Path
    triton_url: str = "127.0.0.1:8001"
    gateway: str | None = None  # host:port: wait until it answers with the new version
    keep: int = 3  # versions kept on disk (the serving one and the rollback target always)
    max_metric_drop: float = 0.01  # NDCG@10 (known users) the new version may lose
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.keep < 2:
            raise ValueError("keep must be >= 2 (the serving version and the rollback target)")


@dataclass(frozen=True)
class DeployReport:
    action: str  # "deploy" or "rollback"
    version: int
    previous: int | None
    seconds: float
    retired: tuple[int, ...]
    gate: str  # what the metric gate decided


# ---------------------------------------------------------------- validation (before Triton)


def _manifest(repository: Path, name: str, version: int) -> dict:
    directory = repository / name / str(version)
    for part in VERSION_FILES:
        if not (directory / part).is_file():
            raise DeployError(f"version {version} of {name} lacks {part}")
    try:
        return json.loads((directory / MANIFEST).read_text())
    except ValueError as exc:
        raise DeployError(f"version {version} of {name}: unreadable manifest: {exc}") from None


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
        results = session.run(spec.output_names, spec.example_feed())
    except Exception as exc:
        raise DeployError(f"version {version} of {name}: smoke inference failed: {exc}") from None
    if not all(np.all(np.isfinite(r)) for r in results if r.dtype.kind == "f"):
        raise DeployError(f"version {version} of {name}: smoke inference gave non-finite scores")


def validate_version(repository: Path, version: int) -> dict:
    """Refuse a broken or incompatible version before Triton sees it; returns its manifest."""
    manifests = {name: _manifest(repository, name, version) for name in SERVED_MODELS}
    fingerprints = {m.get("vocab_fingerprint") for m in manifests.values()}
    if len(fingerprints) != 1:
        raise DeployError(f"version {version}: the two models carry different vocabularies")
    for name, manifest in manifests.items():
        if manifest.get("version") != version or manifest.get("model") != name:
            raise DeployError(f"version {version} of {name}: manifest names another version")
        spec = MODELS[name]
        if [i["name"] for i in manifest.get("inputs", [])] != spec.input_names:
            raise DeployError(f"version {version} of {name}: tensors differ from the contract")
        parity = manifest.get("parity") or {}
        if not parity.get("max_abs_diff", 1.0) <= spec.parity_tolerance:
            raise DeployError(f"version {version} of {name}: no passing parity record")
        _smoke(repository, name, version)
    return manifests[CATALOGUE_SCORER]


def _quality(manifest: dict) -> float | None:
    value = ((manifest.get("metrics") or {}).get("known_users") or {}).get(GATE_METRIC)
    return float(value) if value is not None else None


def metric_gate(new: dict, old: dict | None, max_drop: float, force: bool) -> str:
    """Refuse a version whose NDCG@10 falls more than ``max_drop`` below the serving one's."""
    if old is None:
        return "first version: no gate"
    new_q, old_q = _quality(new), _quality(old)
    if new_q is None or old_q is None:
        return f"skipped: {GATE_METRIC} missing from a manifest"
    verdict = f"{GATE_METRIC} {new_q:.4f} vs {old_q:.4f} (allowed drop {max_drop})"
    if new_q < old_q - max_drop:
        if not force:
            raise DeployError(f"refused: {verdict}; use --force to deploy anyway")
        return f"forced past: {verdict}"
    return f"passed: {verdict}"


# ---------------------------------------------------------------- Triton and the gateway


def served_versions(client: grpcclient.InferenceServerClient) -> set[int]:
    """Versions READY in every served model."""
    return ready_versions(client.get_model_repository_index().models)


def _pin_and_load(cfg: DeployConfig, client, pinned: list[int]) -> None:
    for name in LOAD_ORDER:
        write_configs(cfg.repository / name, name, serving=pinned)
        client.load_model(name)


def _wait_for_gateway(cfg: DeployConfig, version: int) -> None:
    if not cfg.gateway:
        return
    deadline = time.monotonic() + cfg.timeout_s
    with RecommenderClient(cfg.gateway, timeout_s=5) as gateway:
        while time.monotonic() < deadline:
            try:
                if gateway.serving_info().model_version == version:
                    return
            except RecommenderError:
                pass
            time.sleep(0.1)
    raise DeployError(f"the gateway at {cfg.gateway} did not switch to version {version}")


def swap(cfg: DeployConfig, old: int | None, new: int) -> None:
    """Serve ``new`` instead of ``old`` (see the module docstring); restore ``old`` on failure."""
    client = grpcclient.InferenceServerClient(cfg.triton_url)
    try:
        _pin_and_load(cfg, client, sorted({new} | ({old} if old else set())))
    except InferenceServerException as exc:
        if old:
            with contextlib.suppress(InferenceServerException):  # old stays loaded regardless
                _pin_and_load(cfg, client, [old])
        raise DeployError(f"Triton could not load version {new} ({exc.message()}); "
                          f"version {old} keeps serving") from None  # fmt: skip
    if new > (old or 0):
        _wait_for_gateway(cfg, new)  # the gateway serves the newest ready version
    _pin_and_load(cfg, client, [new])
    _wait_for_gateway(cfg, new)


# ---------------------------------------------------------------- history and retirement


def read_history(repository: Path) -> list[dict]:
    path = repository / HISTORY_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def _record(repository: Path, entry: dict) -> None:
    history = [*read_history(repository), entry]
    tmp = repository / f".{HISTORY_FILE}.tmp"
    tmp.write_text(json.dumps(history, indent=2))
    os.replace(tmp, repository / HISTORY_FILE)


def retire(repository: Path, keep: int, protect: set[int], newest_served: int) -> list[int]:
    """Delete the oldest versions beyond ``keep``; never one in ``protect`` or any version
    newer than ``newest_served`` (exported candidates)."""
    on_disk = versions(repository, CATALOGUE_SCORER)
    old = [v for v in on_disk if v <= newest_served and v not in protect]
    room = max(0, keep - len(protect & set(on_disk)))
    doomed = old[: max(0, len(old) - room)]
    for v in doomed:
        for name in SERVED_MODELS:
            shutil.rmtree(repository / name / str(v), ignore_errors=True)
    return doomed


# ---------------------------------------------------------------- commands


def _current(cfg: DeployConfig) -> int | None:
    try:
        served = served_versions(grpcclient.InferenceServerClient(cfg.triton_url))
    except InferenceServerException as exc:
        raise DeployError(f"Triton at {cfg.triton_url} is not reachable: {exc.message()}") from None
    return max(served) if served else None


def _manifest_or_none(repository: Path, version: int | None) -> dict | None:
    if version is None:
        return None
    path = repository / CATALOGUE_SCORER / str(version) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def deploy(
    cfg: DeployConfig, *, run_dir: Path | None = None, version: int | None = None,
    force: bool = False,
) -> DeployReport:  # fmt: skip
    """Export ``run_dir`` (or take exported ``version``), validate it and make it serve."""
    start = time.monotonic()
    repo = Path(cfg.repository)
    previous = _current(cfg)
    if previous is not None:  # pin what serves, so a new candidate never serves by accident
        for name in SERVED_MODELS:
            write_configs(repo / name, name, serving=[previous])
    if run_dir is not None:
        from export.repository import export_run  # TensorFlow: only when exporting

        version = export_run(run_dir, repo).version
    if version is None:
        raise DeployError("give a run directory or --version")
    if version == previous:
        raise DeployError(f"version {version} is already serving")
    manifest = validate_version(repo, version)
    gate = metric_gate(manifest, _manifest_or_none(repo, previous), cfg.max_metric_drop, force)
    swap(cfg, previous, version)
    _record(
        repo,
        {
            "action": "deploy",
            "version": version,
            "previous": previous,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "gate": gate,
        },
    )
    retired = retire(repo, cfg.keep, {version, previous} - {None}, version)  # fmt: skip
    return DeployReport("deploy", version, previous, time.monotonic() - start,
                        tuple(retired), gate)  # fmt: skip


def rollback(cfg: DeployConfig) -> DeployReport:
    """Serve again the version that served before the current one."""
    start = time.monotonic()
    repo = Path(cfg.repository)
    current = _current(cfg)
    earlier = [e["previous"] for e in read_history(repo) if e["version"] == current]
    target = earlier[-1] if earlier else None
    if target is None:
        raise DeployError(f"nothing to roll back to: version {current} has no recorded predecessor")
    validate_version(repo, target)
    swap(cfg, current, target)
    _record(repo, {"action": "rollback", "version": target, "previous": current,
                   "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   "gate": "rollback: no gate"})  # fmt: skip
    return DeployReport("rollback", target, current, time.monotonic() - start, (), "rollback")


@dataclass(frozen=True)
class VersionStatus:
    version: int
    serving: bool
    created: str
    source_run: str
    metric: float | None


def status(cfg: DeployConfig) -> list[VersionStatus]:
    """Every version on disk, which one serves, and its offline NDCG@10."""
    repo = Path(cfg.repository)
    try:
        served = served_versions(grpcclient.InferenceServerClient(cfg.triton_url))
    except InferenceServerException:
        served = set()
    rows = []
    for v in versions(repo, CATALOGUE_SCORER):
        m = _manifest_or_none(repo, v) or {}
        rows.append(VersionStatus(v, v in served, m.get("created", "?"),
                                  str(m.get("source_run", "?")), _quality(m)))  # fmt: skip
    return rows
