"""The canary watcher: ``deploy --canary P --watch S`` and ``deploy watch``.

It polls every gateway's metrics (``serving/gateway_metrics.py``) every ``interval_s``, counts
how many answered, and adds up each gateway's increments since its previous answer over the
last ``window_s`` (:class:`CounterWindow`). A gateway whose counters went down restarted: its
increment restarts from 0 (its new counts), so a restart never looks like a burst or a loss;
a gateway that missed polls has its increments counted when it answers again.

It aborts (``serving/rollout.py``'s ``abort``) when the canary's error ratio exceeds the
serving one's by ``max_error_gap``, or its p99 exceeds ``p99_ratio`` x the serving one's plus
``p99_slack_s`` (the margins of ``ops/alerts.yml``), once the canary has had ``min_requests``
in the window (:func:`judge`). On thin traffic a window's p99 is its slowest answer or two, so
the latency breach must also be significant: more than 1% of the canary's answers slower than
that limit, at confidence ``1 - latency_alpha`` (a one-sided binomial test); one stalled answer
among 76 on busy cores is no breach, a canary slow on every answer is one after 30. The
canary's errors include the attempts it failed that the serving version answered again, which
the clients never see. An unreadable split is aborted.

The verdict (:data:`VERDICTS`) is "healthy" only when the watch ran its time, every gateway
answered the last poll and the canary had ``min_requests`` in the last window; otherwise, with
no breach, "inconclusive" (gateways or traffic missing, or the rollout ended meanwhile). It is
recorded beside the split for ``promote`` and ``status``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from scipy import stats

from core import traffic_split
from serving import gateway_metrics as gm
from serving.deploy import DeployConfig, DeployError
from serving.gateway_metrics import VersionFigures
from serving.rollout import abort, record_verdict, running

log = logging.getLogger(__name__)
VERDICTS = ("healthy", "aborted", "inconclusive")


@dataclass(frozen=True)
class WatchRules:
    """When the watcher aborts a canary (defaults: the margins of ``ops/alerts.yml``)."""

    window_s: float = 30.0
    interval_s: float = 2.0
    max_error_gap: float = 0.01  # canary error ratio above the serving one's by more: abort
    p99_ratio: float = 1.5  # canary p99 above p99_ratio x serving p99 + p99_slack_s: abort
    p99_slack_s: float = 0.010
    min_requests: int = 30  # canary attempts in the window before any verdict
    latency_alpha: float = 0.01  # a p99 breach must be significant at this level (see module)

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.interval_s > 0 and self.min_requests >= 1):
            raise ValueError("window and interval must be positive, min_requests >= 1")
        if not (self.max_error_gap >= 0 and self.p99_ratio > 0 and self.p99_slack_s >= 0):
            raise ValueError("the error gap and p99 slack must be >= 0, the p99 ratio above 0")
        if not 0 < self.latency_alpha < 1:
            raise ValueError("latency_alpha must lie between 0 and 1")


@dataclass(frozen=True)
class WatchResult:
    verdict: str  # one of VERDICTS
    reason: str
    seconds: float
    canary: dict = field(default_factory=dict)  # the last window's figures
    serving: dict = field(default_factory=dict)
    gateways: int = 0  # gateways that answered the last poll
    gateways_expected: int = 0  # gateways the metrics target named at the last poll
    canary_requests: float = 0.0  # canary attempts seen over the whole watch
    resets: int = 0  # gateway restarts seen (a counter went down)

    def record(self) -> dict:
        """What ``promote`` and ``status`` read back."""
        return {k: v for k, v in asdict(self).items() if k not in ("canary", "serving")}


class CounterWindow:
    """Per-gateway increments between polls, summed over the last ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.last: dict[str, dict[str, VersionFigures]] = {}  # each gateway's last answer
        self.steps: deque[tuple[float, dict[str, VersionFigures]]] = deque()
        self.total: dict[str, VersionFigures] = {}  # increments over the whole watch
        self.resets = 0

    def add(self, t: float, answers: dict[str, dict[str, VersionFigures] | None]) -> int:
        """One poll's answers by gateway (None: it did not answer); how many answered."""
        step: dict[str, VersionFigures] = {}
        for address, now in answers.items():
            if now is None:
                continue
            delta, reset = gm.since(now, self.last.get(address))
            if reset:
                log.info("gateway %s restarted (a counter went down): counted from 0", address)
            self.resets += reset
            gm.add_all(step, delta)
            self.last[address] = now
        self.steps.append((t, step))
        while self.steps and self.steps[0][0] <= t - self.window_s:
            self.steps.popleft()
        gm.add_all(self.total, step)
        return sum(now is not None for now in answers.values())

    def figures(self, version: str) -> VersionFigures:
        """``version``'s counts in the window."""
        out = VersionFigures()
        for _, step in self.steps:
            out = out.plus(step.get(version, VersionFigures()))
        return out


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
        slow = gm.slower_than(limit, canary.buckets)
        if c_p99 > limit and _significant(slow, answered, rules.latency_alpha):
            return (f"p99 {c_p99 * 1e3:.1f} ms against the serving version's "
                    f"{s_p99 * 1e3:.1f} ms (limit {limit * 1e3:.1f} ms; {slow:.0f} of "
                    f"{answered:.0f} answers slower)")  # fmt: skip
    return ""


