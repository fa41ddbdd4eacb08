"""Recommenders: baselines and the seed network trained two ways."""

from __future__ import annotations

from training.models.als import ALS
from training.models.base import Recommender
from training.models.dnn import DNNConfig, DNNRecommender, SeedConfig, SeedRecommender
from training.models.ease import EASE
from training.models.neighbors import ItemKNN, UserKNN
from training.models.popularity import Popularity

BASELINES: dict[str, type[Recommender]] = {
    "popularity": Popularity,
    "user_knn": UserKNN,
    "item_knn": ItemKNN,
    "ease": EASE,
    "als": ALS,
}
NETWORKS = ("seed", "dnn")
MODEL_NAMES = (*BASELINES, *NETWORKS)

__all__ = [
    "ALS",
    "BASELINES",
    "EASE",
    "MODEL_NAMES",
    "NETWORKS",
    "DNNConfig",
    "DNNRecommender",
    "ItemKNN",
    "Popularity",
    "Recommender",
    "SeedConfig",
    "SeedRecommender",
    "UserKNN",
]
