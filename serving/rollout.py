"""Canary, shadow and interleave rollouts: the commands ``start``, ``promote``, ``abort`` and
``figures``.

* ``start`` (``deploy --canary P`` / ``--shadow P`` / ``--interleave P``, P in (0, 100];
  an interleave alone): validates the version as
  ``deploy`` does, takes a baseline of every gateway's counters (when their metrics endpoints
  are given), publishes the split in the repository (``core/traffic_split.py``: every gateway
  reads it at its version poll), then pins both versions (``version_policy: specific``) and
  has every Triton replica load the new one beside the serving one. The serving version does
  not change: the gateways never serve a version the split names as their own, and route to
  it only once it is ready on every replica.
* ``promote``: only with the watcher's recorded "healthy" verdict for this rollout (or
  ``force``); removes the split and swaps the new version in through the same zero-failure
  swap as ``deploy`` (recorded as a deploy, so ``rollback`` returns to the version before).
* ``abort``: sets the split to 0%, waits until every gateway reports it routes nothing to the
  new version (``musicrec_gateway_rollout_percent``, with ``metrics``; bounded by
  ``settle_timeout_s``) or, without ``metrics``, :func:`default_settle_s`; pins the serving
  version alone (Triton unloads the new one after its in-flight requests; a request still
  routed to it is answered by the serving version), then removes the split. It works on an
  unreadable split too: the version kept is then the one :func:`serving_of_pin` names.
* ``figures``: per role (serving, canary, shadow), per gateway and in total, from every
  gateway's ``/metrics`` (``serving/gateway_metrics.py``): this rollout's window (less the
  baseline ``start`` took), else counts since each gateway started.

Beside the split, ``.rollout-state.json`` keeps what ``start`` and the watcher
(``serving/canary_watch.py``) learnt of this rollout: its baseline and the last verdict.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tritonclient.utils import InferenceServerException

from core import traffic_split
from core.contract import CATALOGUE_SCORER, SERVED_MODELS
from core.files import repository_lock, write_atomically
from core.sequential_test import interleaving_test
from export.triton_config import serving_policy, write_configs
from gateway.config import GatewayConfig
from serving import deploy_records as records
from serving import gateway_metrics as gm
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
from serving.validation import metric_gate, validate_version

log = logging.getLogger(__name__)
STATE_FILE = ".rollout-state.json"  # beside traffic_split.ROLLOUT_FILE: baseline, verdict
SETTLE_TIMEOUT_S = 30.0  # abort with metrics: the longest wait for every gateway to stop
ROLES = ("serving", "canary", "shadow", "interleave")


def default_settle_s() -> float:
    """Abort without metrics: two of the gateway's default version polls."""
    return 2 * GatewayConfig().poll_interval_s


@dataclass(frozen=True)
class RolloutReport:
    action: str  # canary, shadow, promote, abort
    version: int | None  # the new version (None: an unreadable split named none)
    serving: int  # the version that serves after the command
    seconds: float
    gate: str = ""
    split: traffic_split.Rollout | None = None
    recovered: str = ""
    retired: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()  # what went through but deserves a look


def running(repository: Path) -> traffic_split.Rollout:
    """The rollout that runs; DeployError when none does (RolloutError: unreadable)."""
    rollout = traffic_split.read(repository)
    if rollout is None:
        raise DeployError("no canary or shadow rollout runs, nor an interleave")
    return rollout


def check_percent(flag: str, value: float | None) -> None:
    """Refuse a rollout share outside (0, 100] (``--canary 0`` would route nobody)."""
    if value is not None and not 0 < value <= 100:
        raise DeployError(f"{flag} {value:g}: give a percent above 0 and at most 100 (without "
                          f"{flag}, `deploy` swaps the version in for everyone)")  # fmt: skip


# ---------------------------------------------------------------- the state beside the split


def read_state(repository: Path) -> dict | None:
    """What ``start`` and the watcher recorded of the rollout (None: nothing readable)."""
    path = Path(repository) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): no baseline or verdict for this rollout", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_state(repository: Path, state: dict) -> None:
    write_atomically(Path(repository) / STATE_FILE, json.dumps(state))


def _clear(repository: Path) -> None:
    traffic_split.clear(repository)
    (Path(repository) / STATE_FILE).unlink(missing_ok=True)


def state_of(repository: Path, rollout: traffic_split.Rollout) -> dict | None:
    """The recorded state when it belongs to ``rollout`` (not to an earlier one)."""
    state = read_state(repository)
    return state if state and state.get("rollout") == asdict(rollout) else None


