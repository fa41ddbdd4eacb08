"""Run directories: everything a trained model needs downstream, written atomically.

Layout (``RUN_LAYOUT_VERSION`` = 1)::

    <run>/config.json        TrainConfig used
    <run>/model.keras        the network (seed/dnn runs only)
    <run>/vocab/users.json   user index -> user id
    <run>/vocab/artists.json artist index -> {ids, names}
    <run>/plays.npz          users x artists play counts the model was fitted on (CSR)
    <run>/metrics.json       offline metrics, training time and throughput
    <run>/data.json          data summary, fingerprint and load report
    <run>/two_stage.json     candidate settings and blend weights tuned on validation (dnn/seed)
    <run>/ranker.txt         the learned ranker (LightGBM text), ranker.json its settings (dnn)
    <run>/als_factors.npz    ALS artist factors fitted on plays.npz (a ranker feature; dnn)
    <run>/artist_tags.npz    the artist tag table on plays.npz (when the ranker uses tags)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import scipy.sparse as sp

from core.als_factors import AlsFactors
from core.candidates import TwoStageSettings
from core.contract import ARTIST_TAGS
from core.tag_profile import ArtistTags
from training.config import TrainConfig
from training.data import Vocabulary
from training.models.dnn import NetworkRecommender
from training.pipeline import TrainResult
from training.ranker import LearnedRanker

RUN_LAYOUT_VERSION = 1
TWO_STAGE = "two_stage.json"
RANKER = "ranker.txt"
ALS = "als_factors.npz"


def result_metrics(result: TrainResult) -> dict[str, Any]:
    """The metrics block stored with a run (and reused by the benchmark)."""
    model = result.model
    out: dict[str, Any] = {
        "known_users": result.metrics,
        "new_users": result.new_user_metrics,
        "train_seconds": result.train_seconds,
        "params": model.params(),
    }
    if result.served_metrics is not None:  # the served default's, which deploy's gate reads
        out["served"] = result.served_metrics
    if isinstance(model, NetworkRecommender):
        out.update(
            train_rows=model.train_rows_,
            epochs=model.epochs_,
            rows_per_second=model.rows_per_second_,
        )
        out["history"] = getattr(model, "history_", [])
    return out


def save_run(run_dir: Path, cfg: TrainConfig, result: TrainResult) -> Path:
    """Write a run directory; it appears complete or not at all. Refuses to overwrite."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise FileExistsError(f"run directory already exists: {run_dir}")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        cfg.save(tmp / "config.json")
        result.data.vocab.save(tmp / "vocab")
        sp.save_npz(tmp / "plays.npz", result.split.train_full)
        if isinstance(result.model, NetworkRecommender):
            result.model.model_.save(tmp / "model.keras")
        (tmp / "metrics.json").write_text(json.dumps(result_metrics(result), indent=2))
        if result.two_stage is not None:
            (tmp / TWO_STAGE).write_text(json.dumps(result.two_stage.to_dict(), indent=2))
        if result.ranker is not None:
            result.ranker.save(tmp / RANKER)
        if result.als is not None:
            result.als.save(tmp / ALS)
        if result.tags is not None:
            result.tags.save(tmp / ARTIST_TAGS)
        data_info = {
            "layout_version": RUN_LAYOUT_VERSION,
            "summary": result.data.summary(),
            "fingerprint": result.data.fingerprint(),
            "load_report": result.load_report,
            "split": result.split.summary(),
        }
        (tmp / "data.json").write_text(json.dumps(data_info, indent=2))
        tmp.rename(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


@dataclass(frozen=True)
class Run:
    """A run directory read back."""

    path: Path
    config: TrainConfig
    vocab: Vocabulary
    plays: sp.csr_matrix
    metrics: dict[str, Any]
    data_info: dict[str, Any]
    two_stage: TwoStageSettings | None = None  # absent in runs older than two-stage serving
    ranker: LearnedRanker | None = None  # absent without validation plays, or in older runs
    als: AlsFactors | None = None  # absent in runs older than the learned ranker
    tags: ArtistTags | None = None  # only where the data had tags and the ranker uses them

    def load_model(self) -> keras.Model:
        """The trained network (seed/dnn runs)."""
        model_path = self.path / "model.keras"
        if not model_path.is_file():
            raise FileNotFoundError(
                f"{self.path} has no model.keras: only seed/dnn runs save a network"
            )
        return keras.saving.load_model(model_path)


def load_run(run_dir: Path | str) -> Run:
    """Read a run directory written by :func:`save_run`."""
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {path}")
    return Run(
        path=path,
        config=TrainConfig.load(path / "config.json"),
        vocab=Vocabulary.load(path / "vocab"),
        plays=sp.csr_matrix(sp.load_npz(path / "plays.npz")),
        metrics=json.loads((path / "metrics.json").read_text()),
        data_info=json.loads((path / "data.json").read_text()),
        two_stage=TwoStageSettings.from_dict(json.loads((path / TWO_STAGE).read_text()))
        if (path / TWO_STAGE).is_file()
        else None,
        ranker=LearnedRanker.load(path / RANKER) if (path / RANKER).is_file() else None,
        als=AlsFactors.load(path / ALS) if (path / ALS).is_file() else None,
        tags=ArtistTags.load(path / ARTIST_TAGS) if (path / ARTIST_TAGS).is_file() else None,
    )
