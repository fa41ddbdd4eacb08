"""Parity gates: an exported model must answer as the Keras network does, or export fails."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import onnx
import onnxruntime as ort

from core.contract import ARTIST_INPUT, CANDIDATES, CATALOGUE, PAIR, RANKER, USER_INPUT
from core.errors import MusicrecError
from core.ranker_features import GATEWAY_FEATURES, NETWORK_FEATURES, network_features
from training.models.network import CatalogueScorer
from training.ranker import LearnedRanker


class ParityError(MusicrecError):
    """The exported model disagrees with the trained network."""


@dataclass(frozen=True)
class ParityReport:
    pairs: int
    max_abs_diff: float
    groups: int = 0
    topk_agreement: float = 1.0


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime CPU session for an in-memory model."""
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def check_pair_scorer(
    keras_model: keras.Model,
    onnx_model: onnx.ModelProto,
    *,
    pairs: int = 10_000,
    tolerance: float = PAIR.parity_tolerance,
    seed: int = 0,
) -> ParityReport:
    """Compare Keras and onnxruntime on ``pairs`` random (user, artist) pairs."""
    n_users = keras_model.get_layer("user_embedding").input_dim
    n_artists = keras_model.get_layer("artist_embedding").input_dim
    rng = np.random.default_rng(seed)
    feed = {
        USER_INPUT: rng.integers(0, n_users, (pairs, 1), dtype=np.int32),
        ARTIST_INPUT: rng.integers(0, n_artists, (pairs, 1), dtype=np.int32),
    }
    expected = keras_model.predict(feed, batch_size=4096, verbose=0)
    got = session(onnx_model).run(None, feed)[0]
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(f"pair_scorer differs from Keras by {diff:.3g} > {tolerance:g}")
    return ParityReport(pairs=pairs, max_abs_diff=diff)


def check_catalogue_scorer(
    keras_model: keras.Model,
    onnx_model: onnx.ModelProto,
    *,
    groups: int = 8,
    group_size: int = 10,
    k: int = 50,
    tolerance: float = CATALOGUE.parity_tolerance,
    seed: int = 0,
) -> ParityReport:
    """The top-K of the catalogue model must be the pairwise network's top-K, scores included."""
    scorer = CatalogueScorer.from_model(keras_model)
    n_users = scorer.weights.user_embedding.shape[0]
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, (groups, group_size))
    weights = rng.random((groups, group_size)).astype(np.float32)
    k = min(k, scorer.artist_half.shape[0])
    artists, scores = session(onnx_model).run(
        ["artists", "scores"],
        {"users": users.astype(np.int64), "weights": weights,
         "k": np.full((groups, 1), k, np.int64)},
    )  # fmt: skip
    reference = scorer.score_groups(users, weights)
    expected = np.take_along_axis(reference, artists, axis=1)
    diff = float(np.max(np.abs(expected - scores)))
    kth = np.sort(reference, axis=1)[:, -k][:, None]
    in_top = float(np.mean(np.take_along_axis(reference, artists, axis=1) >= kth - tolerance))
    if not diff <= tolerance or in_top < 1.0:
        raise ParityError(
            f"catalogue_scorer disagrees with the network: score diff {diff:.3g}, "
            f"{in_top:.1%} of its top-{k} in the pairwise top-{k}"
        )
    return ParityReport(pairs=groups * group_size * reference.shape[1], max_abs_diff=diff,
                        groups=groups, topk_agreement=in_top)  # fmt: skip


def _candidate_feed(scorer: CatalogueScorer, groups: int, group_size: int, candidates: int,
                    seed: int) -> tuple[dict[str, np.ndarray], np.random.Generator]:  # fmt: skip
    """Random groups of users, weights, candidates and a mask (10% padding) for a candidate
    model, and the generator for anything else the check draws."""
    n_users, n_artists = scorer.weights.user_embedding.shape[0], scorer.artist_half.shape[0]
    rng = np.random.default_rng(seed)
    feed = {"users": rng.integers(0, n_users, (groups, group_size)).astype(np.int64),
            "weights": rng.random((groups, group_size)).astype(np.float32),
            "candidates": rng.integers(0, n_artists, (groups, candidates)).astype(np.int64),
            "mask": rng.random((groups, candidates)) < 0.9}  # fmt: skip
    return feed, rng


