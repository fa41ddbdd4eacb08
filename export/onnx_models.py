"""The three ONNX models served by Triton, built from one trained network.

* ``pair_scorer``: the Keras network itself, converted with tf2onnx. Inputs ``user`` and
  ``artist`` (int32, ``[batch, 1]``), output ``score`` (float32, ``[batch, 1]``).
* ``catalogue_scorer``: scores a weighted group of users against the whole catalogue and returns
  the top K, all inside the graph. The first Dense layer is split into its user half (a table,
  users x hidden) and artist half (precomputed once, catalogue x hidden, bias included), so a
  group member costs one add, ReLU and dot product per artist. A ``Scan`` walks the catalogue
  in chunks of ``ARTIST_CHUNK`` artists, scoring every group member against a chunk at once, so
  the intermediate stays cache-sized instead of group x catalogue x hidden (twice as fast on a
  CPU as walking the group members over the whole catalogue). Inputs ``users`` (int64
  ``[batch, G]``), ``weights`` (float32 ``[batch, G]``) and ``k``
  (int64 ``[batch, 1]``; the largest k of a batch is used for all of it); outputs ``artists``
  (int64 ``[batch, K]``) and ``scores`` (float32 ``[batch, K]``), best first.
* ``candidate_scorer``: stage 2 of two-stage serving: the same weighted group sum, over the
  candidate artists a request names (see :func:`candidate_scorer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.contract import ARTIST_INPUT, SCORE_OUTPUT, USER_INPUT

if TYPE_CHECKING:  # TensorFlow only where pair_scorer converts a Keras model
    import keras

    from training.models.network import NetworkWeights

OPSET = 17
# Artists per Scan step: [B*G, C, H] float32 stays cache-sized (1.3 MB for 10 users, H=128).
ARTIST_CHUNK = 128


def pair_scorer(model: keras.Model) -> onnx.ModelProto:
    """Convert the Keras network to ONNX with a dynamic batch dimension."""
    import tensorflow as tf
    import tf2onnx  # heavy imports, only needed to convert a Keras model

    signature = (
        tf.TensorSpec((None, 1), tf.int32, name=USER_INPUT),
        tf.TensorSpec((None, 1), tf.int32, name=ARTIST_INPUT),
    )

    @tf.function(input_signature=signature)
    def serve(user: tf.Tensor, artist: tf.Tensor) -> dict[str, tf.Tensor]:
        return {SCORE_OUTPUT: model({USER_INPUT: user, ARTIST_INPUT: artist})}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET)
    return proto


def _chunk_body(chunk: int, hidden: int) -> onnx.GraphProto:
    """Per artist chunk [C, H]: every group member's scores [B*G, C]. ``members`` ([B*G, 1, H],
    the users' halves) and ``out_kernel`` come from the outer scope."""
    return helper.make_graph(
        [
            helper.make_node("Add", ["members", "artist_chunk"], ["pre"]),  # [B*G, C, H]
            helper.make_node("Relu", ["pre"], ["act"]),
            helper.make_node("MatMul", ["act", "out_kernel"], ["col"]),  # [B*G, C, 1]
            helper.make_node("Squeeze", ["col", "axis_last"], ["chunk_scores"]),
        ],
        "artist_chunk",
        [helper.make_tensor_value_info("artist_chunk", TensorProto.FLOAT, [chunk, hidden])],
        [helper.make_tensor_value_info("chunk_scores", TensorProto.FLOAT, ["BG", chunk])],
    )


