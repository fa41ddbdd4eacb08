"""The learned ranking stage: LightGBM's LambdaRank over stage-1 candidates, with the DNN as one
of its features.

Labels come from training plays only: the validation slice (``split.val``), which neither the
network (it early-stops on it but never trains on it) nor the stage-1 sources (fitted on
``split.train``) have seen. Each validation user gives two lists: as a known user (their own
embedding scores the candidates) and as a new listener (their similar users', never their
own), so one model ranks both; the ``known`` feature tells them apart. For serving and
evaluation the sources are refitted on all training plays (``train_full``) and the same trees
rank their candidates (:class:`RankedRecommender`).

Features are :data:`core.ranker_features.RANKER_FEATURES`, and :data:`TAG_FEATURES` after them
when the data had tags (the candidates carry them); each ranker names its own
(``ranker.json``'s ``features``). The trees are exported to ONNX (``onnxmltools``) and run
inside Triton's ``candidate_ranker`` after the network.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from core.ranker_features import (
    RANKER_FEATURES,
    TAG_FEATURES,
    candidate_features,
    network_features,
    ranker_features,
)
from training.two_stage import TwoStageRecommender, _Stage1


@dataclass(frozen=True)
class RankerConfig:
    """LightGBM ranking settings (stored with the run and in every version's manifest).

    Picked on seed 0's validation-trained rankers (probe, test plays unseen in training):
    listwise ``rank_xendcg`` ranked as well as ``lambdarank`` in a fifth of the time; small
    trees with many rows per leaf and a low learning rate beat the library's defaults (NDCG@10
    0.236 vs 0.229 without ALS features)."""

    objective: str = "rank_xendcg"  # or "lambdarank"
    trees: int = 150  # boosting rounds (all kept unless early stopping is on)
    learning_rate: float = 0.02
    leaves: int = 15
    min_child_samples: int = 200
    feature_fraction: float = 1.0
    early_stopping: int = 0  # rounds without NDCG@10 gain on held-back users; 0: off
    eval_share: float = 0.0  # validation users held back to report (and early-stop) on
    seed: int = 0
    drop: tuple[str, ...] = ()  # features left out (ablation); their columns are zeroed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LearnedRanker:
    """A trained booster and what it was trained on."""

    booster: lgb.Booster
    config: RankerConfig = field(default_factory=RankerConfig)
    validation: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] = RANKER_FEATURES  # its columns, in order (the version's contract)

    @property
    def uses_tags(self) -> bool:
        return TAG_FEATURES[0] in self.features

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of feature rows ``(n, len(self.features))`` (float32 in, float64 out)."""
        x = np.array(x, np.float32)
        if x.ndim == 2 and x.shape[1] != len(self.features):
            raise ValueError(f"{x.shape[1]} feature columns for a ranker of "
                             f"{len(self.features)}")  # fmt: skip
        for name in self.config.drop:
            x[:, self.features.index(name)] = 0.0
        if len(x) == 0:
            return np.zeros(0)
        return self.booster.predict(x, num_threads=1)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.as_dict(), "validation": self.validation,
                "features": list(self.features), "trees": self.booster.num_trees()}  # fmt: skip

    def save(self, path) -> None:
        self.booster.save_model(str(path))
        (path.parent / (path.stem + ".json")).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> LearnedRanker:
        meta = json.loads((path.parent / (path.stem + ".json")).read_text())
        raw = meta["config"]
        config = RankerConfig(**{**raw, "drop": tuple(raw.get("drop", ()))})
        features = tuple(meta.get("features", RANKER_FEATURES))
        return cls(lgb.Booster(model_file=str(path)), config, meta.get("validation", {}),
                   features)  # fmt: skip


def list_features(stage1: _Stage1, known: bool) -> list[np.ndarray]:
    """Each listener's ``(C, F)`` rows: :data:`RANKER_FEATURES`, then :data:`TAG_FEATURES`
    when the candidates carry tags."""
    return [np.hstack([network_features(dnn), candidate_features(c, known)])
            for c, dnn in zip(stage1.candidates, stage1.dnn, strict=True)]  # fmt: skip


