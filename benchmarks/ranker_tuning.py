"""The ranker's settings chosen on validation users (``training/ranker_tuning.py``) against its
base settings and EASE, on HetRec over several split seeds; writes
benchmarks/results/ranker_tuning.json.

    .venv/bin/python -m benchmarks.ranker_tuning                 # seeds 0-4 (~8 min a seed)
    .venv/bin/python -m benchmarks.ranker_tuning --seeds 0 --out /tmp/seed0.json

Per seed: the full training (the network, stage 1, the blend and the ranker tuned on validation,
as ``musicrec train`` does), then the served default (``ranked``) with the chosen settings and
with the base ``RankerConfig``, and EASE, all judged on the test plays. The test figures are
reported after the choice and never feed it; ``tuning`` is what the choosers saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.console import console
from core.paths import HETREC_DIR
from core.tag_profile import ArtistTags
from training.data import load_hetrec
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import DNNConfig, DNNRecommender
from training.pipeline import baseline_metrics, fit_model
from training.ranker import RankedRecommender, RankerConfig, fit_ranker
from training.split import SplitConfig, split_interactions
from training.two_stage import TwoStageRecommender

RESULTS = Path(__file__).parent / "results" / "ranker_tuning.json"
ROWS = ("tuned", "base", "base_without_tags", "ease")


def run_seed(data, seed: int) -> dict:
    """One split: the tuning record and test NDCG@10 (known, new) of each row of :data:`ROWS`."""
    t0 = time.perf_counter()
    split = split_interactions(data.matrix, SplitConfig(seed=seed))
    model = DNNRecommender(DNNConfig())
    fit_model(model, split, progress=True, tags=data.tags)
    tags = data.tags and ArtistTags.fit(data.tags, split.train_full)  # the served table

    def judge(ranker) -> dict[str, float]:
        ranked = RankedRecommender(model, ranker, model.two_stage_, als=model.als_, tags=tags)
        ranked.fit(split.train_full)
        return {"known": evaluate_known_users(ranked, split, 10)["ndcg@10"],
                "new": evaluate_new_users(ranked, split, 10)["ndcg@10"]}  # fmt: skip

    out = {"tuning": model.ranker_.validation["tuning"], "tuned": judge(model.ranker_)}
    inner = TwoStageRecommender(model, model.two_stage_, tags=data.tags).fit(split.train)
    out["base"] = judge(fit_ranker(inner, split.val, RankerConfig()))
    plain = TwoStageRecommender(model, model.two_stage_, als=inner.als_).fit(split.train)
    out["base_without_tags"] = judge(fit_ranker(plain, split.val, RankerConfig()))
    ease = baseline_metrics("ease", split)
    out["ease"] = {"known": ease["known_users"]["ndcg@10"], "new": ease["new_users"]["ndcg@10"]}
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean and std of each row, and the tuned ranker over EASE and over the base settings."""
    seeds = sorted(per_seed)
    mean = lambda row, kind: float(np.mean([per_seed[s][row][kind] for s in seeds]))  # noqa: E731
    out: dict = {row: {kind: {"mean": mean(row, kind),
                              "std": float(np.std([per_seed[s][row][kind] for s in seeds]))}
                       for kind in ("known", "new")} for row in ROWS}  # fmt: skip
    for kind in ("known", "new"):
        out[f"tuned_vs_ease_{kind}"] = mean("tuned", kind) / mean("ease", kind)
        out[f"tuned_vs_base_{kind}"] = mean("tuned", kind) / mean("base", kind)
    out["chosen"] = {str(s): per_seed[s]["tuning"]["chosen"] for s in seeds}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", type=Path, default=HETREC_DIR)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = load_hetrec(args.data)
    per_seed = {seed: run_seed(data, seed) for seed in args.seeds}
    result = {"seeds": args.seeds, **summarise(per_seed),
              "per_seed": {str(s): r for s, r in per_seed.items()},
              "machine": "2 cores"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in ROWS:
        console.print(f"{row}: known {result[row]['known']['mean']:.4f} ± "
                      f"{result[row]['known']['std']:.4f}, new {result[row]['new']['mean']:.4f} "
                      f"± {result[row]['new']['std']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