def record_verdict(repository: Path, rollout: traffic_split.Rollout, verdict: dict) -> bool:
    """Record the watcher's ``verdict`` for ``rollout`` if it still runs (False: it ended)."""
    with repository_lock(repository), contextlib.suppress(traffic_split.RolloutError):
        if traffic_split.read(repository) == rollout:
            state = state_of(repository, rollout) or {"rollout": asdict(rollout)}
            _write_state(repository, {**state, "verdict": {**verdict, "at": records.now()}})
            return True
    return False


def baseline(metrics: str | None) -> dict | None:
    """Every gateway's counters now (``{address: text | None}``), or None without targets."""
    if not metrics:
        return None
    texts = gm.scrape_texts(metrics)
    return {a: None if t is None else gm.kept_lines(t) for a, t in texts.items()}


# ---------------------------------------------------------------- the commands


def check_shares(canary: float | None, shadow: float | None, interleave: float | None) -> None:
    """Refuse shares out of (0, 100], none at all, or an interleave beside another role."""
    if canary is None and shadow is None and interleave is None:
        raise DeployError("give --canary P, --shadow P or --interleave P (percent, above 0)")
    if interleave is not None and (canary is not None or shadow is not None):
        raise DeployError("--interleave runs alone: drop --canary/--shadow (an interleaved "
                          "listener already gets both versions)")  # fmt: skip
    check_percent("--canary", canary)
    check_percent("--shadow", shadow)
    check_percent("--interleave", interleave)


def _split(serving: int, version: int, canary: float | None, shadow: float | None,
           interleave: float | None) -> traffic_split.Rollout:  # fmt: skip
    if interleave:
        return traffic_split.Rollout(serving, interleave=version, interleave_percent=interleave)
    return traffic_split.Rollout(serving, version if canary else None, canary or 0.0,
                                 version if shadow else None, shadow or 0.0)  # fmt: skip


def start(cfg: DeployConfig, *, run_dir: Path | None = None, version: int | None = None,
          canary_percent: float | None = None, shadow_percent: float | None = None,
          interleave_percent: float | None = None, force: bool = False,
          metrics: str | None = None) -> RolloutReport:  # fmt: skip
    """Load ``version`` (or export ``run_dir``) beside the serving version and publish the
    split: ``canary_percent`` of listeners answered by it, ``shadow_percent`` of requests
    copied to it, or (alone) ``interleave_percent`` of listeners answered by both versions'
    lists interleaved. ``metrics``: the gateways' metrics endpoints, for this rollout's
    baseline."""
    check_shares(canary_percent, shadow_percent, interleave_percent)
    if run_dir is None and version is None:
        raise DeployError("give a run directory or --version")
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
        if version == serving:
            raise DeployError(f"version {version} is already serving")
        refuse_retired(repo, version, "roll out")
        manifest = validate_version(repo, version)
        gate = metric_gate(manifest, manifest_or_none(repo, serving), cfg.max_metric_drop,
                           force)  # fmt: skip
        rollout = _split(serving, version, canary_percent, shadow_percent, interleave_percent)
        state = {"rollout": asdict(rollout), "started_at": records.now(), "metrics": metrics,
                 "baseline": baseline(metrics), "verdict": None}  # fmt: skip
        _write_state(repo, state)
        traffic_split.write(repo, rollout)  # before the load: no gateway ever serves it as its own
        fleet = triton_fleet(cfg)
        try:
            pin_and_load(cfg, fleet, sorted({serving, version}))
        except InferenceServerException as exc:
            cause = f"Triton could not load version {version} ({exc.message()})"
            failed = restore(cfg, fleet, serving, version, cause)
            _clear(repo)
            raise failed from None
        action = rollout.kind
        records.record(repo, {"action": action, "version": version, "previous": serving,
                              "at": records.now(), "gate": gate, "percent": canary_percent or 0.0,
                              "shadow_percent": shadow_percent or 0.0,
                              "interleave_percent": interleave_percent or 0.0})  # fmt: skip
    return RolloutReport(action, version, serving, time.monotonic() - begin, gate, rollout,
                         recovered)  # fmt: skip


def refuse_unjudged(repository: Path, rollout: traffic_split.Rollout) -> None:
    """A DeployError unless the watcher recorded "healthy" for this very rollout."""
    verdict = (state_of(repository, rollout) or {}).get("verdict")
    if verdict and verdict.get("verdict") == "healthy":
        return
    said = (f"the last verdict was {verdict['verdict']!r} ({verdict.get('reason', '')})"
            if verdict else "no watcher verdict is recorded for it")  # fmt: skip
    what = {"canary": "canary", "interleave": "interleaving",
            "shadow": "shadow (no watcher judges a shadow)"}[rollout.kind]  # fmt: skip
    raise DeployError(f"promote refused: the {what} of version {rollout.new} has no healthy "
                      f"verdict; {said}. Run `musicrec deploy watch --watch S "
                      "--gateway-metrics TARGET` first, or promote with --force")  # fmt: skip


