"""Helpers shared by the benchmarks: latency summaries and networks with random weights."""

from __future__ import annotations

import keras
import numpy as np

from training.models.network import build_network


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
    model = build_network(n_users, n_artists, seed=seed)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
    return model
