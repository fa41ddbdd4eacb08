"""The learned ranker's settings chosen on validation users only.

The validation users are split (seeded) into the part whose labels train each candidate setting
and the part that chooses between them (``TuningConfig.choose_share``): NDCG@10 over the choosers'
candidate lists (every list has a held-out artist). The chosen setting is then refitted on
every validation user. Test plays and new listeners'
plays are never read (``tests/test_no_test_leak.py``). The record (each candidate's figure, the
choice, the part that chose) is kept in the ranker's ``validation["tuning"]``, saved with the
run and copied into ``quality.json``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.ranker_features import NETWORK_FEATURES, TAG_FEATURES
from training.config import TuningConfig
from training.ranker import LearnedRanker, RankerConfig, RankerExamples, boost, ranker_examples
from training.two_stage import TwoStageRecommender


def candidate_settings(base: RankerConfig | None = None) -> dict[str, RankerConfig]:
    """The settings tried, by name: the base, one change each, and the base without the
    network's features and without the tag features (so each earns its place in the ranker on
    validation; a run without tags skips the last, :func:`available`)."""
    base = base or RankerConfig()
    vary = dataclasses.replace
    return {
        "base": base,
        "lambdarank": vary(base, objective="lambdarank"),
        "leaves_31": vary(base, leaves=31),
        "min_rows_per_leaf_50": vary(base, min_child_samples=50),
        "learning_rate_0.05": vary(base, learning_rate=0.05),
        "without_network_features": vary(base, drop=tuple(NETWORK_FEATURES)),
        "without_tag_features": vary(base, drop=tuple(TAG_FEATURES)),
    }


def available(config: RankerConfig, features: tuple[str, ...]) -> bool:
    """Whether a setting applies to a run of these features (it drops only features it has)."""
    return set(config.drop) <= set(features)


def held_ndcg(ranker: LearnedRanker, examples: RankerExamples, k: int = 10) -> float:
    """Mean NDCG@k of ``ranker`` over the held-back users' candidate lists (all its trees)."""
    x, y, sizes = examples.held
    scores = ranker.predict(x)
    total, start = 0.0, 0
    for size in sizes:
        labels, order = y[start : start + size], np.argsort(-scores[start : start + size])
        gains = labels[order[:k]] / np.log2(np.arange(2, min(k, size) + 2))
        ideal = np.sort(labels)[::-1][:k] / np.log2(np.arange(2, min(k, size) + 2))
        total += gains.sum() / ideal.sum()
        start += size
    return float(total / max(len(sizes), 1))


def _tried(examples: RankerExamples, config: RankerConfig) -> dict[str, Any]:
    """One candidate fitted on the training part, judged (and early-stopped) by the choosers."""
    judged = boost(examples, dataclasses.replace(config, early_stopping=0))
    return {"ndcg@10": held_ndcg(judged, examples), "trees": judged.booster.num_trees()}


def tune_ranker(model: TwoStageRecommender, val: sp.csr_matrix, tuning: TuningConfig | None = None,
                *, settings: dict[str, RankerConfig] | None = None,
                seed: int = 0) -> LearnedRanker:  # fmt: skip
    """The best of ``tuning.settings`` (looked up in ``settings``, default
    :func:`candidate_settings`) by the choosing part's NDCG@10, refitted on every validation
    user; ties keep the earlier setting."""
    tuning = tuning or TuningConfig()
    known = settings or candidate_settings()
    unknown = [name for name in tuning.settings if name not in known]
    if unknown:
        raise ValueError(f"unknown ranker settings {unknown}; choose among {list(known)}")
    choose_share = tuning.choose_share
    examples = ranker_examples(model, val, choose_share, seed)
    skipped = [n for n in tuning.settings if not available(known[n], examples.features)]
    settings = {n: known[n] for n in tuning.settings if n not in skipped}
    if not settings:
        raise ValueError(f"none of the ranker settings {list(tuning.settings)} applies to a run "
                         f"of features {list(examples.features)}")  # fmt: skip
    if not examples.held_users:  # too few validation users to hold any back: the first setting
        return boost(examples, next(iter(settings.values())))
    tried = {name: _tried(examples, config) for name, config in settings.items()}
    chosen = max(tried, key=lambda name: tried[name]["ndcg@10"])  # max keeps the first of ties
    ranker = boost(examples.everything(), dataclasses.replace(settings[chosen], early_stopping=0))
    ranker.validation["tuning"] = {
        "chose_on": f"NDCG@10 over the candidate lists of {examples.held_users} validation "
                    f"users ({choose_share:.0%}, seed {seed}), held out of every candidate's "
                    f"fit; then refitted on all "
                    f"{examples.fit_users + examples.held_users} validation users",
        "fit_users": examples.fit_users,
        "choose_users": examples.held_users,
        "tried": tried,
        "skipped": {n: "drops features this run does not have" for n in skipped},
        "chosen": chosen,
        "chosen_ndcg@10": tried[chosen]["ndcg@10"],
    }  # fmt: skip
    return ranker
