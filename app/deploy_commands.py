"""``musicrec deploy`` / ``rollback`` / ``status``: version swaps in a running Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from app import rollout_commands
from client import Credentials
from core import traffic_split
from core.console import console
from core.paths import DEFAULT_REPOSITORY


def _deploy_config(args: argparse.Namespace, *, needs_key: bool = True):
    """The deploy settings; ``status`` reads without Triton's admin key when none is set."""
    from serving import admin_key
    from serving.deploy import DeployConfig

    try:
        key = admin_key.resolve(args.admin_key_file)
    except admin_key.AdminKeyError:
        if needs_key:
            raise
        key = None
    token = args.gateway_token_file.read_text().strip() if args.gateway_token_file else None
    gateway = Credentials(args.gateway_tls_ca, args.gateway_tls_cert, args.gateway_tls_key, token)
    return DeployConfig(args.repository, args.triton_url, args.gateway,
                        keep=getattr(args, "keep", 3),
                        max_metric_drop=getattr(args, "max_metric_drop", 0.01),
                        admin_key=key, gateway_credentials=gateway)  # fmt: skip


def _print_report(report) -> None:
    if report.recovered:
        console.print(f"[yellow]{report.recovered}[/]")
    for warning in getattr(report, "warnings", ()):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(
        f"{report.action}: version {report.version} serves (was {report.previous}) after "
        f"{report.seconds:.1f}s; metric gate {report.gate}"
        + (f"; retired {', '.join(map(str, report.retired))}" if report.retired else "")
    )


def _deploy(args: argparse.Namespace) -> None:
    from serving.deploy import deploy

    if rollout_commands.wanted(args):  # --canary, --shadow, --watch; promote, abort, watch
        rollout_commands.run(args, _deploy_config(args))
        return
    _print_report(deploy(_deploy_config(args), run_dir=args.run_dir, version=args.version,
                         force=args.force))  # fmt: skip


def _rollback(args: argparse.Namespace) -> None:
    from serving.deploy import rollback

    _print_report(rollback(_deploy_config(args)))


def _status(args: argparse.Namespace) -> None:
    from serving.deploy import status

    table = Table(title=f"Model versions in {args.repository}")
    for col in ("version", "serving", "NDCG@10", "created", "source run"):
        table.add_column(col)
    cfg = _deploy_config(args, needs_key=False)
    rows, recovered = status(cfg)
    roles = rollout_commands.roles(cfg.repository)
    if recovered:
        console.print(f"[yellow]{recovered}[/]")
    for row in rows:
        metric = "-" if row.metric is None else f"{row.metric:.4f}"
        serving = roles.get(row.version) or (  # a canary or shadow is ready, not serving
            "yes" if row.serving
            else "pinned, NOT READY" if getattr(row, "pinned", False) else "")  # fmt: skip
        table.add_row(str(row.version), serving, metric, row.created, row.source_run)
    console.print(table)
    for row in rows:
        if getattr(row, "problem", ""):
            console.print(f"[red]version {row.version} does not match its manifest: "
                          f"{row.problem}[/]", soft_wrap=True)  # fmt: skip
    try:
        rollout_commands.print_status(args, cfg)
    except traffic_split.RolloutError as exc:  # a corrupt split: shown, never a failed status
        console.print(f"[red]rollout split: {exc}[/]", soft_wrap=True, highlight=False)


def _operations(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--triton-url", default="127.0.0.1:8001", help="Triton gRPC")
    p.add_argument("--gateway", help="host:port: wait until the gateway serves the version")
    p.add_argument("--gateway-tls-ca", type=Path, help="TLS: the gateway's CA certificate")
    p.add_argument("--gateway-tls-cert", type=Path, help="mutual TLS: this tool's certificate")
    p.add_argument("--gateway-tls-key", type=Path, help="mutual TLS: this tool's private key")
    p.add_argument("--gateway-token-file", type=Path, help="the gateway's bearer token")
    p.add_argument("--admin-key-file", type=Path, default=None,
                   help="Triton's model-control key (env MUSICREC_TRITON_ADMIN_KEY; default: "
                        "the file the embedded Triton writes)")  # fmt: skip


def _keep(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=int, default=3,
                   help="deployed versions kept on disk (rollback targets)")  # fmt: skip


def register(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    dp = sub.add_parser(
        "deploy", formatter_class=fmt,
        help="validate a run or exported version and swap it in, no downtime",
    )  # fmt: skip
    dp.add_argument("run_dir", type=Path, nargs="?", help="export this run first")
    dp.add_argument("--version", type=int, help="an already exported version")
    dp.add_argument("--force", action="store_true",
                    help="deploy despite a worse NDCG@10; promote a canary without the "
                         "watcher's healthy verdict (recorded as forced)")  # fmt: skip
    _keep(dp)
    dp.add_argument("--max-metric-drop", type=float, default=0.01, help="allowed NDCG@10 drop")
    _operations(dp)
    rollout_commands.add_arguments(dp)
    dp.set_defaults(func=_deploy)
    rb = sub.add_parser("rollback", formatter_class=fmt, help="serve the previous version again")
    _keep(rb)  # accepted like deploy's (same check); a rollback retires nothing
    _operations(rb)
    rb.set_defaults(func=_rollback)
    st = sub.add_parser("status", formatter_class=fmt, help="versions, which serves, metrics")
    _operations(st)
    rollout_commands.add_metrics_argument(st)
    st.set_defaults(func=_status)
