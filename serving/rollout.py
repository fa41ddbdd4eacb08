"""Canary and shadow rollouts: start, promote, abort, figures, and the watcher that aborts.

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
  each gateway started): requests, error ratio, p99, canary retries, shadow agreement.
* ``watch``: the automatic abort. It polls the gateways' metrics every ``interval_s`` and
  compares the canary with the serving version over the last ``window_s`` (an earlier start
  of the window while less time has passed); it aborts when the canary's error ratio exceeds
  the serving one's by ``max_error_gap``, or its p99 exceeds ``p99_ratio`` x the serving one's
  plus ``p99_slack_s`` (the margins of ``ops/alerts.yml``), once the canary has had
  ``min_requests`` in the window. The canary's errors include the attempts it failed that the
  serving version answered again (the gateway counts them under the canary's version), which
  the clients never see.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from core import traffic_split
from core.contract import SERVED_MODELS
from core.endpoints import resolve_endpoints
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
from serving.validation import metric_gate, validate_version

log = logging.getLogger(__name__)
SETTLE_S = 2.0  # abort: time for the gateways (polling each second) to read the 0% split
# Status codes the stack caused (ops/alerts.yml): the caller's mistakes are not errors.
ERROR_CODES = frozenset({"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                         "RESOURCE_EXHAUSTED", "DATA_LOSS", "UNIMPLEMENTED"})  # fmt: skip
METHOD = "Recommend"


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


def _running(repository: Path) -> traffic_split.Rollout:
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
        rollout = _running(repo)
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
        rollout = _running(repo)
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


# ---------------------------------------------------------------- the gateways' figures


@dataclass
class VersionFigures:
    """One version's counters, summed over the gateways (cumulative, or a window's deltas)."""

    requests: float = 0.0  # Recommend attempts (every code; a canary's failed ones too)
    errors: float = 0.0  # of those, errors the stack caused
    retried: float = 0.0  # canary attempts that failed, answered by the serving version
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    shadow: dict[str, float] = field(default_factory=dict)  # outcome -> count
    shadow_seconds: dict[float, float] = field(default_factory=dict)
    overlap: tuple[float, float] = (0.0, 0.0)  # (sum, count)
    spearman: tuple[float, float] = (0.0, 0.0)
    kendall: tuple[float, float] = (0.0, 0.0)

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p99_s(self) -> float | None:
        return quantile(0.99, self.buckets)

    def minus(self, before: VersionFigures) -> VersionFigures:
        def sub(a: dict, b: dict) -> dict:
            return {k: v - b.get(k, 0.0) for k, v in a.items()}

        def pair(a: tuple, b: tuple) -> tuple:
            return (a[0] - b[0], a[1] - b[1])

        return VersionFigures(
            self.requests - before.requests, self.errors - before.errors,
            self.retried - before.retried,
            sub(self.buckets, before.buckets), sub(self.shadow, before.shadow),
            sub(self.shadow_seconds, before.shadow_seconds), pair(self.overlap, before.overlap),
            pair(self.spearman, before.spearman), pair(self.kendall, before.kendall),
        )  # fmt: skip

    def summary(self) -> dict:
        """Plain numbers for ``status`` and the benchmark."""

        def mean(p: tuple[float, float]) -> float | None:
            return p[0] / p[1] if p[1] else None

        return {
            "requests": self.requests, "errors": self.errors, "retried": self.retried,
            "error_ratio": self.error_ratio, "p99_ms": _ms(self.p99_s),
            "shadow": dict(self.shadow), "shadow_p50_ms": _ms(quantile(0.5, self.shadow_seconds)),
            "overlap_at_10": mean(self.overlap), "spearman": mean(self.spearman),
            "kendall": mean(self.kendall),
        }  # fmt: skip


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``{le: count}`` (None when empty)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_bound  # beyond the last finite bucket: its upper bound
            width = count - prev_count
            return prev_bound + (le - prev_bound) * ((rank - prev_count) / width if width else 1)
        prev_bound, prev_count = le, count
    return prev_bound


def _add(target: dict, key: float, value: float) -> None:
    target[key] = target.get(key, 0.0) + value


def parse_metrics(text: str, into: dict[str, VersionFigures]) -> None:
    """Add one gateway's ``/metrics`` text to ``into`` (by version label)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            version = s.labels.get("version")
            if version is None:
                continue
            f = into.setdefault(version, VersionFigures())
            name, labels, value = s.name, s.labels, s.value
            if name == "musicrec_gateway_requests_by_version_total":
                if labels.get("method") == METHOD:
                    f.requests += value
                    f.errors += value if labels.get("code") in ERROR_CODES else 0.0
            elif name == "musicrec_gateway_request_seconds_by_version_bucket":
                if labels.get("method") == METHOD:
                    _add(f.buckets, float(labels["le"]), value)
            elif name == "musicrec_gateway_canary_retries_total":
                f.retried += value
            elif name == "musicrec_gateway_shadow_requests_total":
                _add(f.shadow, labels["outcome"], value)
            elif name == "musicrec_gateway_shadow_seconds_bucket":
                _add(f.shadow_seconds, float(labels["le"]), value)
            elif name.startswith("musicrec_gateway_shadow_overlap_at_10_"):
                f.overlap = _sum_count(f.overlap, name, value)
            elif name.startswith("musicrec_gateway_shadow_rank_correlation_"):
                method = labels.get("method")
                if method == "spearman":
                    f.spearman = _sum_count(f.spearman, name, value)
                elif method == "kendall":
                    f.kendall = _sum_count(f.kendall, name, value)


