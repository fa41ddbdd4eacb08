"""``musicrec``: generate data, train and evaluate models, and ask a trained run for artists."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from training.config import (
    DEFAULT_GENERATED_CSV,
    DEFAULT_REPOSITORY,
    DEFAULT_RUNS_DIR,
    DataConfig,
    TrainConfig,
)
from training.data.generator import GeneratorConfig, generate_spotify_csv
from training.models import MODEL_NAMES, DNNConfig
from training.split import SplitConfig

console = Console(width=max(Console().width, 110))
METRIC_COLUMNS = ("precision@10", "recall@10", "map@10", "ndcg@10", "hit@10", "coverage")
_HEADERS = ("P@10", "R@10", "MAP@10", "NDCG@10", "HR@10", "coverage", "train s")


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """A rich table with one row per model and the standard metric columns."""
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    for col in _HEADERS:
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in rows.items():
        table.add_row(
            name,
            *(f"{m[c]:.4f}" if c in m else "-" for c in METRIC_COLUMNS),
            f"{m.get('train_seconds', 0.0):.1f}",
        )
    return table


def _generate(args: argparse.Namespace) -> None:
    cfg = GeneratorConfig(
        rows=args.rows,
        users=args.users,
        artists=args.artists,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
    )
    t0 = time.perf_counter()
    path = generate_spotify_csv(args.out, cfg, progress=True)
    console.print(f"wrote {cfg.rows:,} rows to {path} in {time.perf_counter() - t0:.1f}s")


def _ensure_generated(source: str, seed: int) -> None:
    if Path(source) == DEFAULT_GENERATED_CSV and not DEFAULT_GENERATED_CSV.exists():
        console.print(f"generating the default data set at {DEFAULT_GENERATED_CSV}")
        generate_spotify_csv(DEFAULT_GENERATED_CSV, GeneratorConfig(seed=seed), progress=True)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    dnn = DNNConfig()
    overrides = {
        k: v for k, v in {"max_epochs": args.max_epochs, "seed": args.seed}.items() if v is not None
    }
    return TrainConfig(
        model=args.model,
        data=DataConfig(args.data, args.min_user_artists, args.min_artist_users),
        split=SplitConfig(seed=args.seed if args.seed is not None else 0),
        dnn=dataclasses.replace(dnn, **overrides),
    )


def _train(args: argparse.Namespace) -> None:
    from training.pipeline import train_and_evaluate
    from training.run import result_metrics, save_run

    cfg = _train_config(args)
    _ensure_generated(cfg.data.source, cfg.generator.seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.run_dir or DEFAULT_RUNS_DIR / f"{cfg.model}-{stamp}")
    if run_dir.exists():
        raise FileExistsError(f"run directory already exists: {run_dir}")
    result = train_and_evaluate(cfg, progress=True)
    if result.load_report.get("malformed") or result.load_report.get("empty_fields"):
        console.print(
            f"[yellow]skipped rows[/]: {result.load_report['malformed']} malformed, "
            f"{result.load_report['empty_fields']} with an empty user or artist"
        )
    save_run(run_dir, cfg, result)
    metrics = result_metrics(result)
    rows = {
        cfg.model: {**result.metrics, "train_seconds": result.train_seconds},
        f"{cfg.model} (new users)": result.new_user_metrics,
    }
    test_users = result.split.summary()["test_users"]
    console.print(metrics_table(f"{result.data.source} — {test_users} test users", rows))
    if "rows_per_second" in metrics:
        console.print(
            f"training throughput: {metrics['rows_per_second']:,.0f} rows/s over "
            f"{metrics['epochs']} epochs"
        )
    console.print(f"run saved to [bold]{run_dir}[/]")


def _evaluate(args: argparse.Namespace) -> None:
    from training.evaluation import evaluate_known_users, evaluate_new_users
    from training.models.dnn import NetworkRecommender
    from training.pipeline import prepare_data
    from training.run import load_run
    from training.split import split_interactions

    run = load_run(args.run_dir)
    data, _ = prepare_data(run.config.data)
    if data.vocab.fingerprint() != run.vocab.fingerprint():
        raise ValueError(f"the data at {run.config.data.source} is not the data this run used")
    split = split_interactions(data.matrix, run.config.split)
    model = NetworkRecommender.from_trained(
        run.load_model(), split.train_full, run.config.dnn.neighbours
    )
    rows = {
        "known users": evaluate_known_users(model, split, run.config.k),
        "new users": evaluate_new_users(model, split, run.config.k),
    }
    console.print(metrics_table(f"{run.path.name}", rows))
    if args.json:
        print(json.dumps(rows, indent=2))


def _recommend(args: argparse.Namespace) -> None:
    from training.recommend import RunRecommender
    from training.run import load_run

    rec = RunRecommender(load_run(args.run_dir))
    if args.user:
        items, title = rec.for_user(args.user, args.k), f"for user {args.user}"
    else:
        history = [a for a in args.artists.split(",") if a.strip()]
        items, title = rec.for_history(history, args.k), f"for a listener of {', '.join(history)}"
    table = Table(title=f"Top {args.k} {title}")
    for col in ("#", "artist", "id", "score"):
        table.add_column(col)
    for i, r in enumerate(items, 1):
        table.add_row(str(i), r.name, r.artist_id, f"{r.score:.3f}")
    console.print(table)


def _train_demo_run(data: str) -> Path:
    """Train the dnn on the demo data with a short schedule, print its offline metrics."""
    from training.pipeline import train_and_evaluate
    from training.run import save_run

    # A shorter schedule keeps the main job to about two minutes on two cores; `train` runs
    # the full one.
    dnn = DNNConfig(max_epochs=10, softmax_negatives=256)
    cfg = TrainConfig(data=DataConfig(data), dnn=dnn)
    _ensure_generated(cfg.data.source, cfg.generator.seed)
    result = train_and_evaluate(cfg, progress=True)
    run_dir = save_run(DEFAULT_RUNS_DIR / f"demo-{time.strftime('%Y%m%d-%H%M%S')}", cfg, result)
    console.print(
        metrics_table(
            "offline evaluation",
            {
                "dnn": {**result.metrics, "train_seconds": result.train_seconds},
                "dnn (new users)": result.new_user_metrics,
            },
        )
    )
    console.print(f"run saved to [bold]{run_dir}[/]")
    return run_dir


def _sample_listener(run_dir: Path) -> list[str]:
    """The five artists a known listener plays most, sent by name as a new listener's history."""
    from training.run import load_run

    run = load_run(run_dir)
    user = int(np.flatnonzero(np.diff(run.plays.indptr) >= 5)[0])
    row = run.plays[user]
    top = row.indices[np.argsort(-row.data, kind="stable")[:5]]
    return [run.vocab.artist_names[i] for i in top]


