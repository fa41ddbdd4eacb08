"""The canary watcher: ``deploy --canary P --watch S``, ``deploy --interleave P --watch S``
and ``deploy watch``.

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

With ``quality_gate`` on, it also compares what listeners did (:func:`quality`): the canary's
online hit rate (lists with a played artist, per list served) against the serving version's,
by ``core/sequential_test.py``'s always-valid two-proportion mSPRT at ``quality_alpha``. An
always-valid test is one over a growing sample, so it reads the counts since the watch began
(:attr:`CounterWindow.total`), never the sliding window (whose oldest counts leave it: no
martingale). A canary "worse" with confidence is aborted. Below ``quality_min_impressions``
lists a side or ``quality_min_hits`` hits in all nothing is decided.

The verdict (:data:`VERDICTS`) is "healthy" only when the watch ran its time, every gateway
answered the last poll and the canary had ``min_requests`` in the last window, and with the
quality gate on, when its hit rate is shown at most ``max_hit_rate_drop`` below the serving
one's: the low end of the test's confidence sequence for the difference (valid whenever the
watch stops) is at or above ``-max_hit_rate_drop``, so a drop that large would have been
rejected. Otherwise, with no breach, "inconclusive" (gateways, traffic or feedback missing, the
rollout ended meanwhile): thin feedback is never "healthy". It is recorded beside the split for
``promote`` and ``status``.

An interleave rollout is watched by the same loop, its candidate in the canary's place (the
error-ratio and p99 rules read the candidate's own attempts). At every poll
:func:`interleaved` runs ``core/sequential_test.py``'s always-valid ``interleaving_test`` at
``interleave_alpha`` on the candidate's wins, losses and ties since the watch began
(:attr:`CounterWindow.total`, summed over gateways, restarts counted from 0): "worse" aborts
(the serving version keeps everyone); "better" ends the watch "healthy" (recorded, so
``promote`` passes) and, with ``promote_if_better``, promotes; "not yet" when the watch ends is
"inconclusive".
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
from core.sequential_test import (
    InterleavingResult,
    ProportionsResult,
    ProportionsRules,
    interleaving_test,
    proportions_test,
)
from serving import gateway_metrics as gm
from serving.deploy import DeployConfig, DeployError
from serving.gateway_metrics import VersionFigures
from serving.rollout import abort, promote, record_verdict, running

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
    quality_gate: bool = False  # also judge the canary's online hit rate (see the module)
    quality_alpha: float = 0.05  # the hit-rate test's level (wrong decisions at most this)
    max_hit_rate_drop: float = 0.05  # "healthy" needs the drop shown below this (points)
    quality_min_impressions: int = 100  # lists served per side before any hit-rate decision
    quality_min_hits: int = 20  # hits in all before any hit-rate decision
    interleave_alpha: float = 0.05  # the interleaving test's level (interleave rollouts)
    promote_if_better: bool = False  # promote an interleave candidate the test calls better

    @property
    def quality(self) -> ProportionsRules:
        """The hit-rate test's rules (it checks them)."""
        return ProportionsRules(self.quality_alpha, min_impressions=self.quality_min_impressions,
                                min_hits=self.quality_min_hits,
                                max_drop=self.max_hit_rate_drop)  # fmt: skip

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.interval_s > 0 and self.min_requests >= 1):
            raise ValueError("window and interval must be positive, min_requests >= 1")
        if not (self.max_error_gap >= 0 and self.p99_ratio > 0 and self.p99_slack_s >= 0):
            raise ValueError("the error gap and p99 slack must be >= 0, the p99 ratio above 0")
        if not (0 < self.latency_alpha < 1 and 0 < self.interleave_alpha < 1):
            raise ValueError("latency_alpha and interleave_alpha must lie between 0 and 1")
        self.quality  # noqa: B018 -- ValueError on bad hit-rate rules


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
    quality: dict = field(default_factory=dict)  # the hit-rate test over the watch (gate on)
    interleaving: dict = field(default_factory=dict)  # the interleaving test (interleave)
    promoted: int | None = None  # the version promote_if_better promoted

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