def promote(cfg: DeployConfig, *, force: bool = False) -> RolloutReport:
    """Make the rollout's version the serving one (the deploy swap); refused without the
    watcher's healthy verdict for this rollout unless ``force``."""
    begin = time.monotonic()
    repo = Path(cfg.repository)
    with repository_lock(repo):
        rollout = running(repo)
        if not force:
            refuse_unjudged(repo, rollout)
        old, new = rollout.serving, rollout.new
        _clear(repo)  # from here the gateways follow the swap
        swap_recorded(cfg, "deploy", old, new)
        gate = "promoted from a rollout" + (
            " (--force, without a healthy verdict)" if force else ""
        )
        entry = {"action": "deploy", "version": new, "previous": old, "at": records.now(),
                 "gate": gate}  # fmt: skip
        records.record(repo, entry)  # a deploy: rollback returns to the version before
        records.done(repo)
        retired = records.retire(repo, cfg.keep, {old, new}, new, fresh_after=old)
        if retired:  # as deploy does: a later rollback can say what happened
            records.amend_last(repo, {**entry, "retired": retired})
    return RolloutReport("promote", new, new, time.monotonic() - begin, retired=tuple(retired))


def serving_of_pin(cfg: DeployConfig) -> tuple[int, int | None]:
    """(the version to keep, the rollout's version if known) when the split is unreadable:
    the pin's only version; else the one the last canary or shadow record names as serving;
    else the pinned version deploys last made serve; else the oldest pinned one."""
    pinned = set(serving_policy(Path(cfg.repository) / CATALOGUE_SCORER) or ())
    if not pinned:
        serving = current_version(cfg)
        if serving is None:
            raise DeployError("the split is unreadable and no version is pinned or ready")
        return serving, None
    if len(pinned) == 1:
        return next(iter(pinned)), None
    history: list[dict] = []
    with contextlib.suppress(records.RecordError):
        history = records.read_history(cfg.repository)
    for entry in reversed(history):
        rolled = entry.get("action") in ("canary", "shadow", "interleave")
        if rolled and entry.get("previous") in pinned:
            return entry["previous"], entry.get("version")
    order: list[int] = []
    with contextlib.suppress(records.RecordError):
        order = records.served_order(cfg.repository)
    keep = next((v for v in order if v in pinned), min(pinned))
    return keep, max(pinned - {keep})


def settle(metrics: str | None, version: int | None, settle_s: float,
           timeout_s: float) -> str:  # fmt: skip
    """Wait until no gateway routes to ``version`` (''), or say why the wait ended without it."""
    if not metrics or version is None:
        time.sleep(settle_s)
        return ""
    deadline = time.monotonic() + timeout_s
    while True:
        texts = gm.scrape_texts(metrics, timeout_s=1.0)
        splits = {a: gm.parse_split(t) for a, t in texts.items() if t is not None}
        pending = [a for a, t in texts.items() if t is None or splits[a].routes(version)]
        silent = [a for a, s in splits.items() if not s.reports]  # export no rollout gauge
        pending = [a for a in pending if a not in silent]
        if not texts or (not pending and silent):
            time.sleep(settle_s)
            return (f"gateways {', '.join(silent) or metrics} report no rollout split: waited "
                    f"{settle_s:g} s instead")  # fmt: skip
        if not pending:
            return ""
        if time.monotonic() >= deadline:
            return (f"gateways {', '.join(pending)} did not report the 0% split within "
                    f"{timeout_s:g} s; unloaded anyway (the serving version answers whatever "
                    "still reaches the old one)")  # fmt: skip
        time.sleep(0.1)


def abort(cfg: DeployConfig, reason: str = "by hand", *, metrics: str | None = None,
          settle_s: float | None = None,
          settle_timeout_s: float = SETTLE_TIMEOUT_S) -> RolloutReport:  # fmt: skip
    """Drop the rollout's version: no listener is routed to it any more, Triton unloads it.
    An unreadable split is replaced by a 0% one and cleared (see the module)."""
    settle_s = default_settle_s() if settle_s is None else settle_s
    begin = time.monotonic()
    repo = Path(cfg.repository)
    warnings: list[str] = []
    with repository_lock(repo):
        try:
            rollout = running(repo)
            serving, new = rollout.serving, rollout.new
            idle = traffic_split.Rollout(serving, rollout.canary, 0.0, rollout.shadow, 0.0,
                                         rollout.interleave, 0.0)  # fmt: skip
        except traffic_split.RolloutError as exc:
            serving, new = serving_of_pin(cfg)
            warnings.append(f"{exc}; kept version {serving}, the serving pin's")
            idle = traffic_split.Rollout(serving, new) if new is not None else None
        if idle is not None:
            traffic_split.write(repo, idle)
        waited = settle(metrics, new, settle_s, settle_timeout_s)
        warnings += [waited] if waited else []
        try:
            pin_and_load(cfg, triton_fleet(cfg), [serving])
        except InferenceServerException as exc:
            raise DeployError(f"Triton could not unload version {new} ({exc.message()}); the "
                              f"split stays at 0%, version {serving} serves; run abort "
                              "again") from None  # fmt: skip
        _clear(repo)
        records.record(repo, {"action": "abort", "version": new, "previous": serving,
                              "at": records.now(), "gate": reason})  # fmt: skip
    return RolloutReport("abort", new, serving, time.monotonic() - begin, gate=reason,
                         warnings=tuple(warnings))  # fmt: skip


