"""Redeploys by swapping model versions in a running Triton, with no failed request.

``deploy`` validates a version (``serving/validation.py``: files and checksums, contract,
parity record, a smoke inference, the gateway's own load of its vocabulary and plays, and its
offline metric against the serving version's), then swaps:

1. pin both versions in every model's configuration (``version_policy: specific``) and ask
   Triton to load them (explicit model control): the new version loads beside the old one;
2. wait until the gateway answers with the new version (it serves the newest ready one);
3. pin only the new version and load again: Triton unloads the old one after its in-flight
   requests; a request that still names it is retried by the gateway on the new one.

Safety: export, deploy and rollback hold the repository's lock, one at a time. The pin lives
in the repository, so a restarted Triton serves the same version. A swap records its intent
first; if a command dies between steps, the next ``deploy``, ``rollback`` or ``status`` finds
the record and pins the version that served before. Any failure during the swap (Triton cannot
load the version, the gateway does not switch in time) restores the previous pin and says which
version serves. ``rollback`` follows deploy records only.

Replicas: ``triton_url`` may name several Triton servers sharing the repository (a list, or a
``dns:///`` name resolving to each pod; ``serving/fleet.py``). Every step loads on every
replica, and the gateway, which serves the newest version ready on all of them, switches only
once each has it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.utils import InferenceServerException

from client import Credentials, RecommenderClient, RecommenderError
from core import traffic_split
from core.contract import CATALOGUE_SCORER, MANIFEST, SERVED_MODELS, versions
from core.files import compile_python, repository_lock
from core.modes import DEFAULT_MODE, MODES
from export.triton_config import serving_policy, write_configs
from serving import admin_key
from serving import deploy_records as records
from serving.fleet import TritonFleet
from serving.validation import (
    DeployError,
    checksum_problems,
    metric_gate,
    quality,
    validate_version,
)

__all__ = ["DeployConfig", "DeployError", "DeployReport", "deploy", "rollback", "status"]
log = logging.getLogger(__name__)
# Loaded last in a swap, so the default mode's model switches once the others serve.
LOAD_ORDER = sorted(SERVED_MODELS, key=lambda name: name in MODES[DEFAULT_MODE].models)


@dataclass(frozen=True)
class DeployConfig:
    """Where the repository, Triton and (optionally) the gateway are, and the deploy rules."""

    repository: Path
    triton_url: str = "127.0.0.1:8001"  # every replica: a:8001,b:8001 or dns:///name:8001
    gateway: str | None = None  # host:port: wait until it answers with the new version
    keep: int = 3  # deployed versions kept on disk (the last ones served: rollback targets)
    max_metric_drop: float = 0.01  # NDCG@10 (known users) the new version may lose
    timeout_s: float = 120.0
    admin_key: str | None = field(default=None, repr=False)  # unlocks Triton's load/unload
    gateway_credentials: Credentials | None = field(default=None, repr=False)  # TLS, token

    @property
    def admin_headers(self) -> dict[str, str] | None:
        return admin_key.headers(self.admin_key)

    def __post_init__(self) -> None:
        if self.keep < 2:
            raise ValueError("keep must be >= 2 (the serving version and the rollback target)")
        if not (self.max_metric_drop >= 0 and self.max_metric_drop != float("inf")):
            raise ValueError(f"max metric drop must be a finite number >= 0, "
                             f"got {self.max_metric_drop}")  # fmt: skip
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")


@dataclass(frozen=True)
class DeployReport:
    action: str  # "deploy" or "rollback"
    version: int
    previous: int | None
    seconds: float
    retired: tuple[int, ...]
    gate: str  # what the metric gate decided
    recovered: str = ""  # what an interrupted earlier swap left, and how it was repaired
    warnings: tuple[str, ...] = ()  # what went through but deserves a look (a downgrade)


# ---------------------------------------------------------------- Triton and the gateway


def triton_fleet(cfg: DeployConfig) -> TritonFleet:
    return TritonFleet(cfg.triton_url)


def served_versions(cfg: DeployConfig, fleet: TritonFleet) -> set[int]:
    """Versions on disk READY in every served model on every replica."""
    return fleet.served_versions(cfg.repository)


def pin_and_load(cfg: DeployConfig, fleet: TritonFleet, pinned: list[int]) -> None:
    """Pin ``pinned`` in each model's configuration (shared by the replicas) and have every
    replica load it, model by model in :data:`LOAD_ORDER`.

    Triton reloads every loaded version of a model whose configuration files changed (1.5-2.5
    s a model here), so a pin already on disk is not rewritten (its load returns at once), and
    a pin that only drops versions is applied first through :meth:`TritonFleet.narrow`, then
    written: what stays is not reloaded."""
    for name in LOAD_ORDER:
        model_dir = cfg.repository / name
        for version in pinned:  # no bytecode written by Triton while it loads (compile_python)
            compile_python(model_dir / str(version))
        on_disk = serving_policy(model_dir)
        if on_disk == pinned:
            fleet.load_model(name, cfg.admin_headers)
            continue
        dropping = bool(on_disk) and set(pinned) < set(on_disk or ())
        if dropping and fleet.narrow(name, pinned, cfg.admin_headers):
            write_configs(model_dir, name, serving=pinned)
            continue
        write_configs(model_dir, name, serving=pinned)
        fleet.load_model(name, cfg.admin_headers)


def _wait_for_gateway(cfg: DeployConfig, version: int) -> None:
    if not cfg.gateway:
        return
    deadline = time.monotonic() + cfg.timeout_s
    with RecommenderClient(cfg.gateway, timeout_s=5,
                           credentials=cfg.gateway_credentials) as gateway:  # fmt: skip
        while time.monotonic() < deadline:
            with contextlib.suppress(RecommenderError):
                if gateway.serving_info().model_version == version:
                    return
            time.sleep(0.1)
    raise DeployError(f"the gateway at {cfg.gateway} did not switch to version {version} "
                      f"within {cfg.timeout_s:g} s")  # fmt: skip


class SwapFailed(DeployError):
    """A swap failed; ``consistent`` tells whether the previous pin was restored."""

    def __init__(self, message: str, consistent: bool) -> None:
        super().__init__(message)
        self.consistent = consistent


def restore(cfg: DeployConfig, fleet: TritonFleet, old: int | None, new: int,
             cause: str) -> SwapFailed:  # fmt: skip
    """Pin ``old`` again after a failed swap; the error to raise, saying what serves."""
    if old is None:
        with contextlib.suppress(InferenceServerException, OSError):
            pin_and_load(cfg, fleet, [new])
        return SwapFailed(f"{cause}; no earlier version to keep serving", consistent=True)
    try:
        pin_and_load(cfg, fleet, [old])
    except (InferenceServerException, OSError) as exc:
        return SwapFailed(f"{cause}; restoring version {old} failed too ({exc}): the next "
                          "`musicrec status` repairs the pin", consistent=False)  # fmt: skip
    return SwapFailed(f"{cause}; version {old} keeps serving", consistent=True)


def swap_recorded(cfg: DeployConfig, action: str, old: int | None, new: int) -> None:
    """:func:`swap` under an intent record, which stays only if the state is left torn."""
    records.begin(cfg.repository, action, new, old)
    try:
        swap(cfg, old, new)
    except SwapFailed as exc:
        if exc.consistent:
            records.done(cfg.repository)
        raise


def swap(cfg: DeployConfig, old: int | None, new: int) -> None:
    """Serve ``new`` instead of ``old`` (see the module docstring); on any failure, restore
    ``old`` and raise :class:`DeployError` naming the version that serves."""
    fleet = triton_fleet(cfg)
    try:
        pin_and_load(cfg, fleet, sorted({new} | ({old} if old is not None else set())))
        if new > (old or 0):
            _wait_for_gateway(cfg, new)  # the gateway serves the newest ready version
        pin_and_load(cfg, fleet, [new])
        _wait_for_gateway(cfg, new)
    except InferenceServerException as exc:
        cause = f"Triton could not load version {new} ({exc.message()})"
        raise restore(cfg, fleet, old, new, cause) from None
    except DeployError as exc:
        raise restore(cfg, fleet, old, new, str(exc)) from None


REACH_WAIT_S = 15.0  # how long deploy / rollback wait for a Triton that is (re)starting


def current_version(cfg: DeployConfig) -> int | None:
    """The newest version ready everywhere (None when none is). A Triton that does not answer
    is asked again for up to :data:`REACH_WAIT_S`: a supervised Triton being restarted comes
    back meanwhile (its supervisor starts it at once while a deploy holds the lock)."""
    deadline = time.monotonic() + min(cfg.timeout_s, REACH_WAIT_S)
    while True:
        try:
            served = served_versions(cfg, triton_fleet(cfg))
            return max(served) if served else None
        except InferenceServerException as exc:
            if time.monotonic() > deadline:
                raise DeployError(f"Triton at {cfg.triton_url} is not reachable: "
                                  f"{exc.message()}") from None  # fmt: skip
            time.sleep(0.5)


def recover(cfg: DeployConfig) -> str:
    """Finish a swap that died between its steps: pin the version that served before it
    (or the new one, if none did). Returns what was done ('' when nothing was pending)."""
    intent = records.pending(cfg.repository)
    if intent is None:
        return ""
    keep = intent["previous"] if intent.get("previous") is not None else intent["version"]
    try:
        pin_and_load(cfg, triton_fleet(cfg), [keep])
    except InferenceServerException as exc:
        raise DeployError(f"an interrupted {intent['action']} of version {intent['version']} "
                          f"needs repair, but Triton refused version {keep}: "
                          f"{exc.message()}") from None  # fmt: skip
    _wait_for_gateway(cfg, keep)
    records.done(cfg.repository)
    return (f"recovered an interrupted {intent['action']} of version {intent['version']}: "
            f"version {keep} serves")  # fmt: skip


def refuse_retired(repository: Path, version: int, doing: str = "deploy") -> None:
    """A DeployError naming ``version`` as retired when a deploy deleted it."""
    entry = records.retired_by(repository, version)
    if entry is not None:
        raise DeployError(f"cannot {doing} version {version}: it was retired (deleted from "
                          f"disk) by the deploy of version {entry.get('version')} at "
                          f"{entry.get('at', '?')}; --keep sets how many deployed versions "
                          "stay")  # fmt: skip


def manifest_or_none(repository: Path, version: int | None) -> dict | None:
    if version is None:
        return None
    path = repository / CATALOGUE_SCORER / str(version) / MANIFEST
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


# ---------------------------------------------------------------- commands


def deploy(
    cfg: DeployConfig, *, run_dir: Path | None = None, version: int | None = None,
    force: bool = False,
) -> DeployReport:  # fmt: skip
    """Export ``run_dir`` (or take exported ``version``), validate it and make it serve."""
    start = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        recovered = recover(cfg)
        traffic_split.refuse_running(repo)  # a canary or shadow: promote or abort it first
        previous = current_version(cfg)
        if previous is not None:  # pin what serves, so a new candidate never serves by accident
            for name in SERVED_MODELS:
                if serving_policy(repo / name) != [previous]:  # unchanged: Triton reloads nothing
                    write_configs(repo / name, name, serving=[previous])
        if run_dir is not None:
            from export.repository import export_run  # TensorFlow: only when exporting

            version = export_run(run_dir, repo).version
        if version is None:
            raise DeployError("give a run directory or --version")
        if version == previous:
            raise DeployError(f"version {version} is already serving")
        refuse_retired(repo, version)
        manifest = validate_version(repo, version)
        warnings = []
        if previous is not None and version < previous:
            warnings.append(f"version {version} is older than version {previous}, which served: "
                            f"a downgrade (to undo it, `rollback` serves {previous} "
                            f"again)")  # fmt: skip
        gate = metric_gate(manifest, manifest_or_none(repo, previous), cfg.max_metric_drop,
                           force)  # fmt: skip
        swap_recorded(cfg, "deploy", previous, version)
        entry = {"action": "deploy", "version": version, "previous": previous,
                 "at": records.now(), "gate": gate}  # fmt: skip
        records.record(repo, entry)
        records.done(repo)
        retired = records.retire(repo, cfg.keep, {version, previous} - {None}, version,
                                 fresh_after=previous)  # fmt: skip
        if retired:  # named in the history, so a later rollback can say what happened
            records.amend_last(repo, {**entry, "retired": retired})
    return DeployReport("deploy", version, previous, time.monotonic() - start,
                        tuple(retired), gate, recovered, tuple(warnings))  # fmt: skip


def rollback(cfg: DeployConfig) -> DeployReport:
    """Serve again the version that served before the current one was deployed."""
    start = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        recovered = recover(cfg)
        traffic_split.refuse_running(repo)
        current = current_version(cfg)
        away_from = current  # the version rolled back from: serving, or pinned and broken
        if current is None:  # the pinned version is broken: back to the last healthy one
            broken = pinned_versions(repo)
            away_from = max(broken, default=None)
            target = records.last_healthy(repo, exclude=broken)
            if target is None:
                raise DeployError(
                    f"nothing to roll back to: no version is ready in Triton (pinned: "
                    f"{', '.join(map(str, sorted(broken))) or 'none'}) and the deploy records "
                    "name no other version still on disk")  # fmt: skip
        else:
            target = records.rollback_target(repo, current)
            if target is None:
                raise DeployError(f"nothing to roll back to: no deploy of version {current} "
                                  "records a predecessor")  # fmt: skip
        refuse_retired(repo, target, "roll back to")
        validate_version(repo, target)
        swap_recorded(cfg, "rollback", current, target)
        records.record(repo, {"action": "rollback", "version": target, "previous": away_from,
                              "at": records.now(), "gate": "rollback: no gate"})  # fmt: skip
        records.done(repo)
    return DeployReport("rollback", target, away_from, time.monotonic() - start, (), "rollback",
                        recovered)  # fmt: skip


def pinned_versions(repository: Path) -> set[int]:
    """The versions any served model's configuration pins (a broken pin may differ by model)."""
    return {v for name in SERVED_MODELS for v in serving_policy(repository / name) or ()}


