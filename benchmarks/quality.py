"""Train and evaluate every model on HetRec 2011 Last.fm over several split seeds; write
benchmarks/results/quality.json.

    .venv/bin/python -m benchmarks.quality                      # 5 seeds, every model
    .venv/bin/python -m benchmarks.quality --seeds 0 -m ease dnn
    .venv/bin/python -m benchmarks.quality --ablations          # + ranker ablations per seed
    .venv/bin/python -m benchmarks.quality --ablations 0 1      # + ablations on seeds 0 and 1

Known users are evaluated on a per-user holdout; new listeners (``new_user``) are held-out
users recommended from their history alone (training/split.py has the protocol). Each seed is
a different split; every figure is reported per seed and as mean and standard deviation. The
DNN's two-stage blend and learned ranker are tuned on each split's validation plays only; the
ranker's settings are chosen on a held-back part of the validation users
(``training/ranker_tuning.py``), and ``tuning`` records per seed what was tried and chosen.

Top-level figures: ``served_vs_ease_known`` / ``served_vs_ease_new`` (mean NDCG@10 of the served
default, ``dnn_ranked``, over EASE's), ``served_vs_best_baseline_min`` (over seeds and both
listener kinds, the served default's NDCG@10 over the best baseline's on that seed) and
``candidate_recall`` (stage 1's share of held-out artists, known users, mean over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from core.console import console, metrics_table
from core.paths import HETREC_DIR
from core.ranker_features import NETWORK_FEATURES, RANKER_FEATURES, TAG_FEATURES
from core.tag_profile import TagAssignments
from training.config import DataConfig, TrainConfig
from training.data import load_hetrec
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import MODEL_NAMES
from training.models.dnn import NetworkRecommender
from training.pipeline import fit_model, make_model
from training.ranker import RankedRecommender, fit_ranker
from training.split import Split, SplitConfig, split_interactions
from training.two_stage import TwoStageRecommender, candidate_recall

RESULTS = Path(__file__).parent / "results" / "quality.json"
KEYS = ("precision@10", "recall@10", "map@10", "ndcg@10", "hit@10", "coverage")
BASELINES = ("popularity", "user_knn", "item_knn", "ease", "als")
SERVED = "dnn_ranked"  # the gateway's default mode, ``ranked``
# Ranker ablations: each leaves out one group of features (their columns zeroed).
ABLATIONS = {
    "no_dnn": NETWORK_FEATURES,
    "no_ease": tuple(f for f in RANKER_FEATURES if f.startswith("ease")),
    "no_item_knn": tuple(f for f in RANKER_FEATURES if f.startswith("item_knn")),
    "no_neighbourhood": tuple(f for f in RANKER_FEATURES if f.startswith("neighbourhood")),
    "no_ranks_z_shares": tuple(f for f in RANKER_FEATURES
                               if f.endswith(("_z", "_rank", "_share")) and f != "dnn_z"),
    "no_als": tuple(f for f in RANKER_FEATURES if f.startswith("als")),
    "no_popularity": ("log_listeners", "popularity_z", "popularity_rank"),
    "no_sources": ("sources",),
    "no_listener": ("log_history", "similarity_mass", "top_similarity", "neighbours", "known"),
    "no_tags": TAG_FEATURES,  # only where the data has tags
}  # fmt: skip


def run_seed(models: list[str], data, seed: int, ablations: bool) -> dict:
    """Fit and evaluate ``models`` on one split; ``{"known": ..., "new": ..., ...}``."""
    base = TrainConfig(data=DataConfig("hetrec"), split=SplitConfig(seed=seed))
    split = split_interactions(data.matrix, base.split)
    out: dict = {"split": split.summary(), "known": {}, "new": {}, "train_seconds": {}}
    for name in models:
        cfg = TrainConfig(model=name, data=base.data, split=base.split)
        model = make_model(cfg, progress=True)
        seconds = fit_model(model, split, tags=data.tags)
        _record(out, name, model, split, cfg.k, seconds)
        if name == "dnn":
            out |= _staged_rows(out, model, split, cfg.k, ablations, data.tags)
        if isinstance(model, NetworkRecommender):
            out.setdefault("throughput", {})[name] = {
                "rows": model.train_rows_, "epochs": model.epochs_,
                "seconds": model.train_seconds_, "rows_per_second": model.rows_per_second_,
            }  # fmt: skip
        console.print(f"seed {seed} {name}: ndcg@10 known {out['known'][name]['ndcg@10']:.4f} "
                      f"new {out['new'][name]['ndcg@10']:.4f} in {seconds:.1f}s")  # fmt: skip
    return out


def _record(out: dict, name: str, model, split: Split, k: int, seconds: float | None) -> None:
    known = evaluate_known_users(model, split, k)
    new = evaluate_new_users(model, split, k)
    out["known"][name] = {key: known[key] for key in KEYS}
    out["new"][name] = {key: new[key] for key in KEYS}
    if seconds is not None:
        out["train_seconds"][name] = seconds


def _staged_rows(out: dict, model: NetworkRecommender, split: Split, k: int,
                 ablations: bool, tags: TagAssignments | None) -> dict:  # fmt: skip
    """The DNN behind stage 1: the blend (``dnn_two_stage``) and the learned ranker
    (``dnn_ranked``, the served default), both tuned on validation; stage 1's recall of the
    held-out artists; the ranker's validation figures and, optionally, its ablations."""
    settings = model.two_stage_
    table = model.tag_table_  # fitted on train_full's plays, as served
    two = TwoStageRecommender(model, settings, als=model.als_, tags=table).fit(split.train_full)
    _record(out, "dnn_two_stage", two, split, k, None)
    ranked = RankedRecommender(model, model.ranker_, settings, two.item_table_, two.ease_table_,
                               model.als_, table).fit(split.train_full)  # fmt: skip
    _record(out, SERVED, ranked, split, k, None)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    recall = {
        "known": candidate_recall(two.stage1_users(users), split.test[users]),
        "new": candidate_recall(two.stage1_histories(split.new_user_history[split.new_users]),
                                split.new_user_targets[split.new_users]),
    }  # fmt: skip
    extra = {"candidate_recall": recall, "ranker": model.ranker_.to_dict(),
             "two_stage": settings.to_dict()}  # fmt: skip
    if ablations:
        inner = TwoStageRecommender(model, settings, tags=tags).fit(split.train)
        extra["ablation"] = {}
        for name, group in ABLATIONS.items():
            drop = tuple(f for f in group if f in model.ranker_.features)
            if not drop:
                continue  # e.g. no tags in this data
            served = model.ranker_.config  # the chosen setting, less one more group
            ranker = fit_ranker(
                inner,
                split.val,
                dataclasses.replace(
                    served, drop=(*served.drop, *drop), eval_share=0.0, early_stopping=0
                ),
            )
            variant = RankedRecommender(model, ranker, settings, two.item_table_, two.ease_table_,
                                        model.als_, table)  # fmt: skip
            variant.fit(split.train_full)
            row = {"known": evaluate_known_users(variant, split, k)[f"ndcg@{k}"],
                   "new": evaluate_new_users(variant, split, k)[f"ndcg@{k}"]}  # fmt: skip
            extra["ablation"][name] = row
            console.print(f"ablation {name}: known {row['known']:.4f} new {row['new']:.4f}")
    return extra


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean and standard deviation over seeds of every model's metrics, and the figures."""
    seeds = sorted(per_seed)
    out: dict = {"models": {}, "new_user": {}}
    for kind, section in (("known", "models"), ("new", "new_user")):
        for name in per_seed[seeds[0]][kind]:
            out[section][name] = {
                key: _spread([per_seed[s][kind][name][key] for s in seeds]) for key in KEYS
            }
    ndcg = lambda s, kind, name: per_seed[s][kind][name]["ndcg@10"]  # noqa: E731
    if SERVED in per_seed[seeds[0]]["known"] and "ease" in per_seed[seeds[0]]["known"]:
        for kind in ("known", "new"):
            served = np.mean([ndcg(s, kind, SERVED) for s in seeds])
            out[f"served_vs_ease_{kind}"] = float(served / np.mean([ndcg(s, kind, "ease")
                                                                    for s in seeds]))  # fmt: skip
        ratios = {}
        for s in seeds:
            for kind in ("known", "new"):
                present = [b for b in BASELINES if b in per_seed[s][kind]]
                best = max(present, key=lambda b: ndcg(s, kind, b))
                ratio = ndcg(s, kind, SERVED) / ndcg(s, kind, best)
                ratios[f"{s}/{kind}"] = {"best_baseline": best, "ratio": ratio}
        out["served_vs_best_baseline"] = ratios
        out["served_vs_best_baseline_min"] = float(min(r["ratio"] for r in ratios.values()))
        out["candidate_recall"] = float(np.mean([per_seed[s]["candidate_recall"]["known"]
                                                 ["candidate_recall"] for s in seeds]))  # fmt: skip
    ablated = [s for s in seeds if per_seed[s].get("ablation")]
    if ablated:  # each row beside the served ranker's figure on the same seeds ("nothing")
        rows = {"nothing": {kind: [ndcg(s, kind, SERVED) for s in ablated]
                            for kind in ("known", "new")}}  # fmt: skip
        for name in per_seed[ablated[0]]["ablation"]:
            rows[name] = {kind: [per_seed[s]["ablation"][name][kind] for s in ablated]
                          for kind in ("known", "new")}  # fmt: skip
        out["ablation"] = {
            "seeds": ablated,
            **{name: {kind: _spread(v) for kind, v in row.items()} for name, row in rows.items()},
        }
    return out


