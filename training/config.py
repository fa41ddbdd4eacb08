"""Typed configuration of a training run: one place, stored as ``config.json`` in every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.paths import DEFAULT_GENERATED_CSV
from training.data.generator import GeneratorConfig
from training.models import MODEL_NAMES, DNNConfig, SeedConfig
from training.split import SplitConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from and which sparse users/artists are dropped."""

    source: str = str(DEFAULT_GENERATED_CSV)  # "[hetrec:|spotify:|audioscrobbler:]path"
    min_user_artists: int = 1
    min_artist_users: int = 1
    # The gateway's event log (``--events DIR``): its PLAYED events are added as plays
    # (training/data/events.py) before the filters and the split; None: the base data alone
    events: str | None = None
    # The Spotify format's playlist names as artist tags (training/data/playlist_tags.py);
    # off by default: the generated data's names are random, and the real file's value is
    # unmeasured here (its 500-row sample is too small to train on)
    playlist_tags: bool = False

    def __post_init__(self) -> None:
        if self.min_user_artists < 1 or self.min_artist_users < 1:
            raise ValueError("min_user_artists and min_artist_users must be >= 1")


@dataclass(frozen=True)
class TuningConfig:
    """What the validation users choose between (``training/ranker_tuning.py``): the names of
    the ranker settings tried (``candidate_settings``) and the share of validation users held
    out of each one's fit to judge it. The demo tries the base alone (its validation figure
    is still recorded); ``train`` and the benchmarks try them all. A setting that drops
    features a run lacks (``without_tag_features`` on data without tags) is skipped, and the
    record says so."""

    settings: tuple[str, ...] = (
        "base", "lambdarank", "leaves_31", "min_rows_per_leaf_50", "learning_rate_0.05",
        "without_network_features", "without_tag_features",
    )  # fmt: skip
    choose_share: float = 0.25

    def __post_init__(self) -> None:
        if not self.settings or len(set(self.settings)) != len(self.settings):
            raise ValueError("tuning.settings must name at least one setting, each once")
        if not 0.0 < self.choose_share < 1.0:
            raise ValueError("tuning.choose_share must lie between 0 and 1")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result."""

    model: str = "dnn"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    dnn: DNNConfig = field(default_factory=DNNConfig)
    seed_model: SeedConfig = field(default_factory=SeedConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    k: int = 10

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            choices = ", ".join(MODEL_NAMES)
            raise ValueError(f"unknown model {self.model!r}; choose one of {choices}")
        if not 1 <= self.k <= 500:
            raise ValueError(f"k must be in 1..500, got {self.k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        return cls(
            model=raw["model"],
            data=DataConfig(**raw["data"]),
            split=SplitConfig(**raw["split"]),
            dnn=DNNConfig(**raw["dnn"]),
            seed_model=SeedConfig(**raw["seed_model"]),
            generator=GeneratorConfig(**raw["generator"]),
            tuning=_tuning(raw.get("tuning")),  # absent in runs saved before it existed
            k=raw["k"],
        )

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(path.read_text()))


def _tuning(raw: dict[str, Any] | None) -> TuningConfig:
    if raw is None:
        return TuningConfig()
    return TuningConfig(**{**raw, "settings": tuple(raw["settings"])})
