"""The export -> serving contract: model names, tensor signatures and the version layout.

Light on purpose (no TensorFlow): the gateway imports it. Export builds ``config.pbtxt`` from
these signatures and its parity gates run the ONNX files by these names, so a drift fails the
export instead of the first request.

Version directory ``<repository>/<model>/<version>/``: ``model.onnx``, ``model.py`` (Python
backend), ``manifest.json``, ``vocab/`` (``users.json``, ``artists.json``), ``plays.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAIR_SCORER = "pair_scorer"
CATALOGUE_SCORER = "catalogue_scorer"
SERVED_MODELS = (CATALOGUE_SCORER, PAIR_SCORER)  # one export = one version of each

# pair_scorer: the Keras network's own input/output names (training/models/network.py).
USER_INPUT, ARTIST_INPUT, SCORE_OUTPUT = "user", "artist", "score"
MANIFEST, VOCAB_DIR, PLAYS = "manifest.json", "vocab", "plays.npz"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model, as Triton's config.pbtxt needs it."""

    name: str
    dtype: str  # Triton data type, e.g. "TYPE_INT64"
    dims: tuple[int, ...]  # without the batch dimension


PAIR_INPUTS = (
    TensorSpec(USER_INPUT, "TYPE_INT32", (1,)),
    TensorSpec(ARTIST_INPUT, "TYPE_INT32", (1,)),
)
PAIR_OUTPUTS = (TensorSpec(SCORE_OUTPUT, "TYPE_FP32", (1,)),)
CATALOGUE_INPUTS = (
    TensorSpec("users", "TYPE_INT64", (-1,)),
    TensorSpec("weights", "TYPE_FP32", (-1,)),
    TensorSpec("k", "TYPE_INT64", (1,)),
)
CATALOGUE_OUTPUTS = (
    TensorSpec("artists", "TYPE_INT64", (-1,)),
    TensorSpec("scores", "TYPE_FP32", (-1,)),
)
# model -> (inputs, outputs, max_batch_size)
SIGNATURES = {
    PAIR_SCORER: (PAIR_INPUTS, PAIR_OUTPUTS, 65_536),
    CATALOGUE_SCORER: (CATALOGUE_INPUTS, CATALOGUE_OUTPUTS, 64),
}
# The embedded (CPU) configs cap the catalogue scorer's batches: its intermediate is
# [batch x group, 128 artists, 128] floats, which leaves the CPU cache beyond ~4 requests
# (measured per request for 10 x 17,632: 16 ms at batch 4, 30 ms at batch 8).
CPU_MAX_BATCH = {CATALOGUE_SCORER: 4}


def versions(repository: Path, name: str) -> list[int]:
    """Numbered versions present for one model, ascending."""
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
