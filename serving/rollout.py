"""Canary and shadow rollouts: the commands ``start``, ``promote``, ``abort`` and ``figures``.

* ``start`` (``deploy --canary P`` / ``--shadow P``): validates the version as ``deploy`` does,
  publishes the split in the repository (``core/traffic_split.py``: every gateway reads it at its
  version poll), then pins both versions (``version_policy: specific``) and has every Triton
  replica load the new one beside the serving one. The serving version does not change: the
  gateways never serve a version the split names as their own, and route to it only once it is
  ready on every replica.
* ``promote``: removes the split and swaps the new version in through the same zero-failure
  swap as ``deploy`` (recorded as a deploy, so ``rollback`` returns to the version before).
* ``abort``: sets the split to 0% (the gateways stop routing at their next poll), waits
  :data:`SETTLE_S`, pins the serving version alone (Triton unloads the new one after its
  in-flight requests; a request still routed to it is answered by the serving version), then
  removes the split.
* ``figures``: per version, from every gateway's ``/metrics`` endpoint (summed; counts since
  each gateway started; ``serving/gateway_metrics.py``): requests, error ratio, p99, canary
  retries, shadow agreement.

The watcher that aborts a canary is ``serving/canary_watch.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tritonclient.utils import InferenceServerException

from core import traffic_split
from core.contract import SERVED_MODELS
from core.files import repository_lock
from export.triton_config import write_configs
from serving import deploy_records as records
from serving.deploy import (
    DeployConfig,
    DeployError,
    current_version,
    manifest_or_none,
    pin_and_load,
    recover,
    refuse_retired,
    restore,
    swap_recorded,
    triton_fleet,
)
from serving.gateway_metrics import scrape
from serving.validation import metric_gate, validate_version

log = logging.getLogger(__name__)
SETTLE_S = 2.0  # abort: time for the gateways (polling each second) to read the 0% split


@dataclass(frozen=True)
class RolloutReport:
    action: str  # canary, shadow, promote, abort
    version: int  # the new version
    serving: int  # the version that serves after the command
    seconds: float
    gate: str = ""
    split: traffic_split.Rollout | None = None
    recovered: str = ""
    retired: tuple[int, ...] = ()


def running(repository: Path) -> traffic_split.Rollout:
    """The rollout that runs; DeployError when none does."""
    rollout = traffic_split.read(repository)
    if rollout is None:
        raise DeployError("no canary or shadow rollout runs")
    return rollout


def start(cfg: DeployConfig, *, run_dir: Path | None = None, version: int | None = None,
          canary_percent: float = 0.0, shadow_percent: float = 0.0,
          force: bool = False) -> RolloutReport:  # fmt: skip
    """Load ``version`` (or export ``run_dir``) beside the serving version and publish the
    split: ``canary_percent`` of listeners answered by it, ``shadow_percent`` of requests
    copied to it."""
    if not (canary_percent > 0 or shadow_percent > 0):
        raise DeployError("give --canary P or --shadow P (percent, above 0)")
    begin = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        recovered = recover(cfg)
        traffic_split.refuse_running(repo)
        serving = current_version(cfg)
        if serving is None:
            raise DeployError("no version serves yet: deploy one before a canary or shadow")
        for name in SERVED_MODELS:  # pin what serves, so the new one never serves by accident
            write_configs(repo / name, name, serving=[serving])
        if run_dir is not None:
            from export.repository import export_run  # TensorFlow: only when exporting

            version = export_run(run_dir, repo).version
        if version is None:
            raise DeployError("give a run directory or --version")
        if version == serving:
            raise DeployError(f"version {version} is already serving")
        refuse_retired(repo, version, "roll out")
        manifest = validate_version(repo, version)
        gate = metric_gate(manifest, manifest_or_none(repo, serving), cfg.max_metric_drop,
                           force)  # fmt: skip
        rollout = traffic_split.Rollout(serving, version if canary_percent > 0 else None,
                                canary_percent, version if shadow_percent > 0 else None,
                                shadow_percent)  # fmt: skip
        traffic_split.write(repo, rollout)  # before the load: no gateway ever serves it as its own
        fleet = triton_fleet(cfg)
        try:
            pin_and_load(cfg, fleet, sorted({serving, version}))
        except InferenceServerException as exc:
            cause = f"Triton could not load version {version} ({exc.message()})"
            failed = restore(cfg, fleet, serving, version, cause)
            traffic_split.clear(repo)
            raise failed from None
        action = "canary" if rollout.canary is not None else "shadow"
        records.record(repo, {"action": action, "version": version, "previous": serving,
                              "at": records.now(), "gate": gate, "percent": canary_percent,
                              "shadow_percent": shadow_percent})  # fmt: skip
    return RolloutReport(action, version, serving, time.monotonic() - begin, gate, rollout,
                         recovered)  # fmt: skip


def promote(cfg: DeployConfig) -> RolloutReport:
    """Make the rollout's version the serving one (the deploy swap)."""
    begin = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        rollout = running(repo)
        old, new = rollout.serving, rollout.new
        traffic_split.clear(repo)  # from here the gateways follow the swap
        swap_recorded(cfg, "deploy", old, new)
        entry = {"action": "deploy", "version": new, "previous": old, "at": records.now(),
                 "gate": "promoted from a rollout"}  # fmt: skip
        records.record(repo, entry)  # a deploy: rollback returns to the version before
        records.done(repo)
        retired = records.retire(repo, cfg.keep, {old, new}, new, fresh_after=old)
        if retired:  # as deploy does: a later rollback can say what happened
            records.amend_last(repo, {**entry, "retired": retired})
    return RolloutReport("promote", new, new, time.monotonic() - begin, retired=tuple(retired))


def abort(cfg: DeployConfig, reason: str = "by hand") -> RolloutReport:
    """Drop the rollout's version: no listener is routed to it any more, Triton unloads it."""
    begin = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        rollout = running(repo)
        idle = traffic_split.Rollout(rollout.serving, rollout.canary, 0.0, rollout.shadow, 0.0)
        traffic_split.write(repo, idle)
        time.sleep(SETTLE_S)
        try:
            pin_and_load(cfg, triton_fleet(cfg), [rollout.serving])
        except InferenceServerException as exc:
            raise DeployError(f"Triton could not unload version {rollout.new} "
                              f"({exc.message()}); the split stays at 0%, version "
                              f"{rollout.serving} serves; run abort again") from None  # fmt: skip
        traffic_split.clear(repo)
        records.record(repo, {"action": "abort", "version": rollout.new,
                              "previous": rollout.serving, "at": records.now(),
                              "gate": reason})  # fmt: skip
    return RolloutReport("abort", rollout.new, rollout.serving, time.monotonic() - begin,
                         gate=reason)  # fmt: skip


def figures(cfg: DeployConfig, metrics: str) -> dict:
    """The rollout (if any) and the serving and new versions' figures since the gateways
    started, for ``status``."""
    rollout = traffic_split.read(cfg.repository)
    by_version, answered = scrape(metrics)
    out: dict = {"source": f"gateway metrics endpoints {metrics} ({answered} answered; counts "
                           "since each gateway started)", "rollout": rollout}  # fmt: skip
    for v in sorted(by_version, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0)):
        out.setdefault("versions", {})[v] = by_version[v].summary()
    return out
