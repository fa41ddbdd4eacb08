"""Export a network given as NumPy weights, without TensorFlow.

For hosts that have onnxruntime but no TensorFlow (the GPU check's machine): the same version
layout (:func:`export.staging.place`), the same ``catalogue_scorer`` and ``candidate_scorer``
builders as :func:`export.repository.export_network`, and a ``pair_scorer`` written directly as
an ONNX graph of the seed network (gather both embeddings, concatenate, Dense(128, relu),
Dense(1)) instead of converting the Keras model with tf2onnx; no SavedModel. The parity gates
compare onnxruntime with a NumPy forward pass of the weights (not with Keras).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

from core.als_factors import AlsFactors
from core.candidates import TwoStageSettings
from core.contract import (
    ALS_FACTORS,
    ARTIFACT_MODEL,
    ARTIST_INPUT,
    CANDIDATE_RANKER,
    CANDIDATE_SCORER,
    CANDIDATES,
    CATALOGUE,
    CATALOGUE_SCORER,
    EASE_NEIGHBOURS,
    PAIR,
    PAIR_SCORER,
    SCORE_OUTPUT,
    USER_INPUT,
)
from core.files import repository_lock
from core.ranker_features import GATEWAY_FEATURES
from export import gpu_scorers
from export.onnx_models import OPSET, candidate_scorer, catalogue_scorer
from export.ranker_model import candidate_ranker
from export.staging import ExportError, ExportResult, place


@dataclass(frozen=True)
class Weights:
    """The seed network's parameters (float32), as ``training.models.network.NetworkWeights``
    holds them; that module imports TensorFlow, this one does not."""

    user_embedding: np.ndarray  # (n_users, d)
    artist_embedding: np.ndarray  # (n_artists, d)
    hidden_kernel: np.ndarray  # (2d, h): rows [0, d) act on the user, [d, 2d) on the artist
    hidden_bias: np.ndarray  # (h,)
    output_kernel: np.ndarray  # (h, 1)
    output_bias: np.ndarray  # (1,)

    @property
    def dim(self) -> int:
        return self.user_embedding.shape[1]

    def user_half(self, users: np.ndarray) -> np.ndarray:
        return self.user_embedding[users] @ self.hidden_kernel[: self.dim]

    def artist_half(self) -> np.ndarray:
        return self.artist_embedding @ self.hidden_kernel[self.dim :] + self.hidden_bias

    def scorer_weights(self) -> gpu_scorers.ScorerWeights:
        """The split network the scorer graphs hold, computed here from the weights."""
        return gpu_scorers.ScorerWeights(
            self.user_half(np.arange(self.user_embedding.shape[0])).astype(np.float32),
            self.artist_half().astype(np.float32),
            self.output_kernel.reshape(-1).astype(np.float32),
            float(self.output_bias.reshape(-1)[0]),
        )

    def pair_scores(self, users: np.ndarray, artists: np.ndarray) -> np.ndarray:
        """The network's own forward pass, ``(pairs, 1)``."""
        x = np.concatenate([self.user_embedding[users], self.artist_embedding[artists]], axis=1)
        return np.maximum(x @ self.hidden_kernel + self.hidden_bias, 0) @ self.output_kernel + (
            self.output_bias
        )