def _raise_keyboard_interrupt(*_: object) -> None:
    """SIGTERM handler: leave through the context managers, which stop the servers."""
    raise KeyboardInterrupt


def _demo(args: argparse.Namespace) -> None:
    from client import RecommenderClient
    from client.cli import _recommendation_table
    from export.contract import SERVED_MODELS
    from export.repository import export_run
    from export.triton_config import write_configs
    from gateway.config import GatewayConfig
    from serving.stack import StackConfig, serving_stack

    run_dir = args.run or _train_demo_run(str(args.data))
    exported = export_run(run_dir, args.repository)
    for name in SERVED_MODELS:  # the demo serves what it just exported, even if deploy pinned
        write_configs(args.repository / name, name, serving=[exported.version])
    console.print(f"exported as version {exported.version} of {args.repository} "
                  f"(parity max |diff| {exported.pair_parity.max_abs_diff:.1e})")  # fmt: skip
    stack_cfg = StackConfig(
        args.repository, *args.triton_ports,
        gateway=GatewayConfig(port=args.gateway_port, metrics_port=args.metrics_port),
        log_dir=DEFAULT_RUNS_DIR.parent / "logs",
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with serving_stack(stack_cfg) as stack:
        console.print(
            f"Triton on {stack.triton.grpc_url}, gateway on {stack.gateway.address} "
            f"(metrics :{args.metrics_port}/metrics, logs in {stack_cfg.log_dir})"
        )
        history = _sample_listener(run_dir)
        with RecommenderClient(stack.gateway.address, timeout_s=30) as client:
            rec = client.recommend(artists=history, k=10)
        console.print(f"a new listener of: [bold]{', '.join(history)}[/]")
        console.print(_recommendation_table(rec, "Top 10 through the gateway"))
        console.print(
            "similar users combined: "
            + ", ".join(f"{u.user_id[:8]} ({u.similarity:.2f})" for u in rec.similar_users)
        )
        if args.once:
            return
        console.print(
            f"serving; try: .venv/bin/musicrec-client -a {stack.gateway.address} "
            f'recommend --artists "{history[0]}"   (Ctrl-C stops)'
        )
        try:
            stack.triton.process.wait()
        except KeyboardInterrupt:
            console.print("stopping the gateway and Triton")


def _export(args: argparse.Namespace) -> None:
    from export.repository import export_run

    result = export_run(args.run_dir, args.repository)
    console.print(
        f"exported {args.run_dir} as version {result.version} of pair_scorer and "
        f"catalogue_scorer in {args.repository} (parity: max |diff| "
        f"{result.pair_parity.max_abs_diff:.1e} on {result.pair_parity.pairs:,} pairs)"
    )


def _triton(args: argparse.Namespace) -> None:
    from export.contract import CATALOGUE_SCORER, PAIR_SCORER
    from serving.triton_server import TritonConfig, TritonServer

    cfg = TritonConfig(
        args.repository, args.http_port, args.grpc_port, args.metrics_port,
        load_models=(PAIR_SCORER, CATALOGUE_SCORER), log_file=args.log_file,
    )  # fmt: skip

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with TritonServer(cfg) as server:
        console.print(
            f"Triton ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
            f"metrics :{cfg.metrics_port}; logs in {cfg.log_file}. Ctrl-C stops it."
        )
        try:
            server.process.wait()
        except KeyboardInterrupt:
            console.print("stopping Triton")


def _deploy_config(args: argparse.Namespace):
    from serving.deploy import DeployConfig

    return DeployConfig(args.repository, args.triton_url, args.gateway,
                        keep=getattr(args, "keep", 3),
                        max_metric_drop=getattr(args, "max_metric_drop", 0.01))  # fmt: skip


def _print_report(report) -> None:
    console.print(
        f"{report.action}: version {report.version} serves (was {report.previous}) after "
        f"{report.seconds:.1f}s; metric gate {report.gate}"
        + (f"; retired {', '.join(map(str, report.retired))}" if report.retired else "")
    )


def _deploy(args: argparse.Namespace) -> None:
    from serving.deploy import deploy

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
    for row in status(_deploy_config(args)):
        metric = "-" if row.metric is None else f"{row.metric:.4f}"
        table.add_row(str(row.version), "yes" if row.serving else "", metric, row.created,
                      row.source_run)  # fmt: skip
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicrec", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    g = sub.add_parser(
        "generate", help="write a seeded synthetic Spotify Playlists CSV", formatter_class=fmt
    )
    g.add_argument("-o", "--out", type=Path, default=DEFAULT_GENERATED_CSV)
    g.add_argument("-r", "--rows", type=int, default=GeneratorConfig.rows)
    g.add_argument("-u", "--users", type=int, default=GeneratorConfig.users)
    g.add_argument("-a", "--artists", type=int, default=GeneratorConfig.artists)
    g.add_argument("--malformed-rate", type=float, default=GeneratorConfig.malformed_rate)
    g.add_argument("-s", "--seed", type=int, default=GeneratorConfig.seed)
    g.set_defaults(func=_generate)

    t = sub.add_parser(
        "train", help="train and evaluate one model, save a run directory", formatter_class=fmt
    )
    t.add_argument(
        "-d",
        "--data",
        default=str(DEFAULT_GENERATED_CSV),
        help="[hetrec:|spotify:|audioscrobbler:]PATH",
    )
    t.add_argument("-m", "--model", choices=MODEL_NAMES, default="dnn")
    t.add_argument("--run-dir", type=Path, help="default: runs/<model>-<time>")
    t.add_argument("--min-user-artists", type=int, default=1)
    t.add_argument("--min-artist-users", type=int, default=1)
    t.add_argument("--max-epochs", type=int, help="dnn: epoch limit (early stopping applies)")
    t.add_argument("-s", "--seed", type=int, help="seed for the split and the model")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "evaluate", help="re-evaluate a saved seed/dnn run on its data", formatter_class=fmt
    )
    e.add_argument("run_dir", type=Path)
    e.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    e.set_defaults(func=_evaluate)

    r = sub.add_parser(
        "recommend", help="recommend artists from a saved seed/dnn run", formatter_class=fmt
    )
    r.add_argument("run_dir", type=Path)
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("-u", "--user", help="a known user id")
    who.add_argument("-a", "--artists", help="comma-separated artist names or ids")
    r.add_argument("-k", type=int, default=10)
    r.set_defaults(func=_recommend)

    x = sub.add_parser(
        "export", help="export a seed/dnn run to the Triton model repository", formatter_class=fmt
    )
    x.add_argument("run_dir", type=Path)
    x.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    x.set_defaults(func=_export)

    s = sub.add_parser(
        "triton", help="serve the model repository with the local Triton (CPU)",
        formatter_class=fmt,
    )  # fmt: skip
    s.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--log-file", type=Path, default=DEFAULT_RUNS_DIR.parent / "triton.log")
    s.set_defaults(func=_triton)

    def ops(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
        p.add_argument("--triton-url", default="127.0.0.1:8001", help="Triton gRPC")
        p.add_argument("--gateway", help="host:port: wait until the gateway serves the version")

    dp = sub.add_parser(
        "deploy",
        formatter_class=fmt,
        help="validate a run or exported version and swap it in, no downtime",
    )
    dp.add_argument("run_dir", type=Path, nargs="?", help="export this run first")
    dp.add_argument("--version", type=int, help="an already exported version")
    dp.add_argument("--force", action="store_true", help="deploy despite a worse NDCG@10")
    dp.add_argument("--keep", type=int, default=3, help="versions kept on disk")
    dp.add_argument("--max-metric-drop", type=float, default=0.01, help="allowed NDCG@10 drop")
    ops(dp)
    dp.set_defaults(func=_deploy)
    rb = sub.add_parser("rollback", formatter_class=fmt, help="serve the previous version again")
    ops(rb)
    rb.set_defaults(func=_rollback)
    st = sub.add_parser("status", formatter_class=fmt, help="versions, which serves, metrics")
    ops(st)
    st.set_defaults(func=_status)

    d = sub.add_parser(
        "demo", formatter_class=fmt,
        help="the main job: train, export, serve with Triton + gateway, recommend via the client",
    )  # fmt: skip
    d.add_argument("-d", "--data", default=str(DEFAULT_GENERATED_CSV))
    d.add_argument("--run", type=Path, help="serve this trained run instead of training one")
    d.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    d.add_argument("--once", action="store_true", help="exit after the first recommendation")
    d.add_argument("--gateway-port", type=int, default=50051)
    d.add_argument("--metrics-port", type=int, default=9101, help="gateway /metrics")
    d.add_argument("--triton-ports", type=int, nargs=3, default=(8000, 8001, 8002),
                   metavar=("HTTP", "GRPC", "METRICS"))  # fmt: skip
    d.set_defaults(func=_demo)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from client import RecommenderError
    from export.parity import ParityError
    from export.repository import ExportError
    from gateway.process import GatewayStartError
    from serving.deploy import DeployError
    from serving.triton_server import TritonError

    return (ValueError, KeyError, FileNotFoundError, FileExistsError, ExportError,
            ParityError, TritonError, GatewayStartError, RecommenderError, DeployError)  # fmt: skip


USER_ERRORS = _user_errors()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2, never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        console.print(f"[red]error:[/] {msg}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