def check_candidate_scorer(
    keras_model: keras.Model,
    onnx_model: onnx.ModelProto,
    *,
    groups: int = 8,
    group_size: int = 10,
    candidates: int = 300,
    tolerance: float = CANDIDATES.parity_tolerance,
    seed: int = 0,
) -> ParityReport:
    """The candidate model's scores must be the pairwise network's weighted group sums, and
    masked slots ``-inf``."""
    scorer = CatalogueScorer.from_model(keras_model)
    feed, _ = _candidate_feed(scorer, groups, group_size, candidates, seed)
    users, weights, chosen, mask = (feed[k] for k in ("users", "weights", "candidates", "mask"))
    (scores,) = session(onnx_model).run(["scores"], feed)
    expected = np.take_along_axis(scorer.score_groups(users, weights), chosen, axis=1)
    diff = float(np.max(np.abs(expected[mask] - scores[mask])))
    if not diff <= tolerance or not np.all(np.isneginf(scores[~mask])):
        raise ParityError(f"candidate_scorer disagrees with the network: score diff {diff:.3g}"
                          " or a masked slot not -inf")  # fmt: skip
    return ParityReport(pairs=int(mask.sum()) * group_size, max_abs_diff=diff, groups=groups)


RANKER_MIN_CLOSE = 0.99  # share of scores within tolerance (the rest: a split flipped by float)
RANKER_MIN_TOP10 = 0.9  # mean overlap of each group's top 10


def check_candidate_ranker(
    keras_model: keras.Model,
    onnx_model: onnx.ModelProto,
    ranker: LearnedRanker | None,
    *,
    groups: int = 8,
    group_size: int = 10,
    candidates: int = 300,
    tolerance: float = RANKER.parity_tolerance,
    seed: int = 0,
) -> ParityReport:
    """``candidate_ranker`` must score as the network followed by the offline ranker (the
    network alone without one), over each group's unmasked candidates, and masked slots
    ``-inf``. A network score within float error of a split threshold may take the other
    branch, so :data:`RANKER_MIN_CLOSE` of the scores must match within ``tolerance`` and the
    top 10 agree by :data:`RANKER_MIN_TOP10`."""
    scorer = CatalogueScorer.from_model(keras_model)
    feed, rng = _candidate_feed(scorer, groups, group_size, candidates, seed)
    users, weights, chosen, mask = (feed[k] for k in ("users", "weights", "candidates", "mask"))
    width = len(ranker.features) - len(NETWORK_FEATURES) if ranker else len(GATEWAY_FEATURES)
    features = rng.normal(size=(groups, candidates, width)).astype(np.float32)
    (scores,) = session(onnx_model).run(["scores"], {**feed, "features": features})
    dnn = np.take_along_axis(scorer.score_groups(users, weights), chosen, axis=1)
    close, overlap, diffs = [], [], []
    for g in range(groups):
        m = mask[g]
        rows = np.hstack([network_features(dnn[g, m]), features[g, m]])
        expected = ranker.predict(rows) if ranker is not None else dnn[g, m]
        got = scores[g, m]
        diffs.append(np.abs(expected - got))
        close.append(diffs[-1] <= tolerance)
        top = lambda v: set(np.argsort(-v, kind="stable")[:10].tolist())  # noqa: E731
        overlap.append(len(top(expected) & top(got)) / 10)
    share, agreement = float(np.concatenate(close).mean()), float(np.mean(overlap))
    diff = float(np.max(np.concatenate(diffs)))
    if share < RANKER_MIN_CLOSE or agreement < RANKER_MIN_TOP10 or \
            not np.all(np.isneginf(scores[~mask])):  # fmt: skip
        raise ParityError(f"candidate_ranker disagrees with the offline ranker: {share:.1%} of "
                          f"scores within {tolerance:g}, top-10 agreement {agreement:.2f}, or a "
                          "masked slot not -inf")  # fmt: skip
    return ParityReport(pairs=int(mask.sum()) * group_size, max_abs_diff=diff, groups=groups,
                        topk_agreement=agreement)  # fmt: skip
