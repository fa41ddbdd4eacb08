"""The gateways' ``/metrics`` text, read by version: what ``status`` and the canary watcher
count.

Every gateway exports Prometheus text; :func:`scrape` fetches each gateway's endpoint
(``host:port``, a list, or ``dns:///name:port``) and :func:`parse_metrics` adds its samples to
one :class:`VersionFigures` per ``version`` label: Recommend attempts and the errors the stack
caused (:data:`ERROR_CODES`; a caller's mistake is not one), the latency histogram, canary
retries, the shadow's agreement, and what listeners did with the lists (the Feedback RPC's
impressions, hits and first-play reciprocal ranks, :data:`FEEDBACK`). Counters are cumulative
since each gateway started; :meth:`VersionFigures.minus` gives a window's deltas and
:func:`since` one gateway's, with a restart (a counter went down) counted from 0.
:func:`scrape_texts` keeps each gateway apart (None: it did not answer); :func:`add_sample`
reads one sample, whether from that text or from a PromQL answer
(``serving/prometheus_query.py``). :func:`parse_split` reads what a gateway says it routes
(``musicrec_gateway_rollout_percent{role,version}``, ``musicrec_gateway_rollout_error``), what
``abort`` waits on.
"""

from __future__ import annotations

import logging
import math
import urllib.request
from dataclasses import dataclass, field, fields

from prometheus_client.parser import text_string_to_metric_families

from core.endpoints import resolve_endpoints