def catalogue_scorer(weights: NetworkWeights, chunk: int = ARTIST_CHUNK) -> onnx.ModelProto:
    """Build the all-artists top-K model from the network's weights."""
    user_half = weights.user_embedding @ weights.hidden_kernel[: weights.dim]
    artist_half = weights.artist_half().astype(np.float32)
    n_artists, hidden = artist_half.shape
    padded = np.concatenate([artist_half, np.zeros(((-n_artists) % chunk, hidden), np.float32)])
    init = [
        numpy_helper.from_array(user_half.astype(np.float32), "user_half_table"),
        numpy_helper.from_array(padded.reshape(-1, chunk, hidden), "artist_chunks"),
        numpy_helper.from_array(weights.output_kernel.astype(np.float32), "out_kernel"),
        numpy_helper.from_array(weights.output_bias.astype(np.float32), "out_bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_one"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_two"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([n_artists], np.int64), "n_artists"),
    ]
    nodes = [
        helper.make_node("Shape", ["users"], ["group_shape"]),  # [B, G]
        helper.make_node("Reshape", ["users", "flat_shape"], ["flat_users"]),  # [B*G]
        helper.make_node("Gather", ["user_half_table", "flat_users"], ["halves"], axis=0),
        helper.make_node("Unsqueeze", ["halves", "axis_one"], ["members"]),  # [B*G, 1, H]
        helper.make_node("Scan", ["artist_chunks"], ["stacked"], num_scan_inputs=1,
                         body=_chunk_body(chunk, hidden)),  # [chunks, B*G, C]
        helper.make_node("Transpose", ["stacked"], ["by_member"], perm=[1, 0, 2]),
        helper.make_node("Concat", ["group_shape", "flat_shape"], ["grid_shape"], axis=0),
        helper.make_node("Reshape", ["by_member", "grid_shape"], ["padded_grid"]),  # [B, G, A']
        helper.make_node("Slice", ["padded_grid", "zero", "n_artists", "axis_two"], ["grid"]),
        helper.make_node("Add", ["grid", "out_bias"], ["grid_b"]),
        helper.make_node("Unsqueeze", ["weights", "axis_last"], ["w3"]),  # [B, G, 1]
        helper.make_node("Mul", ["grid_b", "w3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_one"], ["summed"], keepdims=0),
        helper.make_node("ReduceMax", ["k"], ["k_max"], keepdims=0),
        helper.make_node("Squeeze", ["n_artists"], ["n_artists_scalar"]),
        helper.make_node("Min", ["k_max", "n_artists_scalar"], ["k_eff"]),
        helper.make_node("Reshape", ["k_eff", "axis_one"], ["k_vec"]),
        helper.make_node("TopK", ["summed", "k_vec"], ["scores", "artists"], axis=-1,
                         largest=1, sorted=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "catalogue_scorer",
        [
            helper.make_tensor_value_info("users", TensorProto.INT64, ["B", "G"]),
            helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["B", "G"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["B", 1]),
        ],
        [
            helper.make_tensor_value_info("artists", TensorProto.INT64, ["B", "K"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", "K"]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def group_score_nodes(weights: NetworkWeights) -> tuple[list, list]:
    """Nodes and initialisers computing ``summed`` (float32 ``[B, C]``): ``sum_g weights[g] *
    network(users[g], candidates[c])`` from the inputs ``users``, ``weights`` and
    ``candidates``. The first Dense layer is split as in :func:`catalogue_scorer`, so each
    (member, candidate) pair costs an add, a ReLU and a dot product."""
    user_half = weights.user_embedding @ weights.hidden_kernel[: weights.dim]
    init = [
        numpy_helper.from_array(user_half.astype(np.float32), "user_half_table"),
        numpy_helper.from_array(weights.artist_half().astype(np.float32), "artist_half_table"),
        numpy_helper.from_array(weights.output_kernel.astype(np.float32), "out_kernel"),
        numpy_helper.from_array(weights.output_bias.astype(np.float32), "out_bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_one"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_two"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
    ]
    nodes = [
        helper.make_node("Gather", ["user_half_table", "users"], ["members"], axis=0),  # [B,G,H]
        helper.make_node("Unsqueeze", ["members", "axis_two"], ["members4"]),  # [B, G, 1, H]
        helper.make_node("Gather", ["artist_half_table", "candidates"], ["arts"], axis=0),
        helper.make_node("Unsqueeze", ["arts", "axis_one"], ["arts4"]),  # [B, 1, C, H]
        helper.make_node("Add", ["members4", "arts4"], ["pre"]),  # [B, G, C, H]
        helper.make_node("Relu", ["pre"], ["act"]),
        helper.make_node("MatMul", ["act", "out_kernel"], ["col"]),  # [B, G, C, 1]
        helper.make_node("Squeeze", ["col", "axis_last"], ["grid"]),  # [B, G, C]
        helper.make_node("Add", ["grid", "out_bias"], ["grid_b"]),
        helper.make_node("Unsqueeze", ["weights", "axis_last"], ["w3"]),  # [B, G, 1]
        helper.make_node("Mul", ["grid_b", "w3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_one"], ["summed"], keepdims=0),
    ]  # fmt: skip
    return nodes, init


def candidate_inputs() -> list[onnx.ValueInfoProto]:
    """The inputs every candidate model shares (see :func:`candidate_scorer`)."""
    return [
        helper.make_tensor_value_info("users", TensorProto.INT64, ["B", "G"]),
        helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["B", "G"]),
        helper.make_tensor_value_info("candidates", TensorProto.INT64, ["B", "C"]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["B", "C"]),
    ]


def candidate_scorer(weights: NetworkWeights) -> onnx.ModelProto:
    """Build the stage-2 scorer: a weighted group of users against given candidate artists.

    Inputs ``users`` (int64 ``[B, G]``), ``weights`` (float32 ``[B, G]``), ``candidates``
    (int64 ``[B, C]``) and ``mask`` (bool ``[B, C]``, False on padding); output ``scores``
    (float32 ``[B, C]``): ``sum_g weights[g] * network(users[g], candidate)``, ``-inf`` where
    the mask is False (:func:`group_score_nodes`).
    """
    nodes, init = group_score_nodes(weights)
    nodes.append(helper.make_node("Where", ["mask", "summed", "minus_inf"], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "candidate_scorer",
        candidate_inputs(),
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", "C"])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
