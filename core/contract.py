"""The export -> serving contract: model names, tensor signatures, the version layout, and one
spec per Triton model.

Export builds ``config.pbtxt`` from these specs and gates each ONNX file on the spec's parity
tolerance; deploy smoke-runs each version with the spec's example feed; the gateway calls the
models by these tensor names. A drift fails the export instead of the first request.

Version directory ``<repository>/<model>/<version>/``: ``model.onnx``, ``model.py`` (Python
backend), ``manifest.json``, ``vocab/`` (``users.json``, ``artists.json``), ``plays.npz``; the
versions of :data:`ARTIFACT_MODEL` (the ones the gateway reads) also ``item_neighbours.npz``,
``ease_neighbours.npz`` (stage 1's tables) and ``als_factors.npz`` (a ranker feature).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.ranker_features import GATEWAY_FEATURES

PAIR_SCORER = "pair_scorer"
CATALOGUE_SCORER = "catalogue_scorer"
CANDIDATE_SCORER = "candidate_scorer"
CANDIDATE_RANKER = "candidate_ranker"
ARTIFACT_MODEL = CATALOGUE_SCORER  # whose version directories also carry the item-item table

# pair_scorer: the Keras network's own input/output names (training/models/network.py).
USER_INPUT, ARTIST_INPUT, SCORE_OUTPUT = "user", "artist", "score"
MAX_PLAYS = 1e9  # one listener's plays of one artist, after summing: more says nothing more
MANIFEST, VOCAB_DIR, PLAYS, ONNX_FILE, PYTHON_MODEL_FILE = (
    "manifest.json", "vocab", "plays.npz", "model.onnx", "model.py",
)  # fmt: skip
ITEM_NEIGHBOURS = "item_neighbours.npz"  # stage-1 item-item table, in ARTIFACT_MODEL's versions
EASE_NEIGHBOURS = "ease_neighbours.npz"  # stage-1 pruned EASE table, in ARTIFACT_MODEL's versions
ALS_FACTORS = "als_factors.npz"  # ALS artist factors (a ranker feature), in ARTIFACT_MODEL's
ARTIST_TAGS = "artist_tags.npz"  # artist tag table (core.tag_profile), where the ranker uses tags
VERSION_FILES = (ONNX_FILE, PYTHON_MODEL_FILE, MANIFEST, PLAYS, f"{VOCAB_DIR}/users.json",
                 f"{VOCAB_DIR}/artists.json")  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model, as Triton's config.pbtxt needs it."""

    name: str
    dtype: str  # Triton data type, e.g. "TYPE_INT64"
    dims: tuple[int, ...]  # without the batch dimension
    indexes: str | None = None  # "users" / "artists": values are rows of that vocabulary


@dataclass(frozen=True)
class ModelSpec:
    """Everything export, parity, deploy and the Triton configs need to know about one model."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # production (GPU) dynamic batching limit
    cpu_max_batch_size: int  # the embedded CPU config's limit
    parity_tolerance: float  # max |ONNX - Keras| export accepts (and deploy re-checks)
    example_feed: Callable[[], dict[str, np.ndarray]]  # a small valid request, for smoke runs

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]


def _pair_feed() -> dict[str, np.ndarray]:
    return {USER_INPUT: np.zeros((4, 1), np.int32), ARTIST_INPUT: np.zeros((4, 1), np.int32)}


def _catalogue_feed() -> dict[str, np.ndarray]:
    return {"users": np.zeros((1, 2), np.int64), "weights": np.ones((1, 2), np.float32),
            "k": np.array([[3]], np.int64)}  # fmt: skip


def _candidate_feed() -> dict[str, np.ndarray]:
    return {"users": np.zeros((1, 2), np.int64), "weights": np.ones((1, 2), np.float32),
            "candidates": np.zeros((1, 3), np.int64), "mask": np.ones((1, 3), bool)}  # fmt: skip


PAIR = ModelSpec(
    PAIR_SCORER,
    inputs=(
        TensorSpec(USER_INPUT, "TYPE_INT32", (1,), "users"),
        TensorSpec(ARTIST_INPUT, "TYPE_INT32", (1,), "artists"),
    ),  # fmt: skip
    outputs=(TensorSpec(SCORE_OUTPUT, "TYPE_FP32", (1,)),),
    max_batch_size=65_536,
    cpu_max_batch_size=65_536,
    parity_tolerance=1e-4,
    example_feed=_pair_feed,
)
CATALOGUE = ModelSpec(
    CATALOGUE_SCORER,
    inputs=(
        TensorSpec("users", "TYPE_INT64", (-1,), "users"),
        TensorSpec("weights", "TYPE_FP32", (-1,)),
        TensorSpec("k", "TYPE_INT64", (1,)),
    ),  # fmt: skip
    outputs=(TensorSpec("artists", "TYPE_INT64", (-1,)), TensorSpec("scores", "TYPE_FP32", (-1,))),
    max_batch_size=64,
    # Its intermediate is [batch x group, 128 artists, 128] floats, which leaves the CPU cache
    # beyond ~4 requests (measured per request for 10 x 17,632: 16 ms at batch 4, 30 at 8).
    cpu_max_batch_size=4,
    parity_tolerance=1e-3,  # scores summed over a weighted group, then top-K
    example_feed=_catalogue_feed,
)
CANDIDATES = ModelSpec(
    CANDIDATE_SCORER,
    inputs=(
        TensorSpec("users", "TYPE_INT64", (-1,), "users"),
        TensorSpec("weights", "TYPE_FP32", (-1,)),
        TensorSpec("candidates", "TYPE_INT64", (-1,), "artists"),
        TensorSpec("mask", "TYPE_BOOL", (-1,)),  # False: a padding slot, scored -inf
    ),  # fmt: skip
    outputs=(TensorSpec("scores", "TYPE_FP32", (-1,)),),
    max_batch_size=64,
    cpu_max_batch_size=8,  # [batch, group, candidates, 128] floats: 8 x 10 x 500 is 20 MB
    parity_tolerance=1e-3,  # scores summed over a weighted group
    example_feed=_candidate_feed,
)


def _ranker_feed() -> dict[str, np.ndarray]:
    return {**_candidate_feed(), "features": np.zeros((1, 3, len(GATEWAY_FEATURES)), np.float32)}


RANKER = ModelSpec(
    CANDIDATE_RANKER,
    inputs=(
        *CANDIDATES.inputs,
        # core.ranker_features: GATEWAY_FEATURES, then TAG_FEATURES where a version's ranker
        # names them (its manifest's ranker.features): the width is per version
        TensorSpec("features", "TYPE_FP32", (-1, -1)),
    ),  # fmt: skip
    outputs=(TensorSpec("scores", "TYPE_FP32", (-1,)),),
    max_batch_size=64,
    cpu_max_batch_size=8,
    # Scores of trees: a network score within float error of a split threshold can take the
    # other branch, so parity checks the rankings' agreement as well (export/parity.py).
    parity_tolerance=1e-3,
    example_feed=_ranker_feed,
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (CATALOGUE, CANDIDATES, RANKER, PAIR)}
SERVED_MODELS = tuple(MODELS)  # one export = one version of each


def versions(repository: Path, name: str) -> list[int]:
    """Numbered versions present for one model, ascending."""
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def common_versions(repository: Path) -> set[int]:
    """Versions present on disk for every served model (what Triton may be asked about)."""
    return set.intersection(*(set(versions(repository, m)) for m in SERVED_MODELS))
