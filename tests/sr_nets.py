"""Tiny hand-built super-resolution graphs shared by the HTP and A16 tests (dynamic H/W, opset 17)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def sr_model(nodes: list, inits: list, name: str = "sr", output: str = "y") -> onnx.ModelProto:
    """``nodes`` reading image ``x`` [1, 3, H, W] and writing ``output`` [1, 3, H2, W2], as a model."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, "H2", "W2"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def tiny_sr_net(extra_op: str | None = None) -> onnx.ModelProto:
    """conv 3->8, relu, conv 8->12, depth-to-space x2, optionally followed by one unary op (node 'odd_one')."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "b0"),
        numpy_helper.from_array((rng.normal(size=(12, 8, 3, 3)) * 0.2).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=12).astype(np.float32) * 0.1, "b1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c1"], ["y"], name="d2s", blocksize=2, mode="CRD"),
    ]
    if extra_op is None:
        return sr_model(nodes, inits)
    nodes.append(helper.make_node(extra_op, ["y"], ["z"], name="odd_one"))
    return sr_model(nodes, inits, output="z")