def _examples(stage1: _Stage1, known: bool, targets: sp.csr_matrix):
    """Feature rows, 0/1 labels and list sizes; lists without a held-out artist are dropped
    (they teach LambdaRank nothing)."""
    xs, ys, sizes = [], [], []
    for i, x in enumerate(list_features(stage1, known)):
        wanted = targets.indices[targets.indptr[i] : targets.indptr[i + 1]]
        y = np.isin(stage1.candidates[i].artists, wanted).astype(np.float32)
        if y.any():
            xs.append(x), ys.append(y), sizes.append(len(y))
    return xs, ys, sizes


def _dataset(parts, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, sizes = parts
    x = np.vstack(xs) if xs else np.zeros((0, width), np.float32)
    return x, np.concatenate(ys) if ys else np.zeros(0), np.asarray(sizes, np.int64)


@dataclass(frozen=True)
class RankerExamples:
    """The ranker's training rows from validation labels: the users it fits on, and the users
    held back (``eval_share`` of them, seeded) that only judge it."""

    fit: tuple[np.ndarray, np.ndarray, np.ndarray]  # features, 0/1 labels, list sizes
    held: tuple[np.ndarray, np.ndarray, np.ndarray]
    fit_users: int
    held_users: int
    feature_seconds: float
    features: tuple[str, ...] = RANKER_FEATURES  # the columns' names

    def everything(self) -> RankerExamples:
        """The same rows with the held-back users fitted on too (the refit after a choice)."""
        both = tuple(np.concatenate([a, b]) for a, b in zip(self.fit, self.held, strict=True))
        empty = (both[0][:0], both[1][:0], both[2][:0])
        return RankerExamples(both, empty, self.fit_users + self.held_users, 0,
                              self.feature_seconds, self.features)  # fmt: skip


def ranker_examples(model: TwoStageRecommender, val: sp.csr_matrix, eval_share: float = 0.0,
                    seed: int = 0) -> RankerExamples:  # fmt: skip
    """Feature rows and ``val`` labels with ``model`` (fitted on the plays without them) giving
    candidates and features, for validation users as known users and as if new."""
    val = sp.csr_matrix(val)
    users = np.flatnonzero(np.diff(val.indptr) > 0)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(users), bool)
    held[rng.permutation(len(users))[: int(round(eval_share * len(users)))]] = True
    t0 = time.perf_counter()
    features = ranker_features(getattr(model, "tag_table_", None) is not None)
    sets = {}
    for name, part in (("fit", users[~held]), ("eval", users[held])):
        targets = val[part]
        known = _examples(model.stage1_users(part), True, targets)
        rows = model.train_[part]
        idx, sims = model.similarity_.query(rows, model.settings.candidates.neighbours,
                                            exclude=part)  # fmt: skip
        as_new = _examples(model._stage1(rows, idx, sims,
                                         model.network.scorer_.score_groups(idx, sims)),
                           False, targets)  # fmt: skip
        sets[name] = _dataset(tuple(a + b for a, b in zip(known, as_new, strict=True)),
                              len(features))  # fmt: skip
    return RankerExamples(sets["fit"], sets["eval"], int((~held).sum()), int(held.sum()),
                          time.perf_counter() - t0, features)  # fmt: skip


def _without(parts: tuple[np.ndarray, ...], drop: tuple[str, ...],
             features: tuple[str, ...]) -> tuple[np.ndarray, ...]:  # fmt: skip
    """``parts`` with the dropped features' columns zeroed (a copy when any is dropped)."""
    if not drop:
        return parts
    x = parts[0].copy()
    for name in drop:
        x[:, features.index(name)] = 0.0
    return (x, *parts[1:])


