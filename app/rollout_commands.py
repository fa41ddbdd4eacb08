"""``musicrec deploy --canary P | --shadow P [--watch S]``, ``deploy promote | abort | watch``,
and the rollout part of ``status`` (``serving/rollout.py``, ``serving/canary_watch.py``)."""

from __future__ import annotations

import argparse

from rich.table import Table

from core.console import console

VERBS = ("promote", "abort", "watch")  # `deploy <verb>`: the rollout that runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The rollout flags of ``deploy``."""
    g = p.add_argument_group("canary and shadow (`deploy promote`, `deploy abort`, "
                             "`deploy watch` act on the running one)")  # fmt: skip
    g.add_argument("--canary", type=float, metavar="P",
                   help="load the version beside the serving one and answer P%% of listeners "
                        "with it (sticky by user id or history)")  # fmt: skip
    g.add_argument("--shadow", type=float, metavar="P",
                   help="copy P%% of requests to the version off the request path; its "
                        "answers are only compared")  # fmt: skip
    g.add_argument("--watch", type=float, metavar="SECONDS",
                   help="after --canary, watch the gateways' metrics this long and abort the "
                        "canary if it is worse than the serving version")  # fmt: skip
    add_metrics_argument(g)
    g.add_argument("--window", type=float, default=30.0, help="watch window, seconds")
    g.add_argument("--max-error-gap", type=float, default=0.01,
                   help="abort when the canary's error ratio exceeds the serving one's by "
                        "more (0.01: one point)")  # fmt: skip
    g.add_argument(
        "--p99-ratio",
        type=float,
        default=1.5,
        help="abort when the canary's p99 exceeds this x the serving one's ...",
    )
    g.add_argument("--p99-slack-ms", type=float, default=10.0, help="... plus this")
    g.add_argument("--min-requests", type=int, default=30,
                   help="canary requests in the window before any verdict")  # fmt: skip


def add_metrics_argument(p) -> None:
    p.add_argument("--gateway-metrics", metavar="TARGET",
                   help="the gateways' metrics endpoints: host:port, a list a:9101,b:9101, "
                        "or dns:///name:9101")  # fmt: skip


def wanted(args: argparse.Namespace) -> bool:
    """Whether this ``deploy`` is a rollout command."""
    return (str(args.run_dir) in VERBS or bool(args.canary) or bool(args.shadow)
            or args.watch is not None)  # fmt: skip


def run(args: argparse.Namespace, cfg) -> None:
    from serving import canary_watch, rollout

    verb = str(args.run_dir) if str(args.run_dir) in VERBS else None
    if verb == "promote":
        _report(rollout.promote(cfg))
        return
    if verb == "abort":
        _report(rollout.abort(cfg))
        return
    if verb is None:
        _report(rollout.start(cfg, run_dir=args.run_dir, version=args.version,
                              canary_percent=args.canary or 0.0,
                              shadow_percent=args.shadow or 0.0, force=args.force))  # fmt: skip
        if args.watch is None:
            return
    if not args.gateway_metrics:
        raise ValueError("watching needs --gateway-metrics (the gateways' metrics endpoints)")
    rules = canary_watch.WatchRules(args.window, min(2.0, args.window / 5), args.max_error_gap,
                               args.p99_ratio, args.p99_slack_ms / 1e3,
                               args.min_requests)  # fmt: skip
    result = canary_watch.watch(
        cfg, args.gateway_metrics, rules, duration_s=args.watch if args.watch is not None else 600.0
    )
    colour = {"aborted": "red", "healthy": "green"}.get(result.verdict, "yellow")
    console.print(f"watch: [{colour}]{result.verdict}[/] after {result.seconds:.0f}s: "
                  f"{result.reason}", highlight=False)  # fmt: skip


def _report(report) -> None:
    if report.recovered:
        console.print(f"[yellow]{report.recovered}[/]")
    if report.action in ("canary", "shadow"):
        s = report.split
        parts = [f"canary {s.percent:g}% of listeners"] if s.canary is not None else []
        parts += [f"shadow {s.shadow_percent:g}% of requests"] if s.shadow is not None else []
        console.print(f"{report.action}: version {report.version} loaded beside version "
                      f"{report.serving} ({', '.join(parts)}) after {report.seconds:.1f}s; "
                      f"metric gate {report.gate}")  # fmt: skip
    elif report.action == "promote":
        console.print(f"promote: version {report.version} serves after {report.seconds:.1f}s"
                      + (f"; retired {', '.join(map(str, report.retired))}"
                         if report.retired else ""))  # fmt: skip
    else:
        console.print(f"abort: version {report.version} unloaded, version {report.serving} "
                      f"serves alone after {report.seconds:.1f}s")  # fmt: skip


def roles(repository) -> dict[int, str]:
    """``{version: "canary" | "shadow"}`` of the running rollout."""
    from core import traffic_split

    running = traffic_split.read(repository)
    if running is None:
        return {}
    return {v: "canary" if v == running.canary else "shadow" for v in running.versions}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_status(args: argparse.Namespace, cfg) -> None:
    """The split, and with ``--gateway-metrics`` each version's figures."""
    from core import traffic_split
    from serving import rollout

    running = traffic_split.read(cfg.repository)
    if running is not None:
        parts = [f"canary version {running.canary}: {running.percent:g}% of listeners"
                 ] if running.canary is not None else []  # fmt: skip
        parts += [f"shadow version {running.shadow}: {running.shadow_percent:g}% of requests"
                  ] if running.shadow is not None else []  # fmt: skip
        console.print(f"rollout beside serving version {running.serving}: {'; '.join(parts)}")
    if not getattr(args, "gateway_metrics", None):
        return
    found = rollout.figures(cfg, args.gateway_metrics)
    table = Table(title=f"By version, from the {found['source']}")
    for col in ("version", "requests", "error ratio", "p99 ms", "canary retries",
                "shadow ok/err/dropped", "shadow p50 ms", "overlap@10", "spearman",
                "kendall"):  # fmt: skip
        table.add_column(col, justify="right")
    for version, f in found.get("versions", {}).items():
        shadow = f["shadow"]
        table.add_row(
            version, f"{f['requests']:.0f}", _fmt(f["error_ratio"], ".2%"),
            _fmt(f["p99_ms"], ".1f"), f"{f['retried']:.0f}",
            "/".join(f"{shadow.get(k, 0):.0f}" for k in ("ok", "error", "dropped"))
            if shadow else "-",
            _fmt(f["shadow_p50_ms"], ".1f"), _fmt(f["overlap_at_10"], ".3f"),
            _fmt(f["spearman"], ".3f"), _fmt(f["kendall"], ".3f"),
        )  # fmt: skip
    console.print(table)