def _sum_count(pair: tuple[float, float], name: str, value: float) -> tuple[float, float]:
    if name.endswith("_sum"):
        return (pair[0] + value, pair[1])
    if name.endswith("_count"):
        return (pair[0], pair[1] + value)
    return pair


def scrape(metrics: str, timeout_s: float = 2.0) -> tuple[dict[str, VersionFigures], int]:
    """Every gateway's figures by version, summed, and how many gateways answered.
    ``metrics``: the gateways' metrics endpoints as a target (``host:port``, a list, or
    ``dns:///name:port``, ``core/endpoints.py``)."""
    figures: dict[str, VersionFigures] = {}
    answered = 0
    for address in resolve_endpoints(metrics):
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as r:
                parse_metrics(r.read().decode(), figures)
            answered += 1
        except OSError as exc:
            log.warning("gateway metrics at %s unreachable: %s", address, exc)
    return figures, answered


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


# ---------------------------------------------------------------- the watcher


@dataclass(frozen=True)
class WatchRules:
    """When the watcher aborts a canary (defaults: the margins of ``ops/alerts.yml``)."""

    window_s: float = 30.0
    interval_s: float = 2.0
    max_error_gap: float = 0.01  # canary error ratio above the serving one's by more: abort
    p99_ratio: float = 1.5  # canary p99 above p99_ratio x serving p99 + p99_slack_s: abort
    p99_slack_s: float = 0.010
    min_requests: int = 30  # canary attempts in the window before any verdict

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.interval_s > 0 and self.min_requests >= 1):
            raise ValueError("window and interval must be positive, min_requests >= 1")


@dataclass(frozen=True)
class WatchResult:
    verdict: str  # "aborted", "healthy" (the watch ran its time) or "ended" (promoted/aborted)
    reason: str
    seconds: float
    canary: dict = field(default_factory=dict)
    serving: dict = field(default_factory=dict)


def judge(canary: VersionFigures, serving: VersionFigures, rules: WatchRules) -> str:
    """Why the canary must go ('' when it may stay), from one window's figures."""
    if canary.requests < rules.min_requests:
        return ""
    c_err, s_err = canary.error_ratio or 0.0, serving.error_ratio or 0.0
    if c_err > s_err + rules.max_error_gap:
        return (f"error ratio {c_err:.1%} against the serving version's {s_err:.1%} "
                f"(allowed gap {rules.max_error_gap:.1%})")  # fmt: skip
    c_p99, s_p99 = canary.p99_s, serving.p99_s
    answered = canary.buckets.get(math.inf, 0.0)  # the canary's own answers, timed
    if c_p99 is not None and s_p99 is not None and answered >= rules.min_requests:
        limit = s_p99 * rules.p99_ratio + rules.p99_slack_s
        if c_p99 > limit:
            return (f"p99 {c_p99 * 1e3:.1f} ms against the serving version's "
                    f"{s_p99 * 1e3:.1f} ms (limit {limit * 1e3:.1f} ms)")  # fmt: skip
    return ""


def watch(cfg: DeployConfig, metrics: str, rules: WatchRules | None = None, *,
          duration_s: float = 600.0, stop: threading.Event | None = None,
          on_poll: Callable[[dict], None] | None = None) -> WatchResult:  # fmt: skip
    """Watch the running canary for ``duration_s`` (see the module); abort it on a breach."""
    begin = time.monotonic()
    rules = rules or WatchRules()
    stop = stop or threading.Event()
    rollout = _running(cfg.repository)
    if rollout.canary is None:
        raise DeployError("the rollout has no canary to watch (a shadow answers no caller)")
    canary_v, serving_v = str(rollout.canary), str(rollout.serving)
    history: deque[tuple[float, dict[str, VersionFigures]]] = deque()
    window: tuple[VersionFigures, VersionFigures] = (VersionFigures(), VersionFigures())
    while True:
        now = time.monotonic()
        current = traffic_split.read(cfg.repository)
        if current is None or current.canary != rollout.canary or current.percent <= 0:
            return WatchResult("ended", "the canary was promoted or aborted meanwhile",
                               now - begin, *_summaries(window))  # fmt: skip
        by_version, _ = scrape(metrics)
        history.append((now, by_version))
        while len(history) > 1 and history[1][0] <= now - rules.window_s:
            history.popleft()  # the oldest kept snapshot is the window's start
        first = history[0][1]
        window = (_delta(by_version, first, canary_v), _delta(by_version, first, serving_v))
        if on_poll:
            on_poll({"t": now - begin, "canary": window[0].summary(),
                     "serving": window[1].summary()})  # fmt: skip
        reason = judge(*window, rules)
        if reason:
            log.warning("aborting canary version %s: %s", canary_v, reason)
            with contextlib.suppress(DeployError):  # someone else may have ended it first
                abort(cfg, f"automatic: {reason}")
            return WatchResult("aborted", reason, time.monotonic() - begin, *_summaries(window))
        if now - begin >= duration_s:
            return WatchResult("healthy", f"no breach in {duration_s:g} s", now - begin,
                               *_summaries(window))  # fmt: skip
        if stop.wait(rules.interval_s):
            return WatchResult("ended", "stopped", time.monotonic() - begin, *_summaries(window))


def _delta(now: dict[str, VersionFigures], before: dict[str, VersionFigures],
           version: str) -> VersionFigures:  # fmt: skip
    return now.get(version, VersionFigures()).minus(before.get(version, VersionFigures()))


def _summaries(window: Iterable[VersionFigures]) -> list[dict]:
    return [f.summary() for f in window]
