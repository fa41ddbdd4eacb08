"""The two ONNX models served by Triton, built from one trained network.

* ``pair_scorer``: the Keras network itself, converted with tf2onnx. Inputs ``user`` and
  ``artist`` (int32, ``[batch, 1]``), output ``score`` (float32, ``[batch, 1]``).
* ``catalogue_scorer``: scores a weighted group of users against the whole catalogue and returns
  the top K, all inside the graph. The first Dense layer is split into its user half (a table,
  users x hidden) and artist half (precomputed once, catalogue x hidden, bias included), so a
  group member costs one add, ReLU and dot product per artist. A ``Scan`` walks the group
  members one at a time, so memory stays at catalogue x hidden instead of group x catalogue x
  hidden. Inputs ``users`` (int64 ``[batch, G]``), ``weights`` (float32 ``[batch, G]``) and
  ``k`` (int64 ``[batch, 1]``; the largest k of a batch is used for all of it); outputs
  ``artists`` (int64 ``[batch, K]``) and ``scores`` (float32 ``[batch, K]``), best first.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import onnx
import tensorflow as tf
from onnx import TensorProto, helper, numpy_helper

from training.models.network import ARTIST_INPUT, SCORE_OUTPUT, USER_INPUT, NetworkWeights

OPSET = 17


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


def pair_scorer(model: keras.Model) -> onnx.ModelProto:
    """Convert the Keras network to ONNX with a dynamic batch dimension."""
    import tf2onnx  # heavy import, only needed at export time

    signature = (
        tf.TensorSpec((None, 1), tf.int32, name=USER_INPUT),
        tf.TensorSpec((None, 1), tf.int32, name=ARTIST_INPUT),
    )

    @tf.function(input_signature=signature)
    def serve(user: tf.Tensor, artist: tf.Tensor) -> dict[str, tf.Tensor]:
        return {SCORE_OUTPUT: model({USER_INPUT: user, ARTIST_INPUT: artist})}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET)
    return proto


def _scan_body(hidden: int) -> onnx.GraphProto:
    """Per group member: its user half [H] -> scores of every artist [A] (artist half is an
    outer-scope initializer)."""
    return helper.make_graph(
        [
            helper.make_node("Add", ["user_half", "artist_half"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["act"]),
            helper.make_node("MatMul", ["act", "out_kernel"], ["col"]),
            helper.make_node("Squeeze", ["col", "axis_last"], ["member_scores"]),
        ],
        "member",
        [helper.make_tensor_value_info("user_half", TensorProto.FLOAT, [hidden])],
        [helper.make_tensor_value_info("member_scores", TensorProto.FLOAT, ["A"])],
    )


def catalogue_scorer(weights: NetworkWeights) -> onnx.ModelProto:
    """Build the all-artists top-K model from the network's weights."""
    user_half = weights.user_embedding @ weights.hidden_kernel[: weights.dim]
    artist_half = weights.artist_half()
    hidden = artist_half.shape[1]
    init = [
        numpy_helper.from_array(user_half.astype(np.float32), "user_half_table"),
        numpy_helper.from_array(artist_half.astype(np.float32), "artist_half"),
        numpy_helper.from_array(weights.output_kernel.astype(np.float32), "out_kernel"),
        numpy_helper.from_array(weights.output_bias.astype(np.float32), "out_bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_one"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
    ]
    nodes = [
        helper.make_node("Shape", ["users"], ["group_shape"]),  # [B, G]
        helper.make_node("Reshape", ["users", "flat_shape"], ["flat_users"]),  # [B*G]
        helper.make_node("Gather", ["user_half_table", "flat_users"], ["members"], axis=0),
        helper.make_node(
            "Scan", ["members"], ["member_scores"], num_scan_inputs=1, body=_scan_body(hidden)
        ),  # [B*G, A]
        helper.make_node("Shape", ["artist_half"], ["catalogue_shape"]),
        helper.make_node("Slice", ["catalogue_shape", "zero", "axis_one"], ["n_artists"]),
        helper.make_node("Concat", ["group_shape", "n_artists"], ["grid_shape"], axis=0),
        helper.make_node("Reshape", ["member_scores", "grid_shape"], ["grid"]),  # [B, G, A]
        helper.make_node("Add", ["grid", "out_bias"], ["grid_b"]),
        helper.make_node("Unsqueeze", ["weights", "axis_last"], ["w3"]),  # [B, G, 1]
        helper.make_node("Mul", ["grid_b", "w3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_one"], ["summed"], keepdims=0),
        helper.make_node("ReduceMax", ["k"], ["k_max"], keepdims=0),
        helper.make_node("Min", ["k_max", "n_artists_scalar"], ["k_eff"]),
        helper.make_node("Reshape", ["k_eff", "axis_one"], ["k_vec"]),
        helper.make_node("TopK", ["summed", "k_vec"], ["scores", "artists"], axis=-1,
                         largest=1, sorted=1),
        helper.make_node("Squeeze", ["n_artists"], ["n_artists_scalar"]),
    ]  # fmt: skip
    # Squeeze must precede Min in topological order.
    nodes.insert(nodes.index(next(n for n in nodes if n.op_type == "Min")), nodes.pop())
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