def quality(canary: VersionFigures, serving: VersionFigures, rules: WatchRules,
            ) -> ProportionsResult:  # fmt: skip
    """The hit-rate test on counts since the watch began (see the module)."""

    def side(f: VersionFigures) -> tuple[int, int]:
        n = max(0, round(f.impressions))
        return min(max(0, round(f.hits)), n), n

    return proportions_test(side(canary), side(serving), rules.quality)


def interleaved(candidate: VersionFigures, rules: WatchRules,
                previous: InterleavingResult | None = None) -> InterleavingResult:  # fmt: skip
    """The interleaving test on the candidate's outcomes since the watch began."""
    return interleaving_test(max(0, round(candidate.wins)), max(0, round(candidate.losses)),
                             max(0, round(candidate.ties)), alpha=rules.interleave_alpha,
                             previous=previous)  # fmt: skip


def interleaving_record(r: InterleavingResult, candidate: VersionFigures) -> dict:
    """The interleaving test's state in plain numbers (the verdict record, ``on_poll``)."""
    return {"decision": r.decision, "confidence": r.confidence, "p_value": r.p_value,
            "wins": r.wins, "losses": r.losses, "ties": r.ties, "win_share": r.win_share,
            "interleaved": candidate.interleaved,
            "fallbacks": sum(candidate.interleave_fallbacks.values())}  # fmt: skip


def _decided(r: InterleavingResult) -> str:
    return (f"interleaving: candidate {r.decision} at {r.confidence:.1%} confidence ({r.wins} "
            f"won, {r.losses} lost, {r.ties} tied)")  # fmt: skip


def judge(canary: VersionFigures, serving: VersionFigures, rules: WatchRules, *,
          total: tuple[VersionFigures, VersionFigures] | None = None) -> str:  # fmt: skip
    """Why the canary must go ('' when it may stay), from one window's figures and, with the
    quality gate on, the counts since the watch began (``total``: canary's, serving's)."""
    if rules.quality_gate and total is not None:
        q = quality(*total, rules)
        if q.decision == "worse":
            return f"online {q.why}: worse at {q.confidence:.1%} confidence"
    return _judge_window(canary, serving, rules)


def _judge_window(canary: VersionFigures, serving: VersionFigures, rules: WatchRules) -> str:
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


def conclude(canary: VersionFigures, answered: int, expected: int, rules: WatchRules, *,
             total: tuple[VersionFigures, VersionFigures] | None = None) -> str:  # fmt: skip
    """Why a watch with no breach is not "healthy" ('' when it is); ``total`` as in
    :func:`judge` (the quality gate without it: nothing shown, not healthy)."""
    missing = _conclude_traffic(canary, answered, expected, rules)
    if missing or not rules.quality_gate:
        return missing
    if total is None:
        return "the quality gate had no feedback counts"
    q = quality(*total, rules)
    if not q.enough:
        return f"quality gate: {q.why}"
    if not q.not_worse:
        return (f"quality gate: online {q.why}: not shown within "
                f"{rules.max_hit_rate_drop:.3f} of the serving version's")  # fmt: skip
    return ""


def _conclude_traffic(canary: VersionFigures, answered: int, expected: int,
                      rules: WatchRules) -> str:  # fmt: skip
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


def _quality_record(q: ProportionsResult) -> dict:
    """The hit-rate test's state in plain numbers (the verdict record, ``on_poll``)."""
    return {"decision": q.decision, "p_value": q.p_value, "confidence": q.confidence,
            "canary_hit_rate": q.canary_rate, "serving_hit_rate": q.serving_rate,
            "difference": q.difference, "interval": list(q.interval) if q.interval else None,
            "enough": q.enough, "not_worse": q.not_worse, "why": q.why}  # fmt: skip


Poll = Callable[[], dict[str, dict[str, VersionFigures] | None]]  # by gateway (None: silent)


