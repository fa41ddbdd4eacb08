"""``candidate_ranker``: the served default's stage 2, the network and the learned ranker in one
ONNX graph, so a ``Recommend`` is one Triton request.

Inputs: those of ``candidate_scorer`` (``users``, ``weights``, ``candidates``, ``mask``) and
``features`` (float32 ``[B, C, F]``: the ranker's features after the network's two,
:data:`core.ranker_features.GATEWAY_FEATURES` and, in a version whose ranker uses tags,
:data:`core.ranker_features.TAG_FEATURES`; ``F`` is fixed per version). Inside:

1. the network's group score of every candidate (:func:`export.onnx_models.group_score_nodes`);
2. its z-score over the request's unmasked candidates (population std, 0 when constant), as
   :func:`core.ranker_features.network_features` computes it offline;
3. ``[dnn, dnn_z, features]`` flattened to ``[B*C, 2 + F]`` and through LightGBM's trees,
   converted by ``onnxmltools`` (an ``ai.onnx.ml`` tree ensemble);
4. ``scores`` (float32 ``[B, C]``), ``-inf`` where the mask is False.

Without a trained ranker (a run that had no validation plays) step 3 is the network score
itself, so the model still ranks, as the DNN alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.ranker_features import NETWORK_FEATURES, RANKER_FEATURES
from export.onnx_models import OPSET, candidate_inputs, group_score_nodes

TREE_OPSET = 15  # the highest onnxmltools 1.16 converts to; its nodes mean the same at OPSET

if TYPE_CHECKING:
    from training.models.network import NetworkWeights
    from training.ranker import LearnedRanker


def ranker_trees(ranker: LearnedRanker) -> onnx.ModelProto:
    """The booster as an ONNX tree ensemble: input ``input`` float ``[N, len(ranker.features)]``,
    output ``variable`` float ``[N, 1]``. Dropped features (ablations) are zeroed first."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    width = len(ranker.features)
    proto = onnxmltools.convert_lightgbm(
        ranker.booster, initial_types=[("input", FloatTensorType([None, width]))],
        target_opset=TREE_OPSET, zipmap=False,
    )  # fmt: skip
    if ranker.config.drop:
        keep = np.ones(width, np.float32)
        keep[[ranker.features.index(f) for f in ranker.config.drop]] = 0.0
        graph = proto.graph
        original = graph.input[0].name
        for node in graph.node:
            node.input[:] = ["kept_input" if i == original else i for i in node.input]
        graph.initializer.append(numpy_helper.from_array(keep, "kept_columns"))
        graph.node.insert(0, helper.make_node("Mul", [original, "kept_columns"], ["kept_input"]))
    return proto


def _zscore_nodes() -> tuple[list, list]:
    """``dnn_z`` from ``summed`` over the unmasked candidates of each row."""
    init = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(1e-30, np.float32), "tiny"),
    ]
    nodes = [
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["maskf", "axis_one"], ["count"], keepdims=1),  # [B, 1]
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Mul", ["summed", "maskf"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis_one"], ["total"], keepdims=1),
        helper.make_node("Div", ["total", "count1"], ["mean"]),
        helper.make_node("Sub", ["summed", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "maskf"], ["dev"]),
        helper.make_node("Mul", ["dev", "dev"], ["dev2"]),
        helper.make_node("ReduceSum", ["dev2", "axis_one"], ["ss"], keepdims=1),
        helper.make_node("Div", ["ss", "count1"], ["var"]),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Max", ["std", "tiny"], ["std1"]),
        helper.make_node("Div", ["dev", "std1"], ["dnn_z"]),  # 0 where constant (dev == 0)
    ]  # fmt: skip
    return nodes, init


def candidate_ranker(weights: NetworkWeights, trees: onnx.ModelProto | None,
                     features: tuple[str, ...] = RANKER_FEATURES) -> onnx.ModelProto:  # fmt: skip
    """Build ``candidate_ranker`` from the network's weights and the ranker's ONNX trees over
    ``features`` (the ranker's, the network's two first)."""
    nodes, init = group_score_nodes(weights)
    z_nodes, z_init = _zscore_nodes()
    nodes += z_nodes
    init += [
        *z_init,
        numpy_helper.from_array(np.array([-1, len(features)], np.int64), "rows_shape"),
    ]
    opsets = [helper.make_opsetid("", OPSET)]
    nodes += [
        helper.make_node("Unsqueeze", ["summed", "axis_last"], ["dnn3"]),  # [B, C, 1]
        helper.make_node("Unsqueeze", ["dnn_z", "axis_last"], ["dnn_z3"]),
        helper.make_node("Concat", ["dnn3", "dnn_z3", "features"], ["all_features"], axis=2),
        helper.make_node("Reshape", ["all_features", "rows_shape"], ["rows"]),  # [B*C, F']
        helper.make_node("Shape", ["mask"], ["grid_shape"]),
    ]  # fmt: skip
    if trees is None:
        nodes.append(helper.make_node("Identity", ["summed"], ["ranked"]))
    else:
        nodes += _inline(trees, "rows", "tree_scores", init)
        nodes.append(helper.make_node("Reshape", ["tree_scores", "grid_shape"], ["ranked"]))
        opsets += [o for o in trees.opset_import if o.domain == "ai.onnx.ml"]
    nodes.append(helper.make_node("Where", ["mask", "ranked", "minus_inf"], ["scores"]))
    inputs = [
        *candidate_inputs(),
        helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                      ["B", "C", len(features) - len(NETWORK_FEATURES)]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "candidate_ranker", inputs,
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", "C"])], init,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _inline(trees: onnx.ModelProto, source: str, target: str, init: list) -> list:
    """The tree graph's nodes, reading ``source`` and writing ``target`` (names prefixed so they
    cannot collide with the network's); its initialisers are appended to ``init``."""
    graph = trees.graph
    rename = {graph.input[0].name: source, graph.output[0].name: target}
    fix = lambda name: rename.get(name) or (f"trees/{name}" if name else name)  # noqa: E731
    for tensor in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = fix(tensor.name)
        init.append(copy)
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [fix(i) for i in node.input]
        copy.output[:] = [fix(o) for o in node.output]
        copy.name = f"trees/{node.name}"
        nodes.append(copy)
    return nodes
