"""``musicrec deploy --canary P | --shadow P | --interleave P [--watch S]``, ``deploy promote |
abort | watch``, and the rollout part of ``status`` (``serving/rollout.py``,
``serving/canary_watch.py``).

Every argument is checked before anything changes (:func:`validate`): a canary is never
started to be left unwatched by a ``--watch`` that cannot run. A watch that ends "aborted" or
"inconclusive" exits non-zero (:class:`WatchFailed`, exit 2)."""

from __future__ import annotations

import argparse

from rich.table import Table

from core.console import console
from core.errors import MusicrecError

VERBS = ("promote", "abort", "watch")  # `deploy <verb>`: the rollout that runs


class WatchFailed(MusicrecError):
    """The watcher's verdict was not "healthy"; the message is the verdict line."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The rollout flags of ``deploy``."""
    g = p.add_argument_group("canary and shadow (`deploy promote`, `deploy abort`, "
                             "`deploy watch` act on the running one)")  # fmt: skip
    g.add_argument("--canary", type=float, metavar="P",
                   help="load the version beside the serving one and answer P%% of listeners "
                        "with it (sticky by user id or history); 0 < P <= 100")  # fmt: skip
    g.add_argument("--shadow", type=float, metavar="P",
                   help="copy P%% of requests to the version off the request path; its "
                        "answers are only compared; 0 < P <= 100")  # fmt: skip
    g.add_argument("--interleave", type=float, metavar="P",
                   help="load the version beside the serving one and answer P%% of listeners "
                        "(sticky, as the canary) with a team-draft interleaving of both "
                        "versions' lists; Feedback credits the team; alone (no --canary or "
                        "--shadow); 0 < P <= 100")  # fmt: skip
    g.add_argument("--promote-if-better", action="store_true",
                   help="with --watch on an interleaving: promote the candidate once the "
                        "sequential test says better (worse always aborts)")  # fmt: skip
    g.add_argument("--interleave-alpha", type=float, default=0.05,
                   help="the interleaving test's level: how often it may be wrong")  # fmt: skip
    g.add_argument("--watch", type=float, metavar="SECONDS",
                   help="after --canary (or with `deploy watch`), watch the gateways' metrics "
                        "this long and abort the canary if it is worse than the serving "
                        "version; exits non-zero unless the verdict is healthy")  # fmt: skip
    add_metrics_argument(g)
    g.add_argument("--window", type=float, default=30.0, help="watch window, seconds")
    g.add_argument("--max-error-gap", type=float, default=0.01,
                   help="abort when the canary's error ratio exceeds the serving one's by "
                        "more (0.01: one point)")  # fmt: skip
    g.add_argument("--p99-ratio", type=float, default=1.5,
                   help="abort when the canary's p99 exceeds this x the serving one's "
                        "...")  # fmt: skip
    g.add_argument("--p99-slack-ms", type=float, default=10.0, help="... plus this")
    g.add_argument("--min-requests", type=int, default=30,
                   help="canary requests in the window before any verdict")  # fmt: skip
    g.add_argument("--quality-gate", action="store_true",
                   help="also abort a canary whose online hit rate (Feedback) is worse than "
                        "the serving version's with confidence (an always-valid test on the "
                        "counts since the watch began); healthy then needs the drop shown "
                        "below --max-hit-rate-drop, else the verdict is inconclusive")  # fmt: skip
    g.add_argument("--quality-alpha", type=float, default=0.05,
                   help="the hit-rate test's level: how often it may be wrong")  # fmt: skip
    g.add_argument("--max-hit-rate-drop", type=float, default=0.05,
                   help="healthy needs the canary's hit rate shown no more than this below "
                        "the serving one's (0.05: five points)")  # fmt: skip
    g.add_argument("--min-impressions", type=int, default=100,
                   help="lists served per version before the hit-rate test decides")  # fmt: skip
    g.add_argument("--prometheus", metavar="URL",
                   help="watch by PromQL from this Prometheus server (http://host:9090) "
                        "instead of scraping each gateway")  # fmt: skip
    g.add_argument("--prometheus-job", default="gateway",
                   help="the scrape job of the gateways (ops/prometheus.yml: gateway)")  # fmt: skip
    g.add_argument("--settle-s", type=float, default=None,
                   help="abort without --gateway-metrics: seconds to let the gateways read the "
                        "0%% split (default: two of the gateway's default polls)")  # fmt: skip
    g.add_argument("--settle-timeout-s", type=float, default=30.0,
                   help="abort with --gateway-metrics: the longest wait for every gateway to "
                        "report it routes nothing to the version")  # fmt: skip