log = logging.getLogger(__name__)
# Status codes the stack caused (ops/alerts.yml): the caller's mistakes are not errors.
ERROR_CODES = frozenset({"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                         "RESOURCE_EXHAUSTED", "DATA_LOSS", "UNIMPLEMENTED"})  # fmt: skip
METHOD = "Recommend"
# The Feedback RPC's per-version counters, by sample name (issue 25): lists served, lists with
# at least one played artist, the sum of 1 / rank of each list's first played artist, and
# events by action. A reciprocal-rank sum exported as a counter carries "_total" too.
FEEDBACK = {
    "musicrec_gateway_impressions_total": "impressions",
    "musicrec_gateway_impression_hits_total": "hits",
    "musicrec_gateway_first_play_reciprocal_rank_sum": "rr_sum",
    "musicrec_gateway_first_play_reciprocal_rank_sum_total": "rr_sum",
}
FEEDBACK_EVENTS = "musicrec_gateway_feedback_events_total"  # {version, action}
# Interleaving (gateway/rollout.py, gateway/feedback.py), labelled by candidate_version: the
# interleaved answers, the impressions' outcomes and the candidate's fallbacks.
INTERLEAVED = "musicrec_gateway_interleaved_total"
INTERLEAVE_OUTCOMES = "musicrec_gateway_interleave_outcomes_total"  # {outcome}
INTERLEAVE_FALLBACKS = "musicrec_gateway_interleave_fallbacks_total"  # {reason}
OUTCOME_FIELDS = {"candidate": "wins", "serving": "losses", "tie": "ties"}


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
    impressions: float = 0.0  # lists served with feedback tracked
    hits: float = 0.0  # of those, lists with at least one played artist
    rr_sum: float = 0.0  # sum over lists of 1 / rank of the first played artist (0: none)
    feedback: dict[str, float] = field(default_factory=dict)  # action -> events
    # as an interleave candidate: answers interleaved, impressions it won, lost, tied, and
    # listeners answered with the serving list alone (reason -> count)
    interleaved: float = 0.0
    wins: float = 0.0
    losses: float = 0.0
    ties: float = 0.0
    interleave_fallbacks: dict[str, float] = field(default_factory=dict)

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.impressions if self.impressions else None

    @property
    def mrr(self) -> float | None:
        """Mean reciprocal rank of the first played artist over every list (0 for none)."""
        return self.rr_sum / self.impressions if self.impressions else None

    @property
    def p99_s(self) -> float | None:
        return quantile(0.99, self.buckets)

    def minus(self, before: VersionFigures) -> VersionFigures:
        """These counts less ``before``'s (a window's deltas)."""
        return _combine(self, before, -1.0)

    def plus(self, other: VersionFigures) -> VersionFigures:
        """These counts and ``other``'s (two gateways, or two windows)."""
        return _combine(self, other, 1.0)

    def went_down(self, before: VersionFigures) -> bool:
        """Whether any counter is lower than in ``before``: the gateway restarted since."""
        pairs = [(self.requests, before.requests), (self.errors, before.errors),
                 (self.retried, before.retried), (self.overlap[1], before.overlap[1]),
                 (self.impressions, before.impressions), (self.hits, before.hits),
                 (self.interleaved, before.interleaved), (self.wins, before.wins),
                 (self.losses, before.losses), (self.ties, before.ties)]  # fmt: skip
        for mine, theirs in ((self.buckets, before.buckets), (self.shadow, before.shadow),
                             (self.feedback, before.feedback),
                             (self.interleave_fallbacks, before.interleave_fallbacks)):  # fmt: skip
            pairs += [(mine.get(k, 0.0), v) for k, v in theirs.items()]
        return any(now < then for now, then in pairs)

    def summary(self) -> dict:
        """Plain numbers for ``status`` and the benchmark."""

        def mean(p: tuple[float, float]) -> float | None:
            return p[0] / p[1] if p[1] else None

        return {
            "requests": self.requests, "errors": self.errors, "retried": self.retried,
            "error_ratio": self.error_ratio, "p99_ms": _ms(self.p99_s),
            "shadow": dict(self.shadow), "shadow_p50_ms": _ms(quantile(0.5, self.shadow_seconds)),
            "overlap_at_10": mean(self.overlap), "spearman": mean(self.spearman),
            "kendall": mean(self.kendall), "impressions": self.impressions, "hits": self.hits,
            "hit_rate": self.hit_rate, "mrr": self.mrr, "feedback": dict(self.feedback),
            "interleaved": self.interleaved, "wins": self.wins, "losses": self.losses,
            "ties": self.ties, "interleave_fallbacks": dict(self.interleave_fallbacks),
        }  # fmt: skip


def _combine(a: VersionFigures, b: VersionFigures, sign: float) -> VersionFigures:
    """Field by field: numbers, ``{key: count}`` dicts and ``(sum, count)`` pairs."""

    def one(x, y):
        if isinstance(x, dict):
            return {k: x.get(k, 0.0) + sign * y.get(k, 0.0) for k in x.keys() | y.keys()}
        if isinstance(x, tuple):
            return (x[0] + sign * y[0], x[1] + sign * y[1])
        return x + sign * y

    return VersionFigures(**{f.name: one(getattr(a, f.name), getattr(b, f.name))
                             for f in fields(VersionFigures)})  # fmt: skip


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


def slower_than(limit_s: float, buckets: dict[float, float]) -> float:
    """How many of a histogram's observations certainly exceed ``limit_s`` (those above the
    first bucket bound at or beyond it; 0 when the limit lies past the last finite bound)."""
    bounds = [le for le in sorted(buckets) if le >= limit_s]
    if not bounds or math.isinf(bounds[0]):
        return 0.0
    return buckets[max(buckets)] - buckets[bounds[0]]


def _add(target: dict, key: float, value: float) -> None:
    target[key] = target.get(key, 0.0) + value


def parse_metrics(text: str, into: dict[str, VersionFigures]) -> None:
    """Add one gateway's ``/metrics`` text to ``into`` (by version label)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            add_sample(into, s.name, s.labels, s.value)


def add_sample(into: dict[str, VersionFigures], name: str, labels: dict[str, str],
               value: float) -> None:  # fmt: skip
    """Add one sample (Prometheus text, or a PromQL result) to its version's figures; samples
    without a version label, or that this module does not read, are skipped. The
    interleaving's samples count under their ``candidate_version``."""
    if "candidate_version" in labels:
        _add_interleave(into, name, labels, value)
        return
    version = labels.get("version")
    if version is None:
        return
    f = into.setdefault(version, VersionFigures())
    if name == "musicrec_gateway_requests_by_version_total":
        if labels.get("method") == METHOD:
            f.requests += value
            f.errors += value if labels.get("code") in ERROR_CODES else 0.0
    elif name == "musicrec_gateway_request_seconds_by_version_bucket":
        if labels.get("method") == METHOD:
            _add(f.buckets, float(labels["le"]), value)
    elif name == "musicrec_gateway_canary_retries_total":
        f.retried += value
    elif name in FEEDBACK:
        setattr(f, FEEDBACK[name], getattr(f, FEEDBACK[name]) + value)
    elif name == FEEDBACK_EVENTS:
        _add(f.feedback, labels.get("action", ""), value)
    elif name.startswith("musicrec_gateway_shadow_"):
        _add_shadow(f, name, labels, value)


def _add_interleave(into: dict[str, VersionFigures], name: str, labels: dict[str, str],
                    value: float) -> None:  # fmt: skip
    f = into.setdefault(labels["candidate_version"], VersionFigures())
    if name == INTERLEAVED:
        f.interleaved += value
    elif name == INTERLEAVE_OUTCOMES and labels.get("outcome") in OUTCOME_FIELDS:
        attr = OUTCOME_FIELDS[labels["outcome"]]
        setattr(f, attr, getattr(f, attr) + value)
    elif name == INTERLEAVE_FALLBACKS:
        _add(f.interleave_fallbacks, labels.get("reason", ""), value)


def _add_shadow(f: VersionFigures, name: str, labels: dict[str, str], value: float) -> None:
    if name == "musicrec_gateway_shadow_requests_total":
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


def fetch(address: str, timeout_s: float = 2.0) -> str:
    """One gateway's ``/metrics`` text (OSError when it does not answer)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as r:
        return r.read().decode()


def scrape_texts(metrics: str, timeout_s: float = 2.0) -> dict[str, str | None]:
    """Each gateway's ``/metrics`` text by address (None: it did not answer). ``metrics``: the
    gateways' metrics endpoints as a target (``host:port``, a list, or ``dns:///name:port``,
    ``core/endpoints.py``)."""
    texts: dict[str, str | None] = {}
    for address in resolve_endpoints(metrics):
        try:
            texts[address] = fetch(address, timeout_s)
        except OSError as exc:
            log.warning("gateway metrics at %s unreachable: %s", address, exc)
            texts[address] = None
    return texts


def by_version(text: str) -> dict[str, VersionFigures]:
    """One gateway's figures by version label."""
    into: dict[str, VersionFigures] = {}
    parse_metrics(text, into)
    return into


def add_all(into: dict[str, VersionFigures], part: dict[str, VersionFigures]) -> None:
    """Add ``part``'s figures to ``into``'s, version by version."""
    for version, f in part.items():
        into[version] = into.get(version, VersionFigures()).plus(f)


def since(now: dict[str, VersionFigures], before: dict[str, VersionFigures] | None,
          ) -> tuple[dict[str, VersionFigures], bool]:  # fmt: skip
    """One gateway's counts since ``before`` (None: none known, so nothing counted yet), and
    whether it restarted meanwhile: then any counter went down, and its counts since the
    restart are all there is (the delta restarts from 0)."""
    if before is None:
        return {}, False
    if any(f.went_down(before.get(v, VersionFigures())) for v, f in now.items()) or any(
        v not in now and f.requests > 0 for v, f in before.items()
    ):
        return now, True
    return {v: f.minus(before.get(v, VersionFigures())) for v, f in now.items()}, False


def scrape(metrics: str, timeout_s: float = 2.0) -> tuple[dict[str, VersionFigures], int]:
    """Every gateway's figures by version, summed (counts since each gateway started), and
    how many gateways answered."""
    figures: dict[str, VersionFigures] = {}
    answered = 0
    for text in scrape_texts(metrics, timeout_s).values():
        if text is not None:
            parse_metrics(text, figures)
            answered += 1
    return figures, answered


def kept_lines(text: str) -> str:
    """The lines of ``/metrics`` text this module reads (a baseline kept on disk)."""
    return "\n".join(line for line in text.splitlines() if "musicrec_gateway_" in line) + "\n"


# ---------------------------------------------------------------- the split each gateway routes

PERCENT_GAUGE = "musicrec_gateway_rollout_percent"  # {role="canary"|"shadow", version}
ERROR_GAUGE = "musicrec_gateway_rollout_error"  # 1 while the gateway cannot read the split


@dataclass(frozen=True)
class GatewaySplit:
    """What one gateway says it routes: ``percent[(role, version)]``; ``reports`` is False
    for a gateway that exports no rollout gauges (an older one)."""

    reports: bool
    percent: dict[tuple[str, str], float]
    error: bool

    def routes(self, version: int) -> bool:
        """Whether any share of its traffic still goes to ``version`` (canary or shadow)."""
        return any(p > 0 for (_, v), p in self.percent.items() if v == str(version))


def parse_split(text: str) -> GatewaySplit:
    """The rollout gauges of one gateway's ``/metrics`` text."""
    percent: dict[tuple[str, str], float] = {}
    reports = error = False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == PERCENT_GAUGE:
                reports = True
                percent[(s.labels.get("role", ""), s.labels.get("version", ""))] = s.value
            elif s.name == ERROR_GAUGE:
                reports, error = True, error or s.value > 0
    return GatewaySplit(reports, percent, error)