def watch(cfg: DeployConfig, metrics: str | None, rules: WatchRules | None = None, *,
          duration_s: float = 600.0, stop: threading.Event | None = None,
          on_poll: Callable[[dict], None] | None = None,
          source: Poll | None = None) -> WatchResult:  # fmt: skip
    """Watch the running canary for ``duration_s`` (see the module); abort it on a breach.
    The verdict is recorded beside the split while the rollout still runs. ``source``: where
    each poll's figures come from (default: scrape ``metrics``; ``serving/prometheus_query.py``
    reads a Prometheus server instead); ``metrics`` is also what ``abort`` waits on."""
    if source is None and not metrics:
        raise ValueError("watch needs the gateways' metrics endpoints or another source")
    poll = source or (lambda: _poll(str(metrics)))
    begin = time.monotonic()
    rules = rules or WatchRules()
    stop = stop or threading.Event()
    rollout = running(cfg.repository)
    if rollout.kind == "shadow":
        raise DeployError("the rollout has no canary to watch (a shadow answers no caller)")
    canary_v, serving_v = str(rollout.new), str(rollout.serving)
    judging = rollout.kind == "interleave"
    if judging and source is not None:
        raise DeployError("an interleaving is watched through --gateway-metrics: the PromQL "
                          "source does not read its counters yet")  # fmt: skip
    window = CounterWindow(rules.window_s)
    answered = expected = 0
    test: InterleavingResult | None = None

    def totals() -> tuple[VersionFigures, VersionFigures]:
        return (window.total.get(canary_v, VersionFigures()),
                window.total.get(serving_v, VersionFigures()))  # fmt: skip

    def gate() -> dict:
        return _quality_record(quality(*totals(), rules)) if rules.quality_gate else {}

    def tested() -> dict:
        return interleaving_record(test, totals()[0]) if test is not None else {}

    def result(verdict: str, reason: str) -> WatchResult:
        c, s = window.figures(canary_v), window.figures(serving_v)
        total = totals()[0].requests
        done = WatchResult(verdict, reason, time.monotonic() - begin, c.summary(), s.summary(),
                           answered, expected, total, window.resets, gate(),
                           tested())  # fmt: skip
        record_verdict(cfg.repository, rollout, done.record())
        return done

    def better() -> WatchResult:
        done = result("healthy", _decided(test))
        if not rules.promote_if_better:
            return done
        try:
            promote(cfg)
        except DeployError as exc:  # ended meanwhile, or the swap failed: it says why
            return WatchResult(
                **{
                    **asdict(done),
                    "verdict": "inconclusive",
                    "reason": f"{done.reason}; promote failed: {exc}",
                }
            )
        return WatchResult(**{**asdict(done), "promoted": rollout.new})

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
        answers = poll()
        answered, expected = window.add(now, answers), len(answers)
        c, s = window.figures(canary_v), window.figures(serving_v)
        if judging:
            test = interleaved(totals()[0], rules, test)
        if on_poll:
            on_poll({"t": now - begin, "canary": c.summary(), "serving": s.summary(),
                     "gateways": answered, "expected": expected, "quality": gate(),
                     "interleaving": tested()})  # fmt: skip
        reason = judge(c, s, rules, total=totals())
        if not reason and test is not None and test.decision == "worse":
            reason = _decided(test)
        if reason:
            log.warning("aborting canary version %s: %s", canary_v, reason)
            with contextlib.suppress(DeployError):  # someone else may have ended it first
                abort(cfg, f"automatic: {reason}", metrics=metrics)
            return result("aborted", reason)
        if test is not None and test.decision == "better":
            return better()
        if now - begin >= duration_s:
            missing = conclude(c, answered, expected, rules, total=totals())
            if not missing and test is not None:
                missing = _decided(test)
            if missing:
                return result("inconclusive", missing)
            return result("healthy", f"no breach in {duration_s:g} s")
        if stop.wait(rules.interval_s):
            return result("inconclusive", "stopped before the watch ran its time")
