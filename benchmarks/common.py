"""Helpers shared by the benchmarks: latency summaries, networks with random weights, and new
listeners' histories driven through the gateway."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from client import AsyncRecommenderClient

if TYPE_CHECKING:  # TensorFlow only when a network is built (benchmarks.gpu runs without it)
    import keras


def summary(latencies_s: list[float] | np.ndarray, wall_s: float, concurrency: int) -> dict:
    """``{"concurrency", "requests", "rps", "p50_ms", "p99_ms"}`` of one measured run."""
    lat = np.asarray(latencies_s)
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "rps": len(lat) / wall_s,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def random_network(n_users: int, n_artists: int, seed: int = 0) -> keras.Model:
    """The seed architecture with N(0, 0.1) weights: the speed of a trained one, no training."""
    from training.models.network import build_network

    model = build_network(n_users, n_artists, seed=seed)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
    return model


def synthetic_ranker(seed: int = 0):
    """A learned ranker of the production size (``RankerConfig``'s trees and leaves) fitted on
    synthetic feature rows: the cost per request of a trained one, without training data."""
    import lightgbm as lgb

    from core.ranker_features import RANKER_FEATURES
    from training.ranker import LearnedRanker, RankerConfig

    config = RankerConfig(min_child_samples=20)
    rng = np.random.default_rng(seed)
    lists, width = 400, 200
    x = rng.normal(size=(lists * width, len(RANKER_FEATURES))).astype(np.float32)
    signal = x @ rng.normal(size=len(RANKER_FEATURES)) + rng.normal(size=len(x))
    y = (signal > np.quantile(signal, 0.97)).astype(np.float32)
    params = {"objective": config.objective, "learning_rate": config.learning_rate,
              "num_leaves": config.leaves, "min_child_samples": config.min_child_samples,
              "verbose": -1, "num_threads": 2, "seed": seed}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(x, y, group=[width] * lists), config.trees)
    return LearnedRanker(booster, config, {"synthetic": True})


def history_requests(plays: sp.csr_matrix, names: Sequence[str], n: int, length: int = 10,
                     seed: int = 0) -> list[list[str]]:  # fmt: skip
    """``n`` new-listener histories: ``length`` artist names of a random listener each."""
    rng = np.random.default_rng(seed)
    users = rng.choice(np.flatnonzero(np.diff(plays.indptr) >= length), n)
    out = []
    for u in users:
        row = plays.indices[plays.indptr[u] : plays.indptr[u + 1]]
        out.append([names[a] for a in rng.choice(row, length, replace=False)])
    return out


async def drive(address: str, requests: list[list[str]], concurrency: int, mode: str,
                k: int = 10) -> dict:  # fmt: skip
    """Send every history as a Recommend in ``mode`` from ``concurrency`` workers; returns
    :func:`summary` (after one warm-up request)."""
    async with AsyncRecommenderClient(address, timeout_s=300) as client:
        await client.recommend(artists=requests[0], k=k, scoring=mode)  # warm up
        queue = list(requests)
        latencies: list[float] = []

        async def worker() -> None:
            while queue:
                history = queue.pop()
                t0 = time.perf_counter()
                await client.recommend(artists=history, k=k, scoring=mode)
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return summary(latencies, time.perf_counter() - t0, concurrency)


def benchmark_arguments(doc: str, results: Path, quick: str,
                        argv: list[str] | None = None) -> argparse.Namespace:  # fmt: skip
    """The flags every load benchmark takes: ``--quick`` (``quick`` says what it cuts) and
    ``-o/--out`` (default ``results``)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("-o", "--out", type=Path, default=results)
    return parser.parse_args(argv)