@dataclass(frozen=True)
class VersionStatus:
    version: int
    serving: bool
    created: str
    source_run: str
    metric: float | None
    pinned: bool = False  # the repository's configuration pins it (pinned, not serving: broken)
    problem: str = ""  # a serving or pinned version's files that differ from its manifest


def status(cfg: DeployConfig) -> tuple[list[VersionStatus], str]:
    """Every version on disk, which one serves, and its offline NDCG@10; first repairs what an
    interrupted swap left (returned as the second item, '' when nothing)."""
    repo = Path(cfg.repository)
    recovered = ""
    try:
        intent = records.pending(repo)
    except records.RecordError as exc:  # say what was found; the rows show what to fix
        intent, recovered = None, (f"{exc.__cause__ or exc}: nothing was repaired; the rows "
                                   "below say what each model pins and what serves; delete "
                                   "the file once that is what you want")  # fmt: skip
    if intent is not None:
        with repository_lock(repo):
            recovered = recover(cfg)
    try:
        served = served_versions(cfg, triton_fleet(cfg))
    except InferenceServerException:
        served = set()
    pinned = set(serving_policy(repo / CATALOGUE_SCORER) or ())
    rows = []
    for v in versions(repo, CATALOGUE_SCORER):
        m = manifest_or_none(repo, v) or {}
        problem = checksum_problems(repo, v) if v in served or v in pinned else ""
        rows.append(VersionStatus(v, v in served, m.get("created", "?"),
                                  str(m.get("source_run", "?")), quality(m),
                                  v in pinned, problem))  # fmt: skip
    return rows, recovered
