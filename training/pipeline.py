"""Train-and-evaluate pipeline shared by the CLI, the benchmark and the tests."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.als_factors import AlsFactors
from core.console import step
from core.tag_profile import ArtistTags, TagAssignments
from training.config import DataConfig, TrainConfig, TuningConfig
from training.data import Interactions, filter_min_counts, load_dataset
from training.data.events import merge_events
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import BASELINES, DNNRecommender, Recommender, SeedRecommender
from training.models.als import fit_als_factors
from training.ranker import LearnedRanker, RankedRecommender
from training.ranker_tuning import tune_ranker
from training.split import Split, split_interactions
from training.two_stage import TwoStageRecommender, TwoStageSettings, tune_on

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A fitted model with the data and split it came from, and its offline metrics."""

    model: Recommender
    data: Interactions
    split: Split
    metrics: dict[str, float]
    new_user_metrics: dict[str, float]
    load_report: dict[str, object] = field(default_factory=dict)
    train_seconds: float = 0.0
    two_stage: TwoStageSettings | None = None  # the network's two-stage blend, tuned on val
    ranker: LearnedRanker | None = None  # the learned ranking stage, trained on val labels
    als: AlsFactors | None = None  # ALS artist factors on train_full, a ranker feature
    served_metrics: dict[str, object] | None = None  # the served default (``ranked``)'s
    tags: ArtistTags | None = None  # the tag table on train_full, when the ranker uses tags


def prepare_data(cfg: DataConfig, *, progress: bool = False) -> tuple[Interactions, dict]:
    """Load the configured source (and the event log's plays, with ``cfg.events``) and apply
    the minimum-count filters."""
    data, report = load_dataset(cfg.source, progress=progress, playlist_tags=cfg.playlist_tags)
    if cfg.events is not None:
        data, report["events"] = merge_events(data, Path(cfg.events))
    data = filter_min_counts(
        data, min_user_artists=cfg.min_user_artists, min_artist_users=cfg.min_artist_users
    )
    return data, report


def make_model(cfg: TrainConfig, *, progress: bool = False) -> Recommender:
    """Instantiate the configured model."""
    if cfg.model == "dnn":
        return DNNRecommender(cfg.dnn, progress=progress)
    if cfg.model == "seed":
        return SeedRecommender(cfg.seed_model, progress=progress)
    return BASELINES[cfg.model]()


def fit_model(model: Recommender, split: Split, *, progress: bool = False,
              tuning: TuningConfig | None = None,
              tags: TagAssignments | None = None) -> float:  # fmt: skip
    """Fit ``model`` on the split; returns seconds taken. The DNN early-stops on ``val``; then,
    with stage 1 fitted on ``train`` alone, its two-stage blend is tuned (``model.two_stage_``)
    and the learned ranker's settings chosen and trained (``model.ranker_``) on ``val``'s labels
    (``training/ranker_tuning.py``). With ``tags`` the ranker's candidates carry tag features
    (the table fitted on ``train``'s pairs; for serving on ``train_full``'s,
    ``model.tag_table_``). ``progress``: a
    spinner and a duration line for each step after the network's epochs."""
    t0 = time.perf_counter()
    if isinstance(model, DNNRecommender):
        model.fit(split.train, split.val)
        model.ranker_ = model.als_ = model.tag_table_ = None
        if split.val.nnz:
            with step("stage 1 on the training plays", progress):
                inner = TwoStageRecommender(model, tags=tags).fit(split.train)
            with step("two-stage blend tuned on the validation plays", progress):
                model.two_stage_ = tune_on(inner, split.val)
            with step("learned ranker's settings chosen and trained on validation users", progress):
                model.ranker_ = tune_ranker(inner, split.val, tuning)
            with step("ALS factors on training and validation plays", progress):
                model.als_ = fit_als_factors(split.train_full)  # beside the refitted tables
            if model.ranker_.uses_tags:
                model.tag_table_ = ArtistTags.fit(tags, split.train_full)
        model.use_known_plays(split.train_full)  # what the run saves and serving matches against
    else:
        with step(f"fitting {getattr(model, 'name', type(model).__name__)}", progress):
            model.fit(split.train_full)
    return time.perf_counter() - t0


def baseline_metrics(name: str, split: Split, k: int = 10) -> dict[str, dict[str, float]]:
    """A baseline (``BASELINES[name]``) fitted on ``train_full`` and evaluated like the model:
    ``{"known_users": ..., "new_users": ...}`` with its fitting seconds among the known's."""
    baseline = BASELINES[name]()
    t0 = time.perf_counter()
    baseline.fit(split.train_full)
    seconds = time.perf_counter() - t0
    return {"known_users": {**evaluate_known_users(baseline, split, k), "train_seconds": seconds},
            "new_users": evaluate_new_users(baseline, split, k)}  # fmt: skip


def train_and_evaluate(
    cfg: TrainConfig,
    data: Interactions | None = None,
    *,
    progress: bool = False,
) -> TrainResult:
    """Load (unless given) and split the data, fit the model, evaluate known and new users."""
    report: dict[str, object] = {}
    if data is None:
        data, report = prepare_data(cfg.data, progress=progress)
    split = split_interactions(data.matrix, cfg.split)
    log.info("split: %s", split.summary())
    model = make_model(cfg, progress=progress)
    seconds = fit_model(model, split, progress=progress, tuning=cfg.tuning, tags=data.tags)
    served = None
    if getattr(model, "ranker_", None) is not None:  # what the gateway's default mode serves
        with step("the served default (ranked) refitted and evaluated", progress):
            ranked = RankedRecommender(model, model.ranker_, model.two_stage_, als=model.als_,
                                       tags=model.tag_table_)  # fmt: skip
            ranked.fit(split.train_full)
            served = {"mode": "ranked", "known_users": evaluate_known_users(ranked, split, cfg.k),
                      "new_users": evaluate_new_users(ranked, split, cfg.k)}  # fmt: skip
    with step(f"{cfg.model} evaluated on the test plays", progress):
        metrics = evaluate_known_users(model, split, cfg.k)
        new_user_metrics = evaluate_new_users(model, split, cfg.k)
    return TrainResult(
        model=model,
        data=data,
        split=split,
        metrics=metrics,
        new_user_metrics=new_user_metrics,
        load_report=report,
        train_seconds=seconds,
        two_stage=getattr(model, "two_stage_", None),
        ranker=getattr(model, "ranker_", None),
        als=getattr(model, "als_", None),
        served_metrics=served,
        tags=getattr(model, "tag_table_", None),
    )