def boost(examples: RankerExamples, config: RankerConfig) -> LearnedRanker:
    """LightGBM trees on ``examples.fit``; the held-back users report NDCG@10 over their
    candidate lists (and early-stop the trees when ``config.early_stopping``)."""
    params = {
        "objective": config.objective, "metric": "ndcg", "eval_at": [10], "learning_rate":
        config.learning_rate, "num_leaves": config.leaves, "min_child_samples":
        config.min_child_samples, "feature_fraction": config.feature_fraction,
        "lambdarank_truncation_level": 20, "seed": config.seed, "deterministic": True,
        "force_row_wise": True, "num_threads": 2, "verbose": -1,
    }  # fmt: skip
    features = examples.features
    (xf, yf, gf) = _without(examples.fit, config.drop, features)
    (xe, ye, ge) = _without(examples.held, config.drop, features)
    train_set = lgb.Dataset(xf, yf, group=gf, feature_name=list(features))
    valid_sets = [lgb.Dataset(xe, ye, group=ge, reference=train_set)] if len(ge) else []
    callbacks = [lgb.early_stopping(config.early_stopping, verbose=False)] \
        if valid_sets and config.early_stopping else []  # fmt: skip
    t1 = time.perf_counter()
    booster = lgb.train(params, train_set, config.trees, valid_sets=valid_sets,
                        callbacks=callbacks)  # fmt: skip
    if callbacks and booster.best_iteration > 0:
        booster = booster.model_from_string(booster.model_to_string(
            num_iteration=booster.best_iteration))  # fmt: skip
    validation = {
        "lists": int(len(gf) + len(ge)), "rows": int(len(yf) + len(ye)),
        "positives": int(yf.sum() + ye.sum()), "eval_ndcg@10": _best_score(booster),
        "trees": booster.num_trees(), "feature_seconds": examples.feature_seconds,
        "train_seconds": time.perf_counter() - t1,
        "gain": dict(zip(features, booster.feature_importance("gain").round(1).tolist(),
                         strict=True)),
    }  # fmt: skip
    return LearnedRanker(booster, config, validation, features)


def fit_ranker(model: TwoStageRecommender, val: sp.csr_matrix,
               config: RankerConfig | None = None) -> LearnedRanker:  # fmt: skip
    """Train the ranker on ``val`` labels (:func:`ranker_examples`, :func:`boost`)."""
    config = config or RankerConfig()
    return boost(ranker_examples(model, val, config.eval_share, config.seed), config)


def _best_score(booster: lgb.Booster) -> float | None:
    best = booster.best_score.get("valid_0", {}) if booster.best_score else {}
    return float(best["ndcg@10"]) if "ndcg@10" in best else None


class RankedRecommender(TwoStageRecommender):
    """Stage-1 candidates ranked by the learned ranker (the served default, ``ranked``)."""

    name = "dnn_ranked"

    def __init__(self, network, ranker: LearnedRanker, settings=None, item_table=None,
                 ease_table=None, als=None, tags=None) -> None:  # fmt: skip
        """``tags``: the tag table (or assignments) a ranker trained with tags needs."""
        if ranker.uses_tags and tags is None:
            raise ValueError("the ranker was trained with tag features: give its tag table")
        super().__init__(network, settings, item_table, ease_table, als,
                         tags if ranker.uses_tags else None)  # fmt: skip
        self.ranker = ranker

    def params(self) -> dict[str, object]:
        return {**self.settings.to_dict(), "ranker": self.ranker.to_dict()}

    def _ranked(self, stage1: _Stage1, known: bool) -> np.ndarray:
        out = np.full((len(stage1.candidates), self.train_.shape[1]), -np.inf, np.float32)
        for i, x in enumerate(list_features(stage1, known)):
            out[i, stage1.candidates[i].artists] = self.ranker.predict(x)
        return out

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._ranked(self.stage1_users(users), True)

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._ranked(self.stage1_histories(histories), False)
