"""The seed network trained two ways: the report's regression (``seed``) and for ranking (``dnn``).

Both use the same architecture (see :mod:`training.models.network`). Known users are scored with
their own embedding; new listeners through their most similar known users, whose scores are
summed weighted by similarity over the whole catalogue (the seed's new-user method).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Self

import keras
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from core.ranking import top_k_excluding
from core.similarity import SimilarityIndex
from training.metrics import ranking_metrics
from training.models.base import Recommender
from training.models.network import (
    ARTIST_INPUT,
    USER_INPUT,
    CatalogueScorer,
    build_network,
)
from training.models.objectives import SampledSoftmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedConfig:
    """The report's training: MSE on min-max normalised play counts, Adam, 10 epochs.

    The report does not state its batch size; Keras' default (32) costs ~40 s per 50k rows on
    two cores, so 256 is used (a speed choice, not a change of objective).
    """

    embedding_dim: int = 100
    hidden: int = 128
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    neighbours: int = 10
    seed: int = 0


@dataclass(frozen=True)
class DNNConfig:
    """Ranking objective: observed pairs against sampled unobserved artists, early stopping on
    validation NDCG@``eval_k``.

    ``loss="softmax"``: each positive against ``softmax_negatives`` shared uniform samples
    (sampled softmax, see :mod:`training.models.objectives`). ``loss="bce"``: binary
    cross-entropy on the positives and ``negatives`` sampled artists per positive.
    """

    embedding_dim: int = 100
    hidden: int = 128
    loss: str = "softmax"
    max_epochs: int = 15
    patience: int = 5
    batch_size: int = 256
    softmax_negatives: int = 512  # 256 -> 512 gained ~0.01 NDCG@10 on HetRec at 2x the time
    negatives: int = 4
    negative_power: float = 0.0  # 0 = uniform negatives; 0.75 = word2vec-style popularity
    learning_rate: float = 3e-3
    cosine_decay: bool = True  # learning rate follows a half cosine from its value to 0
    embedding_l2: float = 0.01  # softmax only: L2 on the embedding rows each batch touches
    neighbours: int = 10
    eval_k: int = 10
    steps_per_execution: int = 64  # fewer Python round trips per epoch
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("softmax", "bce"):
            raise ValueError(f"loss must be 'softmax' or 'bce', got {self.loss!r}")


class NetworkRecommender(Recommender):
    """Shared configuration and scoring for networks of the seed architecture."""

    def __init__(
        self, config: SeedConfig | DNNConfig | None = None, progress: bool = False
    ) -> None:
        self.config = config if config is not None else self.default_config()
        self.neighbours = self.config.neighbours
        self.progress = progress

    @staticmethod
    def default_config() -> SeedConfig | DNNConfig:
        return DNNConfig()

    def params(self) -> dict[str, object]:
        return asdict(self.config)

    def _build(self, shape: tuple[int, int]) -> keras.Model:
        cfg = self.config
        return build_network(
            shape[0], shape[1], embedding_dim=cfg.embedding_dim, hidden=cfg.hidden, seed=cfg.seed
        )

    def _prepare(self, model: keras.Model, train: sp.csr_matrix) -> None:
        self.model_ = model
        self.use_known_plays(train)
        self.scorer_ = CatalogueScorer.from_model(model)

    @classmethod
    def from_trained(
        cls, model: keras.Model, train: sp.csr_matrix, neighbours: int = 10
    ) -> NetworkRecommender:
        """Wrap an already trained network (e.g. loaded from a run) for scoring."""
        rec = cls()
        rec.neighbours = neighbours
        rec._prepare(model, train)
        return rec

    def fit(self, train: sp.csr_matrix) -> Self:
        raise NotImplementedError("use SeedRecommender or DNNRecommender to train a network")

    def use_known_plays(self, plays: sp.csr_matrix) -> None:
        """Set the known users' plays that new listeners are matched against (e.g. train plus
        validation pairs after early stopping), as serving will."""
        self.train_ = sp.csr_matrix(plays)
        self.index_ = SimilarityIndex(self.train_)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.scorer_.score_users(users)

    def similar_users(self, histories: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Top-``neighbours`` known users for each history, with cosine similarities."""
        return self.index_.query(sp.csr_matrix(histories), self.neighbours)

    def score_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        groups, weights = self.similar_users(histories)
        return self.scorer_.score_groups(groups, weights)

    def _record(self, rows: int, seconds: float, epochs: int) -> None:
        self.train_rows_ = rows
        self.train_seconds_ = seconds
        self.epochs_ = epochs
        self.rows_per_second_ = rows / seconds if seconds else 0.0


