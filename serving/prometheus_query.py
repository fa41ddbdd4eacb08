"""The gateways' figures read from a Prometheus server by PromQL (``deploy --watch S
--prometheus URL``), instead of scraping each gateway: what compose and Kubernetes run.

One instant query (``/api/v1/query``) per poll asks for the series ``serving/gateway_metrics.py``
reads (:data:`SERIES`) of the scrape job that names the gateways (``job``: ``gateway`` in
``ops/prometheus.yml``; whatever the job is called in a cluster's scrape config)::

    sum by (instance, __name__, version, method, code, le, outcome, action)
      ({__name__=~"musicrec_gateway_(...)", job="gateway"})

and each answer's samples go through ``gateway_metrics.add_sample``, so the watcher's figures,
windows and rules are the same whichever way they were read. The sum keeps ``instance``, one
gateway a target: ``sum by (version, le)`` across gateways would hide one gateway's restart
(its counters fall while the others' grow), while per instance ``gateway_metrics.since``
counts it from 0 as it does for scrapes. :func:`figures` asks for that cross-gateway sum
itself (what ``status`` shows). Which gateways exist and answered comes from
``up{job="gateway"}``: every target the job names (the gateways expected), 1 for those whose
last scrape worked. The figures are as old as the last scrape (``scrape_interval``, 5 s in
``ops/prometheus.yml``), so a poll interval shorter than that sees repeats, which add nothing.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request

from serving import gateway_metrics as gm
from serving.gateway_metrics import VersionFigures

log = logging.getLogger(__name__)
DEFAULT_JOB = "gateway"  # ops/prometheus.yml's job for the gateways
SERIES = (
    "requests_by_version_total", "request_seconds_by_version_bucket", "canary_retries_total",
    "impressions_total", "impression_hits_total", "first_play_reciprocal_rank_sum",
    "first_play_reciprocal_rank_sum_total", "feedback_events_total", "shadow_requests_total",
    "shadow_seconds_bucket", "shadow_overlap_at_10_sum", "shadow_overlap_at_10_count",
    "shadow_rank_correlation_sum", "shadow_rank_correlation_count",
)  # fmt: skip
LABELS = ("version", "method", "code", "le", "outcome", "action")


class PrometheusError(OSError):
    """The server did not answer, or answered with an error (the message says which)."""


def query(url: str, expr: str, timeout_s: float = 5.0) -> list[dict]:
    """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
    address = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as r:
            body = json.loads(r.read())
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {url}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url}: {body.get('error', body)}")
    return body["data"]["result"]


def _selector(job: str) -> str:
    names = "|".join(SERIES)
    return f'{{__name__=~"musicrec_gateway_({names})",job="{job}"}}'


def series_expr(job: str = DEFAULT_JOB, *, per_instance: bool = True) -> str:
    """The PromQL of the figures: per gateway (``instance``), or summed over the gateways."""
    by = ("instance", "__name__", *LABELS) if per_instance else ("__name__", *LABELS)
    return f"sum by ({', '.join(by)}) ({_selector(job)})"


def _add(into: dict[str, VersionFigures], sample: dict) -> None:
    labels = dict(sample["metric"])
    name = labels.pop("__name__", "")
    gm.add_sample(into, name, labels, float(sample["value"][1]))


def figures(url: str, job: str = DEFAULT_JOB) -> dict[str, VersionFigures]:
    """Every gateway's figures by version, summed by Prometheus (``sum by (version, le, ...)``)."""
    into: dict[str, VersionFigures] = {}
    for sample in query(url, series_expr(job, per_instance=False)):
        _add(into, sample)
    return into


def targets(url: str, job: str = DEFAULT_JOB) -> dict[str, bool]:
    """The job's targets (the gateways expected) and whether each one's last scrape worked."""
    return {s["metric"].get("instance", "?"): float(s["value"][1]) == 1.0
            for s in query(url, f'up{{job="{job}"}}')}  # fmt: skip


def by_instance(url: str, job: str = DEFAULT_JOB) -> dict[str, dict[str, VersionFigures] | None]:
    """Each gateway's figures by version (None: its last scrape failed), like the watcher's
    scrapes: every target of ``up{job}``, a gateway with no samples yet as ``{}``."""
    up = targets(url, job)
    out: dict[str, dict[str, VersionFigures] | None] = {
        i: ({} if ok else None) for i, ok in up.items()
    }
    for sample in query(url, series_expr(job)):
        instance = sample["metric"].get("instance", "?")
        if out.get(instance) is not None:
            _add(out[instance], {**sample, "metric": {
                k: v for k, v in sample["metric"].items() if k != "instance"}})  # fmt: skip
    return out


class Poller:
    """The watcher's source (``canary_watch.watch(source=...)``): :func:`by_instance` each
    call; when Prometheus does not answer, every gateway it last named counts as silent."""

    def __init__(self, url: str, job: str = DEFAULT_JOB) -> None:
        self.url, self.job = url, job
        self.known: list[str] = [url]  # until a target is known, the server stands for them

    def __call__(self) -> dict[str, dict[str, VersionFigures] | None]:
        try:
            found = by_instance(self.url, self.job)
        except PrometheusError as exc:
            log.warning("%s", exc)
            return dict.fromkeys(self.known)
        self.known = list(found) or [self.url]
        return found