def add_metrics_argument(p) -> None:
    p.add_argument("--gateway-metrics", metavar="TARGET",
                   help="the gateways' metrics endpoints: host:port, a list a:9101,b:9101, "
                        "or dns:///name:9101")  # fmt: skip


def wanted(args: argparse.Namespace) -> bool:
    """Whether this ``deploy`` is a rollout command (``--canary 0`` is one: it is refused)."""
    return (str(args.run_dir) in VERBS or args.canary is not None or args.shadow is not None
            or args.interleave is not None or args.watch is not None)  # fmt: skip


def _verb(args: argparse.Namespace) -> str | None:
    return str(args.run_dir) if str(args.run_dir) in VERBS else None


def validate(args: argparse.Namespace):
    """Refuse what cannot run before anything changes; the watch rules (None: no watch)."""
    from core.endpoints import resolve_endpoints
    from serving import canary_watch, rollout

    verb = _verb(args)
    starting = verb is None
    shares = (args.canary, args.shadow, args.interleave)
    if not starting and any(x is not None for x in shares):
        raise ValueError(f"`deploy {verb}` acts on the running rollout: drop "
                         "--canary/--shadow/--interleave")  # fmt: skip
    if starting:
        if all(x is None for x in shares):
            raise ValueError("--watch watches a canary or an interleaving: give --canary P or "
                             "--interleave P (or `deploy watch`)")  # fmt: skip
        rollout.check_shares(*shares)
        if args.run_dir is None and args.version is None:
            raise ValueError("give a run directory or --version")
    if args.settle_s is not None and args.settle_s < 0:
        raise ValueError("--settle-s must be >= 0")
    if not args.settle_timeout_s > 0:
        raise ValueError("--settle-timeout-s must be positive")
    if args.gateway_metrics:
        resolve_endpoints(args.gateway_metrics)  # a malformed target fails here
    watching = verb == "watch" or (starting and args.watch is not None)
    if verb in ("promote", "abort") and args.watch is not None:
        raise ValueError(f"--watch does not apply to `deploy {verb}`")
    if not 0 < args.interleave_alpha < 1:
        raise ValueError("--interleave-alpha must lie between 0 and 1")
    if args.promote_if_better and not watching:
        raise ValueError("--promote-if-better acts on the watch's decision: give --watch S "
                         "(with --interleave P) or `deploy watch`")  # fmt: skip
    if args.promote_if_better and starting and args.interleave is None:
        raise ValueError("--promote-if-better needs an interleaving (--interleave P): a "
                         "canary is promoted by hand after a healthy verdict")  # fmt: skip
    if args.prometheus and starting and args.interleave is not None:
        raise ValueError("--prometheus does not read the interleaving counters yet: watch an "
                         "interleaving with --gateway-metrics")  # fmt: skip
    if args.quality_gate and starting and args.interleave is not None:
        raise ValueError("--quality-gate compares a canary's hit rate; an interleaving is "
                         "judged by its own test (drop --quality-gate)")  # fmt: skip
    if not watching:
        return None
    if starting and args.canary is None and args.interleave is None:
        raise ValueError("--watch watches a canary; a shadow answers no caller")
    if not (args.gateway_metrics or args.prometheus):
        raise ValueError("--watch needs --gateway-metrics (the gateways' metrics endpoints) "
                         "or --prometheus URL; nothing was started")  # fmt: skip
    if args.prometheus and not args.prometheus.startswith(("http://", "https://")):
        raise ValueError("--prometheus takes a URL: http://host:9090")
    if args.watch is not None and not args.watch > 0:
        raise ValueError("--watch must be a positive number of seconds")
    return canary_watch.WatchRules(
        args.window, min(2.0, args.window / 5), args.max_error_gap, args.p99_ratio,
        args.p99_slack_ms / 1e3, args.min_requests, quality_gate=args.quality_gate,
        quality_alpha=args.quality_alpha, max_hit_rate_drop=args.max_hit_rate_drop,
        quality_min_impressions=args.min_impressions, interleave_alpha=args.interleave_alpha,
        promote_if_better=args.promote_if_better,
    )  # fmt: skip