def pair_scorer_from_weights(w: Weights) -> onnx.ModelProto:
    """The seed network as an ONNX graph: inputs ``user``/``artist`` (int32 ``[B, 1]``), output
    ``score`` (float32 ``[B, 1]``), as the tf2onnx conversion of the Keras model has them."""
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    init = [
        numpy_helper.from_array(f32(w.user_embedding), "user_embedding"),
        numpy_helper.from_array(f32(w.artist_embedding), "artist_embedding"),
        numpy_helper.from_array(f32(w.hidden_kernel), "hidden_kernel"),
        numpy_helper.from_array(f32(w.hidden_bias), "hidden_bias"),
        numpy_helper.from_array(f32(w.output_kernel), "output_kernel"),
        numpy_helper.from_array(f32(w.output_bias), "output_bias"),
    ]
    nodes = [
        helper.make_node("Gather", ["user_embedding", USER_INPUT], ["u3"], axis=0),  # [B, 1, d]
        helper.make_node("Gather", ["artist_embedding", ARTIST_INPUT], ["a3"], axis=0),
        helper.make_node("Flatten", ["u3"], ["u"], axis=1),  # [B, d]
        helper.make_node("Flatten", ["a3"], ["a"], axis=1),
        helper.make_node("Concat", ["u", "a"], ["x"], axis=1),  # [B, 2d]
        helper.make_node("MatMul", ["x", "hidden_kernel"], ["h0"]),
        helper.make_node("Add", ["h0", "hidden_bias"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "output_kernel"], ["s0"]),  # [B, 1]
        helper.make_node("Add", ["s0", "output_bias"], [SCORE_OUTPUT]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "pair_scorer",
        [
            helper.make_tensor_value_info(USER_INPUT, TensorProto.INT32, ["B", 1]),
            helper.make_tensor_value_info(ARTIST_INPUT, TensorProto.INT32, ["B", 1]),
        ],
        [helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["B", 1])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _session(proto: onnx.ModelProto):  # onnxruntime only when exporting
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _gate(name: str, diff: float, tolerance: float, ok: bool = True) -> None:
    if not diff <= tolerance or not ok:
        raise ExportError(f"{name} disagrees with the weights' forward pass: score diff "
                          f"{diff:.3g} (tolerance {tolerance:g})")  # fmt: skip


def check_pairs(w: Weights, proto: onnx.ModelProto, pairs: int = 10_000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, w.user_embedding.shape[0], (pairs, 1), dtype=np.int32)
    artists = rng.integers(0, w.artist_embedding.shape[0], (pairs, 1), dtype=np.int32)
    got = _session(proto).run(None, {USER_INPUT: users, ARTIST_INPUT: artists})[0]
    diff = float(np.max(np.abs(got - w.pair_scores(users[:, 0], artists[:, 0]))))
    _gate(PAIR_SCORER, diff, PAIR.parity_tolerance)
    return {"pairs": pairs, "max_abs_diff": diff, "groups": 0, "topk_agreement": 1.0}


def check_groups(w: Weights, proto: onnx.ModelProto, name: str, *, groups: int = 8,
                 group_size: int = 10, k: int = 50, candidates: int = 300,
                 seed: int = 0) -> dict:  # fmt: skip
    """``catalogue_scorer`` / ``candidate_scorer`` against the NumPy scorer built from the
    weights themselves (not from the graph's initializers)."""
    reference = gpu_scorers.GroupScorer(w.scorer_weights(), gpu_scorers.array_module("numpy"))
    rng = np.random.default_rng(seed)
    users = rng.integers(0, reference.n_users, (groups, group_size))
    weights = rng.random((groups, group_size)).astype(np.float32)
    session = _session(proto)
    if name == CATALOGUE_SCORER:
        k = min(k, reference.n_artists)
        feed = {"users": users, "weights": weights, "k": np.full((groups, 1), k, np.int64)}
        artists, scores = session.run(["artists", "scores"], feed)
        full = reference.scores(users, weights)
        diff = float(np.max(np.abs(np.take_along_axis(full, artists, 1) - scores)))
        kth = np.sort(full, axis=1)[:, -k][:, None]
        agreement = float(np.mean(np.take_along_axis(full, artists, 1) >= kth - 1e-3))
        _gate(name, diff, CATALOGUE.parity_tolerance, agreement == 1.0)
        return {"pairs": groups * group_size * reference.n_artists, "max_abs_diff": diff,
                "groups": groups, "topk_agreement": agreement}  # fmt: skip
    chosen = rng.integers(0, reference.n_artists, (groups, candidates))
    mask = rng.random((groups, candidates)) < 0.9
    feed = {"users": users, "weights": weights, "candidates": chosen, "mask": mask}
    if name == CANDIDATE_RANKER:  # without trees it ranks by the network: features unused
        feed["features"] = np.zeros((groups, candidates, len(GATEWAY_FEATURES)), np.float32)
    (scores,) = session.run(["scores"], feed)
    expected = reference.candidates(users, weights, chosen, mask)
    diff = float(np.max(np.abs(expected[mask] - scores[mask])))
    _gate(name, diff, CANDIDATES.parity_tolerance, bool(np.all(np.isneginf(scores[~mask]))))
    return {"pairs": int(mask.sum()) * group_size, "max_abs_diff": diff, "groups": groups,
            "topk_agreement": 1.0}  # fmt: skip


def export_weights(
    weights: Weights,
    repository: Path | str,
    *,
    vocab_dir: Path,
    plays: sp.csr_matrix,
    provenance: dict,
    two_stage: TwoStageSettings | None = None,
) -> ExportResult:
    """Export NumPy weights with a vocabulary and known plays as the next version of every
    model, after the parity gates; the repository is untouched on any failure."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    pair = pair_scorer_from_weights(weights)
    catalogue, candidates = catalogue_scorer(weights), candidate_scorer(weights)
    ranker = candidate_ranker(weights, None)  # no learned ranker here: the network ranks
    built = {
        CATALOGUE_SCORER: (catalogue, check_groups(weights, catalogue, CATALOGUE_SCORER)),
        CANDIDATE_SCORER: (candidates, check_groups(weights, candidates, CANDIDATE_SCORER)),
        CANDIDATE_RANKER: (ranker, check_groups(weights, ranker, CANDIDATE_RANKER)),
        PAIR_SCORER: (pair, check_pairs(weights, pair)),
    }
    two_stage = two_stage or TwoStageSettings()
    provenance = {**provenance, "two_stage": two_stage.to_dict(),
                  "exported_by": "export.from_weights (no TensorFlow, no SavedModel)"}  # fmt: skip
    table = two_stage.candidates.item_table(plays)
    ease = two_stage.candidates.ease_table(plays)

    def tables(staging: Path, version: int) -> None:
        """The EASE table, and no ALS factors (the network alone ranks: scores 0)."""
        artifacts = staging / ARTIFACT_MODEL / str(version)
        sp.save_npz(artifacts / EASE_NEIGHBOURS, ease, compressed=False)
        AlsFactors.empty(plays.shape[1]).save(artifacts / ALS_FACTORS)

    with repository_lock(repository):
        return place(repository, built, vocab_dir, plays, provenance, table, tables)