def _pairs(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coo = sp.coo_matrix(m)
    return coo.row.astype(np.int32), coo.col.astype(np.int32), coo.data.astype(np.float32)


def _inputs(users: np.ndarray, artists: np.ndarray) -> dict[str, np.ndarray]:
    return {USER_INPUT: users.reshape(-1, 1), ARTIST_INPUT: artists.reshape(-1, 1)}


class SeedRecommender(NetworkRecommender):
    """The report's model and objective, reproduced."""

    name = "seed"

    config: SeedConfig

    @staticmethod
    def default_config() -> SeedConfig:
        return SeedConfig()

    def fit(self, train: sp.csr_matrix) -> Self:
        cfg = self.config
        users, artists, counts = _pairs(train)
        lo, hi = float(counts.min()), float(counts.max())
        labels = (counts - lo) / (hi - lo) if hi > lo else np.ones_like(counts)
        model = self._build(train.shape)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
        t0 = time.perf_counter()
        for _ in tqdm(range(cfg.epochs), desc="seed", unit="epoch", disable=not self.progress):
            model.fit(
                _inputs(users, artists),
                labels,
                batch_size=cfg.batch_size,
                epochs=1,
                shuffle=True,
                verbose=0,
            )
        self._record(len(users) * cfg.epochs, time.perf_counter() - t0, cfg.epochs)
        self._prepare(model, train)
        return self


class DNNRecommender(NetworkRecommender):
    """The seed architecture trained for ranking with sampled negatives."""

    name = "dnn"

    config: DNNConfig

    @staticmethod
    def default_config() -> DNNConfig:
        return DNNConfig()

    def _negative_sampler(
        self, train: sp.csr_matrix, rng: np.random.Generator
    ) -> Callable[[int], np.ndarray]:
        cfg = self.config
        n_artists = train.shape[1]
        if cfg.negative_power <= 0:
            return lambda n: rng.integers(0, n_artists, n, dtype=np.int32)
        weights = np.diff(train.tocsc().indptr).astype(np.float64) ** cfg.negative_power
        cdf = np.cumsum(weights + 1e-12)
        cdf /= cdf[-1]
        return lambda n: np.minimum(np.searchsorted(cdf, rng.random(n)), n_artists - 1).astype(
            np.int32
        )

    def _learning_rate(self, epoch: int) -> float:
        cfg = self.config
        if not cfg.cosine_decay:
            return cfg.learning_rate
        return cfg.learning_rate * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / cfg.max_epochs))

    def _epoch_trainer(
        self,
        model: keras.Model,
        users: np.ndarray,
        artists: np.ndarray,
        sample: Callable[[int], np.ndarray],
        rng: np.random.Generator,
    ) -> Callable[[float], tuple[float, int]]:
        """A callable running one epoch of the configured objective at a given learning rate,
        returning (mean loss, rows seen)."""
        cfg = self.config
        if cfg.loss == "softmax":
            objective = SampledSoftmax(
                model, cfg.learning_rate, cfg.softmax_negatives, cfg.embedding_l2
            )

            def softmax_epoch(learning_rate: float) -> tuple[float, int]:
                objective.optimizer.learning_rate.assign(learning_rate)
                return objective.epoch(users, artists, cfg.batch_size, rng), len(users)

            return softmax_epoch

        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            steps_per_execution=cfg.steps_per_execution,
        )

        def bce_epoch(learning_rate: float) -> tuple[float, int]:
            model.optimizer.learning_rate.assign(learning_rate)
            neg_users = np.repeat(users, cfg.negatives)
            u = np.concatenate([users, neg_users])
            a = np.concatenate([artists, sample(len(neg_users))])
            y = np.concatenate([np.ones(len(users)), np.zeros(len(neg_users))]).astype(np.float32)
            fit = model.fit(
                _inputs(u, a), y, batch_size=cfg.batch_size, epochs=1, shuffle=True, verbose=0
            )
            return float(fit.history["loss"][-1]), len(y)

        return bce_epoch

    def _validation_ndcg(
        self, model: keras.Model, train: sp.csr_matrix, val: sp.csr_matrix
    ) -> float:
        users = np.flatnonzero(np.diff(val.indptr) > 0)
        scorer = CatalogueScorer.from_model(model)
        tops = []
        for s in range(0, len(users), 256):
            batch = users[s : s + 256]
            scores = scorer.score_users(batch)
            tops.append(top_k_excluding(scores, train[batch], self.config.eval_k))
        metrics = ranking_metrics(np.vstack(tops), val[users])
        return metrics[f"ndcg@{self.config.eval_k}"]

    def fit(self, train: sp.csr_matrix, val: sp.csr_matrix | None = None) -> Self:
        """Train on ``train``; with ``val``, stop when its NDCG stops improving and keep the best
        epoch's weights. Without ``val``, train for ``max_epochs``."""
        cfg = self.config
        train = sp.csr_matrix(train)
        rng = np.random.default_rng(cfg.seed)
        users, artists, _ = _pairs(train)
        sample = self._negative_sampler(train, rng)
        model = self._build(train.shape)
        epoch_step = self._epoch_trainer(model, users, artists, sample, rng)
        has_val = val is not None and val.nnz > 0
        best, best_weights, best_epoch, waited, rows = -1.0, None, 0, 0, 0
        self.history_: list[dict[str, float]] = []
        t0 = time.perf_counter()
        epochs = range(1, cfg.max_epochs + 1)
        bar = tqdm(epochs, desc="dnn", unit="epoch", disable=not self.progress)
        for epoch in bar:
            loss, seen = epoch_step(self._learning_rate(epoch))
            rows += seen
            entry = {"epoch": epoch, "loss": loss}
            if has_val:
                entry["val_ndcg"] = self._validation_ndcg(model, train, val)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", val_ndcg=f"{entry['val_ndcg']:.4f}")
                if entry["val_ndcg"] > best:
                    best, best_epoch, waited = entry["val_ndcg"], epoch, 0
                    best_weights = model.get_weights()
                else:
                    waited += 1
            self.history_.append(entry)
            log.debug("dnn epoch %s", entry)
            if has_val and waited >= cfg.patience:
                break
        if best_weights is not None:
            model.set_weights(best_weights)
        self.best_epoch_ = best_epoch or len(self.history_)
        self._record(rows, time.perf_counter() - t0, len(self.history_))
        self._prepare(model, train)
        return self