# ---------------------------------------------------------------- status figures


def roles_of(rollout: traffic_split.Rollout | None) -> dict[str, str]:
    """``{version label: role}`` of a rollout (empty when none runs)."""
    if rollout is None:
        return {}
    out = {str(rollout.serving): "serving"}
    out |= {str(rollout.canary): "canary"} if rollout.canary is not None else {}
    out |= {str(rollout.interleave): "interleave"} if rollout.interleave is not None else {}
    return out | ({str(rollout.shadow): "shadow"} if rollout.shadow is not None else {})


def _windowed(texts: dict[str, str | None], base: dict | None,
              ) -> tuple[dict[str, dict[str, gm.VersionFigures]], list[str]]:  # fmt: skip
    """Each answering gateway's figures since the baseline, and the gateways counted since
    they (re)started instead: restarted since the baseline, or not in it."""
    out, restarted = {}, []
    for address, text in texts.items():
        if text is None:
            continue
        now = gm.by_version(text)
        if base is None:
            out[address] = now
            continue
        before = base.get(address)
        delta, reset = gm.since(now, gm.by_version(before) if before else {})
        out[address] = delta
        restarted += [address] if reset or not before else []
    return out, restarted


def _by_role(figures: dict[str, gm.VersionFigures], roles: dict[str, str]) -> dict[str, dict]:
    return {roles[v]: {**figures[v].summary(), "version": v} for v in sorted(figures) if v in roles}


def _version_order(label: str) -> tuple[bool, int]:
    return (not label.isdigit(), int(label) if label.isdigit() else 0)


def tally(candidate: gm.VersionFigures | None, alpha: float = 0.05) -> dict:
    """An interleaving's running tally (the candidate's wins, losses, ties, answers
    interleaved and fallbacks, summed over gateways) and the sequential test on it."""
    f = candidate or gm.VersionFigures()
    r = interleaving_test(round(f.wins), round(f.losses), round(f.ties), alpha=alpha)
    return {"interleaved": f.interleaved, "wins": r.wins, "losses": r.losses, "ties": r.ties,
            "fallbacks": sum(f.interleave_fallbacks.values()), "win_share": r.win_share,
            "decision": r.decision, "confidence": r.confidence, "p_value": r.p_value}  # fmt: skip


def figures(cfg: DeployConfig, metrics: str) -> dict:
    """The rollout (if any), its recorded verdict, and the gateways' figures for ``status``:
    ``versions`` (in total), ``roles`` (in total) and ``gateways`` (per gateway, per role)."""
    try:
        rollout, error = traffic_split.read(cfg.repository), ""
    except traffic_split.RolloutError as exc:
        rollout, error = None, str(exc)
    state = state_of(cfg.repository, rollout) if rollout else None
    texts = gm.scrape_texts(metrics)
    answered = sum(t is not None for t in texts.values())
    base = (state or {}).get("baseline")
    per_gateway, restarted = _windowed(texts, base)
    total: dict[str, gm.VersionFigures] = {}
    for f in per_gateway.values():
        gm.add_all(total, f)
    window = (f"this rollout's window (since {state['started_at']}"
              + (f"; since they (re)started: {', '.join(restarted)}" if restarted else "") + ")"
              if base is not None else "counts since each gateway started")  # fmt: skip
    roles = roles_of(rollout)
    return {"source": f"gateway metrics endpoints {metrics} ({answered} of {len(texts)} "
                      f"answered; {window})",
            "rollout": rollout, "error": error, "window": window,
            "verdict": (state or {}).get("verdict"),
            "interleaving": tally(total.get(str(rollout.interleave)))
            if rollout and rollout.interleave is not None else None,
            "versions": {v: total[v].summary() for v in sorted(total, key=_version_order)},
            "roles": _by_role(total, roles),
            "gateways": {a: _by_role(f, roles) for a, f in per_gateway.items()}}  # fmt: skip
