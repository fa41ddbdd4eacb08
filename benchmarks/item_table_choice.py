"""Which item-item table stage 1 uses, chosen on validation users only (no test play is read);
writes benchmarks/results/item_table_choice.json.

    .venv/bin/python -m benchmarks.item_table_choice               # seeds 0-2 (~5 min a seed)
    .venv/bin/python -m benchmarks.item_table_choice --seeds 0 --out /tmp/item_tables.json

Per HetRec split seed, with the network trained as ``musicrec train`` does, stage 1 is fitted on
the training plays with each item table of :mod:`core.item_tables` (cosine, RP3beta at a few
popularity penalties); the base ranker is fitted on the candidate lists of three quarters of the
validation users and judged by the held-back quarter's NDCG@10 over the whole catalogue (their
validation plays, ranked from the training plays), as ``benchmarks/ranker_headroom.py`` judges
stage-1 settings. ``chosen`` is the default (:class:`core.candidates.CandidateConfig`,
cosine) unless another table beats it on every seed and by more than ``MARGIN`` on the mean
(settings of the same kind differ by up to 0.003 on one seed in ``ranker_headroom.json``, so a
smaller mean gain is not told from noise); the default in the code follows ``chosen``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.table import Table

from benchmarks.ranker_headroom import stage1_sizes, validation_seeds
from core.candidates import CandidateConfig
from core.console import console
from training.models import DNNConfig, DNNRecommender
from training.split import SplitConfig, split_interactions

RESULTS = Path(__file__).parent / "results" / "item_table_choice.json"
DEFAULT = "cosine"
MARGIN = 0.002  # mean NDCG@10 a table must gain over the default to replace it
CHOICES = {
    "cosine": CandidateConfig(item_similarity="cosine"),
    **{f"rp3beta_{beta}": CandidateConfig(item_similarity="rp3beta", rp3_beta=beta)
       for beta in (0.3, 0.5, 0.7)},
}  # fmt: skip


def run_seed(data, seed: int) -> dict[str, float]:
    """The held-back validation users' catalogue NDCG@10 per item table, on one split seed."""
    split = split_interactions(data.matrix, SplitConfig(seed=seed))
    network = DNNRecommender(DNNConfig())
    network.fit(split.train, split.val)
    return stage1_sizes(network, data, split, CHOICES)


def chosen(per_seed: dict[str, dict[str, float]]) -> str:
    """The default, unless another table beats it on every seed and by > ``MARGIN`` on the
    mean (the largest such mean wins)."""
    mean = {name: float(np.mean([r[name] for r in per_seed.values()])) for name in CHOICES}
    better = [name for name in CHOICES if name != DEFAULT
              and all(r[name] > r[DEFAULT] for r in per_seed.values())
              and mean[name] > mean[DEFAULT] + MARGIN]  # fmt: skip
    return max(better, key=mean.get) if better else DEFAULT


def choice_table(per_seed: dict[str, dict[str, float]]) -> Table:
    """One row per item table, one column per seed, and the mean."""
    table = Table(title="validation NDCG@10 of the held-back quarter, per item table")
    for column in ("item table", *(f"seed {s}" for s in per_seed), "mean"):
        table.add_column(column, justify="left" if column == "item table" else "right")
    for name in CHOICES:
        figures = [r[name] for r in per_seed.values()]
        table.add_row(name, *(f"{f:.4f}" for f in figures), f"{np.mean(figures):.4f}")
    return table


def summary(per_seed: dict[str, dict[str, float]]) -> dict:
    """The tables tried, their means and the choice (printed too)."""
    means = {name: float(np.mean([r[name] for r in per_seed.values()])) for name in CHOICES}
    console.print(f"chosen: {chosen(per_seed)} (the default {DEFAULT} unless another beats it on "
                  f"every seed and by > {MARGIN} on the mean)")  # fmt: skip
    return {"choices": {name: config.as_dict() for name, config in CHOICES.items()},
            "mean": means, "best_mean": max(means, key=means.get), "margin": MARGIN,
            "chosen": chosen(per_seed)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return validation_seeds(__doc__, RESULTS, run_seed, choice_table, argv, summary)


if __name__ == "__main__":
    sys.exit(main())
