"""``musicrec train`` / ``evaluate`` / ``recommend``: models on listening data, and offline
recommendations from a saved run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from rich.table import Table

from app.data_commands import ensure_generated
from core.console import console, metrics_table, step
from core.paths import DEFAULT_GENERATED_CSV, DEFAULT_RUNS_DIR
from training.config import DataConfig, TrainConfig
from training.models import MODEL_NAMES, DNNConfig
from training.split import SplitConfig


def _train_config(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        k: v for k, v in {"max_epochs": args.max_epochs, "seed": args.seed}.items() if v is not None
    }
    return TrainConfig(
        model=args.model,
        data=DataConfig(
            args.data,
            args.min_user_artists,
            args.min_artist_users,
            events=str(args.events) if args.events else None,
            playlist_tags=args.playlist_tags,
        ),  # fmt: skip
        split=SplitConfig(seed=args.seed if args.seed is not None else 0),
        dnn=dataclasses.replace(DNNConfig(), **overrides),
    )


def train_and_save(cfg: TrainConfig, run_dir: Path) -> Path:
    """Train and evaluate ``cfg``, save the run, print its metrics; returns the run directory."""
    from training.pipeline import train_and_evaluate
    from training.run import result_metrics, save_run

    ensure_generated(cfg.data.source, cfg.generator.seed)
    result = train_and_evaluate(cfg, progress=True)
    report = result.load_report
    if "events" in report:
        ev = report["events"]
        console.print(f"event log: {ev['plays_added']:,} plays added ({ev['new_users']} new "
                      f"users), {ev['skipped_unknown_artists']:,} skipped (artist unknown to "
                      "the base data)")  # fmt: skip
    if report.get("malformed") or report.get("empty_fields"):
        console.print(f"[yellow]skipped rows[/]: {report['malformed']} malformed, "
                      f"{report['empty_fields']} with an empty user or artist")  # fmt: skip
    save_run(run_dir, cfg, result)
    test_users = result.split.summary()["test_users"]
    console.print(metrics_table(f"{result.data.source} — {test_users} test users",
                                _result_rows(cfg, result)))  # fmt: skip
    metrics = result_metrics(result)
    if "rows_per_second" in metrics:
        console.print(f"training throughput: {metrics['rows_per_second']:,.0f} rows/s over "
                      f"{metrics['epochs']} epochs")  # fmt: skip
    console.print(f"run saved to [bold]{run_dir}[/]")
    return run_dir


def _result_rows(cfg: TrainConfig, result) -> dict[str, dict[str, float]]:
    """The table's rows: what the gateway serves by default (``ranked``) first, then the model
    itself and EASE (the strongest baseline), each for known users and new listeners."""
    from training.pipeline import baseline_metrics

    rows: dict[str, dict[str, float]] = {}
    if result.served_metrics is not None:
        served = result.served_metrics
        rows["ranked (served default)"] = served["known_users"]
        rows["ranked (new users)"] = served["new_users"]
    rows[cfg.model] = {**result.metrics, "train_seconds": result.train_seconds}
    rows[f"{cfg.model} (new users)"] = result.new_user_metrics
    if cfg.model != "ease":
        with step("EASE, the baseline to beat, fitted and evaluated"):
            ease = baseline_metrics("ease", result.split, cfg.k)
        rows["ease"], rows["ease (new users)"] = ease["known_users"], ease["new_users"]
    return rows


def _train(args: argparse.Namespace) -> None:
    cfg = _train_config(args)
    run_dir = Path(
        args.run_dir or DEFAULT_RUNS_DIR / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if run_dir.exists():
        raise FileExistsError(f"run directory already exists: {run_dir}")
    train_and_save(cfg, run_dir)


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
        table.add_row(str(i), r.name, r.id, f"{r.score:.3f}")
    console.print(table)


def register(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    t = sub.add_parser(
        "train", help="train and evaluate one model, save a run directory", formatter_class=fmt
    )
    t.add_argument("-d", "--data", default=str(DEFAULT_GENERATED_CSV),
                   help="[hetrec:|spotify:|audioscrobbler:]PATH")  # fmt: skip
    t.add_argument("-m", "--model", choices=MODEL_NAMES, default="dnn")
    t.add_argument("--run-dir", type=Path, help="default: runs/<model>-<time>")
    t.add_argument(
        "--events",
        type=Path,
        metavar="DIR",
        help="also learn the plays in a gateway's event log (its --events DIR)",
    )
    t.add_argument("--playlist-tags", action="store_true",
                   help="Spotify format: the words of playlist names become artist tags "
                        "(tag features, kept only if validation users choose them)")  # fmt: skip
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