def run(args: argparse.Namespace, cfg) -> None:
    """The rollout verb or start, then the watch; WatchFailed unless the verdict is healthy."""
    from serving import canary_watch, rollout

    rules = validate(args)
    verb, metrics = _verb(args), args.gateway_metrics
    if verb == "promote":
        _report(rollout.promote(cfg, force=args.force))
        return
    if verb == "abort":
        _report(rollout.abort(cfg, metrics=metrics, settle_s=args.settle_s,
                              settle_timeout_s=args.settle_timeout_s))  # fmt: skip
        return
    if verb is None:
        _report(rollout.start(cfg, run_dir=args.run_dir, version=args.version,
                              canary_percent=args.canary, shadow_percent=args.shadow,
                              interleave_percent=args.interleave, force=args.force,
                              metrics=metrics))  # fmt: skip
    if rules is None:
        return
    duration = args.watch if args.watch is not None else 600.0
    source = None
    if args.prometheus:
        from serving import prometheus_query

        source = prometheus_query.Poller(args.prometheus, args.prometheus_job)
    result = canary_watch.watch(cfg, metrics, rules, duration_s=duration, source=source)
    line = (f"watch: {result.verdict} after {result.seconds:.0f}s: {result.reason} "
            f"({result.canary_requests:.0f} canary requests seen; {result.gateways} of "
            f"{result.gateways_expected} gateways answered the last poll)")  # fmt: skip
    if result.quality:
        console.print(f"quality gate: {result.quality['decision']}: {result.quality['why']}",
                      highlight=False)  # fmt: skip
    if result.interleaving:
        console.print(tally_line(result.interleaving), highlight=False)
    if result.promoted:
        console.print(f"promote: version {result.promoted} serves", highlight=False)
    if result.verdict != "healthy":
        raise WatchFailed(line)
    console.print(f"[green]{line}[/]", highlight=False)


def _report(report) -> None:
    if report.recovered:
        console.print(f"[yellow]{report.recovered}[/]")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.action in ("canary", "shadow", "interleave"):
        s = report.split
        parts = [f"canary {s.percent:g}% of listeners"] if s.canary is not None else []
        parts += [f"shadow {s.shadow_percent:g}% of requests"] if s.shadow is not None else []
        parts += [f"interleave {s.interleave_percent:g}% of listeners"
                  ] if s.interleave is not None else []  # fmt: skip
        console.print(f"{report.action}: version {report.version} loaded beside version "
                      f"{report.serving} ({', '.join(parts)}) after {report.seconds:.1f}s; "
                      f"metric gate {report.gate}")  # fmt: skip
    elif report.action == "promote":
        console.print(f"promote: version {report.version} serves after {report.seconds:.1f}s"
                      + (f"; retired {', '.join(map(str, report.retired))}"
                         if report.retired else ""))  # fmt: skip
    else:
        dropped = f"version {report.version} unloaded" if report.version else "split removed"
        console.print(f"abort: {dropped}, version {report.serving} serves alone after "
                      f"{report.seconds:.1f}s")  # fmt: skip


def roles(repository) -> dict[int, str]:
    """``{version: "canary" | "shadow" | "interleave"}`` of the running rollout ({} when none
    or unreadable)."""
    from core import traffic_split

    try:
        running = traffic_split.read(repository)
    except traffic_split.RolloutError:
        return {}
    if running is None:
        return {}
    return {v: "canary" if v == running.canary else "shadow" if v == running.shadow
            else "interleave" for v in running.versions}  # fmt: skip


