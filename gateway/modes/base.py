"""What every scoring mode takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.candidates import Blend, Candidates
from gateway.inference import Inference, Tensor, tensor


@dataclass(frozen=True)
class ScoringRequest:
    """Rank artists for ``sum_j weights[j] * score(group[j], artist)`` on one model version,
    leaving out the artist columns in ``exclude``."""

    version: int
    n_artists: int
    group: np.ndarray  # known-user rows
    weights: np.ndarray
    k: int
    exclude: np.ndarray
    timeout_s: float
    candidates: Candidates | None = None  # stage 1, for modes that rank candidates
    blend: Blend | None = None  # how their stage-1 scores join the network's
    known: bool = False  # a known user (own embedding), not a listener given by history


@dataclass(frozen=True)
class Ranked:
    """Artist columns best first, with their scores."""

    artists: np.ndarray
    scores: np.ndarray


def candidate_inputs(r: ScoringRequest) -> list:
    """The group, its weights and the request's candidates (no padding) as the Triton inputs
    every candidate model takes."""
    artists = r.candidates.artists if r.candidates is not None else np.zeros(0, np.int64)
    return [
        tensor("users", r.group.reshape(1, -1).astype(np.int64), "INT64"),
        tensor("weights", r.weights.reshape(1, -1).astype(np.float32), "FP32"),
        tensor("candidates", artists.reshape(1, -1).astype(np.int64), "INT64"),
        Tensor("mask", "BOOL", (1, len(artists)), _all_true(len(artists))),
    ]


def _all_true(n: int) -> bytes:
    """An all-true BOOL tensor's bytes (every candidate is real: no padding is sent)."""
    global _TRUE
    if len(_TRUE) < n:
        _TRUE = b"\x01" * max(n, 2 * len(_TRUE))
    return _TRUE[:n]


_TRUE = b"\x01" * 1024


class ModeScorer(Protocol):
    """One scoring mode's way of building its Triton requests and ranking the answer."""

    def __init__(self, inference: Inference) -> None: ...

    async def top_k(self, request: ScoringRequest) -> Ranked: ...
