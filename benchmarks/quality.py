"""Train and evaluate every model on HetRec 2011 Last.fm; write benchmarks/results/quality.json.

    .venv/bin/python -m benchmarks.quality            # all models (~10 min on 2 cores)
    .venv/bin/python -m benchmarks.quality -m ease dnn

Known users are evaluated on a per-user holdout; ``dnn_new_user`` (and the ``new_user`` block)
on held-out users recommended from their history alone. See training/split.py for the protocol.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from core.console import console, metrics_table
from core.paths import HETREC_DIR
from training.config import DataConfig, TrainConfig
from training.data import load_hetrec
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import MODEL_NAMES
from training.models.dnn import NetworkRecommender
from training.pipeline import fit_model, make_model
from training.split import Split, split_interactions
from training.two_stage import TwoStageRecommender, candidate_recall

RESULTS = Path(__file__).parent / "results" / "quality.json"
KEYS = ("precision@10", "recall@10", "map@10", "ndcg@10", "hit@10", "coverage")


def run(models: list[str], data_dir: Path) -> dict:
    """Fit and evaluate ``models`` on one shared split; returns the quality.json document."""
    data = load_hetrec(data_dir)
    base = TrainConfig(data=DataConfig(f"hetrec:{data_dir}"))
    split = split_interactions(data.matrix, base.split)
    out: dict = {
        "dataset": {"name": "hetrec2011-lastfm-2k", **data.summary(), "source": str(data_dir)},
        "protocol": {
            **base.split.as_dict(),
            **split.summary(),
            "k": base.k,
            "exclude_played": True,
            "candidates": "all artists not in the user's train/val history",
        },
        "machine": {"cpus": 2, "python": platform.python_version()},
        "models": {},
        "new_user": {},
        "throughput": {},
    }
    for name in models:
        cfg = TrainConfig(model=name, data=base.data)
        model = make_model(cfg, progress=True)
        seconds = fit_model(model, split)
        known = evaluate_known_users(model, split, cfg.k)
        new = evaluate_new_users(model, split, cfg.k)
        row = {k: known[k] for k in KEYS} | {"train_seconds": seconds, "params": model.params()}
        out["models"][name] = row
        out["new_user"][name] = {k: new[k] for k in KEYS}
        if name == "dnn":
            out["models"]["dnn_new_user"] = {k: new[k] for k in KEYS} | {"train_seconds": seconds}
            out["models"] |= _two_stage_rows(model, split, cfg.k)
        if isinstance(model, NetworkRecommender):
            out["throughput"][name] = {
                "rows": model.train_rows_,
                "epochs": model.epochs_,
                "seconds": model.train_seconds_,
                "rows_per_second": model.rows_per_second_,
            }
            if name == "dnn":
                out["models"][name]["history"] = model.history_
        console.print(f"{name}: ndcg@10 {known['ndcg@10']:.4f} in {seconds:.1f}s")
    return out


def _two_stage_rows(model: NetworkRecommender, split: Split, k: int) -> dict[str, dict]:
    """The trained DNN behind stage-1 candidates with its validation-tuned blend (the gateway's
    ``two_stage`` mode), for known users and held-out users; with the candidates' recall of the
    held-out artists and their median count."""
    two = TwoStageRecommender(model, model.two_stage_).fit(split.train_full)
    known = evaluate_known_users(two, split, k)
    new = evaluate_new_users(two, split, k)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    coverage = candidate_recall(two.stage1_users(users), split.test[users])
    new_coverage = candidate_recall(two.stage1_histories(split.new_user_history[split.new_users]),
                                    split.new_user_targets[split.new_users])  # fmt: skip
    settings = model.two_stage_.to_dict()
    console.print(f"dnn_two_stage: ndcg@{k} {known[f'ndcg@{k}']:.4f}, candidate recall "
                  f"{coverage['candidate_recall']:.3f}")  # fmt: skip
    return {
        "dnn_two_stage": {key: known[key] for key in KEYS} | coverage | {"params": settings},
        "dnn_two_stage_new_user": {key: new[key] for key in KEYS} | new_coverage,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-m", "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--data", type=Path, default=HETREC_DIR)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.models, args.data)
    result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(
        metrics_table("HetRec 2011 Last.fm — known users (per-user 20% holdout)", result["models"])
    )
    console.print(metrics_table("held-out users, from their history", result["new_user"]))
    for name, t in result["throughput"].items():
        console.print(
            f"{name}: {t['rows_per_second']:,.0f} training rows/s "
            f"({t['rows']:,} rows, {t['epochs']} epochs, {t['seconds']:.0f}s)"
        )
    console.print(f"wrote {args.out} in {result['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