def tuning_protocol(per_seed: dict[int, dict]) -> str:
    """What chose the served default's settings, read from what ran (the rankers' records)."""
    records = {s: r.get("ranker", {}).get("validation", {}).get("tuning")
               for s, r in per_seed.items()}  # fmt: skip
    if not any(records.values()):
        return "no learned ranker ran: nothing was tuned"
    chosen = {s: t["chosen"] for s, t in records.items() if t}
    first = next(t for t in records.values() if t)
    return (
        f"two-stage blend and network early stopping on validation plays (split.val); "
        f"ranker settings chosen per seed by {first['chose_on']} (seed: chosen {chosen}); "
        f"training reads no test play (tests/test_no_test_leak.py)"
    )


def _spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "values": [float(v) for v in values]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-m", "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--ablations",
        nargs="*",
        type=int,
        default=None,
        metavar="SEED",
        help="ranker ablations on these seeds (every seed when none named)",
    )
    parser.add_argument("--data", type=Path, default=HETREC_DIR)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = load_hetrec(args.data)
    ablate = set(args.seeds if args.ablations == [] else args.ablations or ())
    per_seed = {seed: run_seed(args.models, data, seed, seed in ablate) for seed in args.seeds}
    split_cfg = SplitConfig()
    result = {
        "dataset": {"name": "hetrec2011-lastfm-2k", **data.summary(), "source": str(args.data)},
        "protocol": {**split_cfg.as_dict(), "k": 10, "exclude_played": True,
                     "candidates": "all artists not in the user's train/val history",
                     "tuning": tuning_protocol(per_seed)},
        "tuning": {str(s): per_seed[s].get("ranker", {}).get("validation", {}).get("tuning")
                   for s in args.seeds},
        "machine": {"cpus": 2, "python": platform.python_version()},
        "seeds": args.seeds,
        **summarise(per_seed),
        "per_seed": {str(s): per_seed[s] for s in args.seeds},
    }  # fmt: skip
    result["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    _print(result)
    return 0


def _print(result: dict) -> None:
    for section, title in (("models", "known users"), ("new_user", "new listeners")):
        rows = {name: {k: v["mean"] for k, v in entry.items()}
                for name, entry in result[section].items()}  # fmt: skip
        console.print(metrics_table(f"HetRec 2011 Last.fm — {title}, mean over seeds "
                                    f"{result['seeds']}", rows))  # fmt: skip
    for key in ("served_vs_ease_known", "served_vs_ease_new", "served_vs_best_baseline_min",
                "candidate_recall"):  # fmt: skip
        if key in result:
            console.print(f"{key}: {result[key]:.4f}")
    if "ablation" in result:
        table = Table(title=f"ranker ablations, NDCG@10 over seeds {result['ablation']['seeds']}")
        for col in ("ranker without", "known", "new"):
            table.add_column(col, justify="left" if col == "ranker without" else "right")
        for name, row in result["ablation"].items():
            if name != "seeds":
                table.add_row(
                    name.removeprefix("no_"),
                    *(f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in ("known", "new")),
                )
        console.print(table)
    console.print(f"wrote quality.json in {result['total_seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
