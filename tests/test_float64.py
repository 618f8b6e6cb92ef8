"""The float64 second opinion's vectorized kernels against onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from etc.float64 import FAST_OPS


def _single_node(op: str, x_shape, w_shape=None, with_bias=False, **attrs) -> onnx.ModelProto:
    inputs = ["x"] + (["w"] if w_shape else []) + (["b"] if with_bias else [])
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, x_shape)]
    if w_shape:
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.DOUBLE, w_shape))
    if with_bias:
        graph_inputs.append(helper.make_tensor_value_info("b", TensorProto.DOUBLE, [w_shape[0]]))
    graph = helper.make_graph(
        [node], "g", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _both(model: onnx.ModelProto, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    fast = ReferenceEvaluator(model, new_ops=FAST_OPS).run(None, feeds)[0]
    slow = ReferenceEvaluator(model).run(None, feeds)[0]
    return fast, slow


CONV_CASES = [
    # (in channels, out channels, kernel, group, pads, strides, dilations)
    (4, 6, (3, 3), 1, (1, 1, 1, 1), (1, 1), (1, 1)),
    (6, 6, (3, 3), 6, (1, 1, 1, 1), (1, 1), (1, 1)),  # depthwise
    (4, 8, (5, 3), 2, (2, 0, 1, 3), (2, 1), (1, 2)),  # grouped, asymmetric pads, strided, dilated
    (3, 5, (1, 1), 1, (0, 0, 0, 0), (1, 1), (1, 1)),
    (4, 4, (7, 7), 4, (3, 3, 3, 3), (1, 1), (1, 1)),  # kernel larger than much of the image
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_matches_reference_evaluator(case, with_bias):
    cin, cout, kernel, group, pads, strides, dilations = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, cin, 9, 11))
    w = rng.standard_normal((cout, cin // group, *kernel))
    feeds = {"x": x, "w": w}
    if with_bias:
        feeds["b"] = rng.standard_normal(cout)
    model = _single_node(
        "Conv",
        list(x.shape),
        list(w.shape),
        with_bias,
        group=group,
        pads=list(pads),
        strides=list(strides),
        dilations=list(dilations),
    )
    fast, slow = _both(model, feeds)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,pads,strides",
    [((3, 3), (1, 1, 1, 1), (1, 1)), ((2, 2), (0, 0, 0, 0), (2, 2)), ((3, 2), (1, 0, 0, 1), (2, 1))],
)
def test_max_pool_matches_reference_evaluator(kernel, pads, strides):
    x = np.random.default_rng(5).standard_normal((1, 3, 10, 9)) - 3.0  # negative: padding must never win
    model = _single_node(
        "MaxPool", list(x.shape), kernel_shape=list(kernel), pads=list(pads), strides=list(strides)
    )
    fast, slow = _both(model, {"x": x})
    assert fast.shape == slow.shape
    np.testing.assert_array_equal(fast, slow)


def test_cases_the_kernels_do_not_cover_fall_back_to_the_reference():
    x = np.random.default_rng(6).standard_normal((1, 2, 8, 8))
    model = _single_node("MaxPool", list(x.shape), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    fast, slow = _both(model, {"x": x})
    assert fast.shape == slow.shape == (1, 2, 4, 4)  # ceil mode: one more row and column than floor
    np.testing.assert_array_equal(fast, slow)