def _significant(slow: float, answered: float, alpha: float) -> bool:
    """Whether ``slow`` of ``answered`` shows more than 1% slow answers at level ``alpha``."""
    n, k = round(answered), round(slow)
    return k > 0 and float(stats.binom.sf(k - 1, n, 0.01)) < alpha


def conclude(canary: VersionFigures, answered: int, expected: int, rules: WatchRules) -> str:
    """Why a watch with no breach is not "healthy" ('' when it is)."""
    if answered == 0:
        return f"no gateway answered the last poll ({expected} named): nothing was watched"
    if answered < expected:
        return f"only {answered} of {expected} gateways answered the last poll"
    if canary.requests < rules.min_requests:
        return (f"the canary had {canary.requests:.0f} requests in the last window, fewer than "
                f"the {rules.min_requests} a verdict needs")  # fmt: skip
    return ""


def _poll(metrics: str) -> dict[str, dict[str, VersionFigures] | None]:
    texts = gm.scrape_texts(metrics)
    return {a: None if t is None else gm.by_version(t) for a, t in texts.items()}


def watch(cfg: DeployConfig, metrics: str, rules: WatchRules | None = None, *,
          duration_s: float = 600.0, stop: threading.Event | None = None,
          on_poll: Callable[[dict], None] | None = None) -> WatchResult:  # fmt: skip
    """Watch the running canary for ``duration_s`` (see the module); abort it on a breach.
    The verdict is recorded beside the split while the rollout still runs."""
    begin = time.monotonic()
    rules = rules or WatchRules()
    stop = stop or threading.Event()
    rollout = running(cfg.repository)
    if rollout.canary is None:
        raise DeployError("the rollout has no canary to watch (a shadow answers no caller)")
    canary_v, serving_v = str(rollout.canary), str(rollout.serving)
    window = CounterWindow(rules.window_s)
    answered = expected = 0

    def result(verdict: str, reason: str) -> WatchResult:
        c, s = window.figures(canary_v), window.figures(serving_v)
        total = window.total.get(canary_v, VersionFigures()).requests
        done = WatchResult(verdict, reason, time.monotonic() - begin, c.summary(), s.summary(),
                           answered, expected, total, window.resets)  # fmt: skip
        record_verdict(cfg.repository, rollout, done.record())
        return done

    while True:
        now = time.monotonic()
        try:
            current = traffic_split.read(cfg.repository)
        except traffic_split.RolloutError as exc:
            with contextlib.suppress(DeployError):
                abort(cfg, f"automatic: {exc}", metrics=metrics)
            return result("aborted", f"the split became unreadable ({exc})")
        if current != rollout:
            return result("inconclusive", "the canary was promoted or aborted meanwhile")
        answers = _poll(metrics)
        answered, expected = window.add(now, answers), len(answers)
        c, s = window.figures(canary_v), window.figures(serving_v)
        if on_poll:
            on_poll({"t": now - begin, "canary": c.summary(), "serving": s.summary(),
                     "gateways": answered, "expected": expected})  # fmt: skip
        reason = judge(c, s, rules)
        if reason:
            log.warning("aborting canary version %s: %s", canary_v, reason)
            with contextlib.suppress(DeployError):  # someone else may have ended it first
                abort(cfg, f"automatic: {reason}", metrics=metrics)
            return result("aborted", reason)
        if now - begin >= duration_s:
            missing = conclude(c, answered, expected, rules)
            if missing:
                return result("inconclusive", missing)
            return result("healthy", f"no breach in {duration_s:g} s")
        if stop.wait(rules.interval_s):
            return result("inconclusive", "stopped before the watch ran its time")
