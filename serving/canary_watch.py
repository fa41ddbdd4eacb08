"""The canary watcher: ``deploy --canary P --watch S`` and ``deploy watch``.

It polls the gateways' metrics (``serving/gateway_metrics.py``) every ``interval_s`` and
compares the canary with the serving version over the last ``window_s`` (an earlier start of
the window while less time has passed); it aborts (``serving/rollout.py``'s ``abort``) when the
canary's error ratio exceeds the serving one's by ``max_error_gap``, or its p99 exceeds
``p99_ratio`` x the serving one's plus ``p99_slack_s`` (the margins of ``ops/alerts.yml``), once
the canary has had ``min_requests`` in the window. The canary's errors include the attempts it
failed that the serving version answered again (the gateway counts them under the canary's
version), which the clients never see.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core import traffic_split
from serving.deploy import DeployConfig, DeployError
from serving.gateway_metrics import VersionFigures, scrape
from serving.rollout import abort, running

log = logging.getLogger(__name__)


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
    rollout = running(cfg.repository)
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
