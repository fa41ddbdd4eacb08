"""Where the learned ranker's headroom is, judged on validation users only (no test play is
read); writes benchmarks/results/ranker_headroom.json.

    .venv/bin/python -m benchmarks.ranker_headroom               # seeds 0-2 (~5 min a seed)
    .venv/bin/python -m benchmarks.ranker_headroom --seeds 0 --out /tmp/headroom.json

Per HetRec split seed, with the network trained as ``musicrec train`` does and stage 1 fitted on
the training plays, the validation users are split as the ranker's tuning splits them (a
held-back quarter, ``training/ranker_tuning.py``):

* **More labels?** The base ranker fitted on a share (1/4, 1/2, all) of the other validation
  users' candidate lists, judged by the held-back users' NDCG@10 over their candidate lists.
* **More candidates?** Stage-1 settings (the default 500, 800, 800 with 20 neighbours): the base
  ranker fitted on the same users' lists of each, judged by the held-back users' NDCG@10 over
  the whole catalogue (their validation plays, ranked from the training plays), so a larger
  candidate set is compared fairly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.table import Table

from core.candidates import CandidateConfig, TwoStageSettings
from core.console import console
from core.paths import HETREC_DIR
from training.data import load_hetrec
from training.evaluation import recommend_users
from training.metrics import ranking_metrics
from training.models import DNNConfig, DNNRecommender
from training.ranker import RankedRecommender, RankerConfig, RankerExamples, boost, ranker_examples
from training.ranker_tuning import held_ndcg
from training.split import SplitConfig, split_interactions
from training.two_stage import TwoStageRecommender

RESULTS = Path(__file__).parent / "results" / "ranker_headroom.json"
LABEL_SHARES = (0.25, 0.5, 1.0)
_COSINE = CandidateConfig(item_similarity="cosine")  # the default when results/ was written
STAGE1 = {"default_500": _COSINE,
          "max_800": dataclasses.replace(_COSINE, max_candidates=800),
          "max_800_neighbours_20": dataclasses.replace(_COSINE, max_candidates=800,
                                                       neighbours=20)}  # fmt: skip
CHOOSE_SHARE, CHOOSE_SEED = 0.25, 0  # as the ranker's tuning holds users back


def _subsample(examples: RankerExamples, share: float, seed: int) -> RankerExamples:
    """``examples`` fitted on a seeded ``share`` of its training lists."""
    x, y, sizes = examples.fit
    starts = np.concatenate([[0], np.cumsum(sizes)])
    keep = np.sort(np.random.default_rng(seed).permutation(len(sizes))[: round(share * len(sizes))])
    rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in keep])
    return dataclasses.replace(examples, fit=(x[rows], y[rows], sizes[keep]))


def label_curve(inner: TwoStageRecommender, val: sp.csr_matrix) -> dict[str, list[float]]:
    """Held-back users' list NDCG@10 per share of training lists (two draws below all)."""
    examples = ranker_examples(inner, val, CHOOSE_SHARE, CHOOSE_SEED)
    return {str(share): [held_ndcg(boost(_subsample(examples, share, 100 + draw),
                                          RankerConfig()), examples)
                         for draw in range(2 if share < 1 else 1)]
            for share in LABEL_SHARES}  # fmt: skip


def held_users(val: sp.csr_matrix) -> np.ndarray:
    """The validation users :func:`ranker_examples` holds back with the tuning's share/seed."""
    users = np.flatnonzero(np.diff(val.indptr) > 0)
    held = np.zeros(len(users), bool)
    order = np.random.default_rng(CHOOSE_SEED).permutation(len(users))
    held[order[: int(round(CHOOSE_SHARE * len(users)))]] = True
    return users[held]


def stage1_sizes(network, data, split,
                 configs: dict[str, CandidateConfig] = STAGE1) -> dict[str, float]:  # fmt: skip
    """Held-back users' whole-catalogue validation NDCG@10 per stage-1 setting (each with its
    own item table; EASE's table and ALS's factors fitted once)."""
    val, users, out, first = sp.csr_matrix(split.val), held_users(split.val), {}, None
    for name, candidates in configs.items():
        settings = TwoStageSettings(candidates)
        shared = {} if first is None else {"ease_table": first.ease_table_, "als": first.als_}
        inner = TwoStageRecommender(network, settings, tags=data.tags, **shared).fit(split.train)
        first = first or inner
        ranker = boost(ranker_examples(inner, val, CHOOSE_SHARE, CHOOSE_SEED), RankerConfig())
        ranked = RankedRecommender(network, ranker, settings, item_table=inner.item_table_,
                                   ease_table=inner.ease_table_, als=inner.als_,
                                   tags=inner.tag_table_).fit(split.train)  # fmt: skip
        top = recommend_users(ranked, users, split.train, 10)
        out[name] = ranking_metrics(top, val[users], n_items=val.shape[1])["ndcg@10"]
    return out


def run_seed(data, seed: int) -> dict:
    split = split_interactions(data.matrix, SplitConfig(seed=seed))
    network = DNNRecommender(DNNConfig())
    network.fit(split.train, split.val)
    inner = TwoStageRecommender(network, tags=data.tags).fit(split.train)
    return {"labels": label_curve(inner, split.val),
            "stage1": stage1_sizes(network, data, split)}  # fmt: skip


def headroom_table(per_seed: dict[str, dict]) -> Table:
    """One row per label share and stage-1 setting, one column per seed, and the mean."""
    table = Table(title="validation NDCG@10 of the held-back quarter of validation users")
    for column in ("setting", *(f"seed {s}" for s in per_seed), "mean"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    rows = {f"labels {share} (list NDCG)": [float(np.mean(r["labels"][str(share)]))
                                            for r in per_seed.values()]
            for share in LABEL_SHARES}  # fmt: skip
    rows |= {f"stage 1 {name} (catalogue NDCG)": [r["stage1"][name] for r in per_seed.values()]
             for name in STAGE1}  # fmt: skip
    for name, figures in rows.items():
        table.add_row(name, *(f"{f:.4f}" for f in figures), f"{np.mean(figures):.4f}")
    return table


def validation_seeds(doc: str, results: Path, run_seed: Callable[[object, int], dict],
                     table: Callable[[dict], Table], argv: list[str] | None = None,
                     summary: Callable[[dict], dict] | None = None) -> int:  # fmt: skip
    """The main of a validation-only HetRec probe: ``run_seed(data, seed)`` per ``--seeds``,
    ``table(per_seed)`` printed, and the JSON (with ``summary(per_seed)``'s keys) written."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=results)
    args = parser.parse_args(argv)
    data = load_hetrec(HETREC_DIR)
    t0, per_seed = time.perf_counter(), {}
    for seed in args.seeds:
        per_seed[str(seed)] = run_seed(data, seed)
        console.print(f"seed {seed}: {per_seed[str(seed)]}")
    console.print(table(per_seed))
    extra = summary(per_seed) if summary else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "dataset": "hetrec", "seeds": args.seeds, "judged_on": "validation plays only",
        "choose_share": CHOOSE_SHARE, "choose_seed": CHOOSE_SEED, **extra, "per_seed": per_seed,
        "total_seconds": time.perf_counter() - t0}, indent=2))  # fmt: skip
    console.print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return validation_seeds(__doc__, RESULTS, run_seed, headroom_table, argv)


if __name__ == "__main__":
    sys.exit(main())