def tally_line(t: dict) -> str:
    """One line of an interleaving's tally and its sequential test."""
    share = "-" if t["win_share"] is None else f"{t['win_share']:.3f}"
    return (f"interleaving: candidate won {t['wins']}, lost {t['losses']}, tied {t['ties']} "
            f"(share of decisive {share}; {t.get('interleaved', 0):.0f} interleaved answers, "
            f"{t.get('fallbacks', 0):.0f} serving-only fallbacks); sequential test: "
            f"{t['decision']} (confidence {t['confidence']:.1%})")  # fmt: skip


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_split(cfg) -> None:
    from core import traffic_split
    from serving import rollout

    try:
        running = traffic_split.read(cfg.repository)
    except traffic_split.RolloutError as exc:
        console.print(f"[red]rollout split: {exc}[/]", soft_wrap=True, highlight=False)
        return
    if running is None:
        return
    parts = [f"canary version {running.canary}: {running.percent:g}% of listeners"
             ] if running.canary is not None else []  # fmt: skip
    parts += [f"shadow version {running.shadow}: {running.shadow_percent:g}% of requests"
              ] if running.shadow is not None else []  # fmt: skip
    parts += [f"interleave version {running.interleave}: {running.interleave_percent:g}% of "
              "listeners (team draft)"] if running.interleave is not None else []  # fmt: skip
    console.print(f"rollout beside serving version {running.serving}: {'; '.join(parts)}")
    verdict = (rollout.state_of(cfg.repository, running) or {}).get("verdict")
    if verdict:
        v = verdict.get
        console.print(f"watcher verdict: {v('verdict')} at {v('at', '?')} ({v('reason', '')}; "
                      f"{v('canary_requests', 0):.0f} canary requests, {v('gateways', 0)} of "
                      f"{v('gateways_expected', 0)} gateways)", highlight=False)  # fmt: skip
    else:
        console.print("watcher verdict: none recorded (promote needs a healthy one, or "
                      "--force)", highlight=False)  # fmt: skip


COLUMNS = ("requests", "error ratio", "p99 ms", "canary retries", "shadow ok/err/dropped",
           "shadow p50 ms", "overlap@10", "spearman", "kendall")  # fmt: skip


def _cells(f: dict) -> list[str]:
    shadow = f["shadow"]
    return [
        f"{f['requests']:.0f}", _fmt(f["error_ratio"], ".2%"), _fmt(f["p99_ms"], ".1f"),
        f"{f['retried']:.0f}",
        "/".join(f"{shadow.get(k, 0):.0f}" for k in ("ok", "error", "dropped")) if shadow else "-",
        _fmt(f["shadow_p50_ms"], ".1f"), _fmt(f["overlap_at_10"], ".3f"),
        _fmt(f["spearman"], ".3f"), _fmt(f["kendall"], ".3f"),
    ]  # fmt: skip


def print_status(args: argparse.Namespace, cfg) -> None:
    """The split and its verdict, and with ``--gateway-metrics`` the figures: per role, per
    gateway and in total while a rollout runs, else per version."""
    from serving import rollout

    _print_split(cfg)
    if not getattr(args, "gateway_metrics", None):
        return
    found = rollout.figures(cfg, args.gateway_metrics)
    if found.get("interleaving"):
        console.print(tally_line(found["interleaving"]) + f", over {found['window']}",
                      highlight=False)  # fmt: skip
    by_role = bool(found["roles"])
    table = Table(title=f"By {'role' if by_role else 'version'}, from the {found['source']}")
    for col in (("gateway", "role") if by_role else ("version",)) + COLUMNS:
        table.add_column(col, justify="right")
    if by_role:
        for gateway, per_role in [*found["gateways"].items(), ("total", found["roles"])]:
            for role, f in per_role.items():
                table.add_row(gateway, f"{role} {f['version']}", *_cells(f))
    else:
        for version, f in found["versions"].items():
            table.add_row(version, *_cells(f))
    console.print(table)
