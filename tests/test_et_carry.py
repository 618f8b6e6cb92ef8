"""et_carry: a skip tensor rides through Conv+ReLU/PRelu as identity channels (or as relu(s), relu(-s))."""

from __future__ import annotations

import numpy as np
import pytest

from etc.passes import et_carry, et_dual
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family

SIZES = ((5, 7), (17, 23), (1, 1))
BOTH = et_carry.rules + et_dual.rules


def _act(b: GraphBuilder, act: str, x: str, channels: int, slope: float) -> str:
    if act == "PRelu":
        return b.op(act, [x, b.const(np.full((channels, 1, 1), slope, np.float32))])
    if act == "LeakyRelu":
        return b.op(act, [x], alpha=0.1)
    return b.op(act, [x])


def _skip_net(b: GraphBuilder, act: str = "Relu") -> str:
    """x -> Conv -> act -> Conv -> act, Concat(., x) -> Conv (the input x is carried)."""
    h = b.conv("input", 3, 6)
    h = _act(b, act, h, 6, 0.2)
    h = b.conv(h, 6, 5)
    h = _act(b, act, h, 5, 0.3)
    cat = b.op("Concat", [h, "input"], axis=1)
    return b.conv(cat, 8, 4)


def test_nonnegative_skip_is_carried_to_the_first_conv():
    b = GraphBuilder(3)
    model = b.model(_skip_net(b))
    result, hits, _ = run_family(model, et_carry.rules)
    assert hits == {"carry_skip": 2}
    assert ops(result) == ["Conv", "Relu", "Conv", "Relu", "Conv"]
    first, second, _ = conv_kernels(result)
    assert first.shape == (9, 3, 3, 3) and second.shape == (8, 9, 3, 3)
    # the carried rows are the identity at the centre tap, zero elsewhere (border padding never reaches them)
    assert np.array_equal(first[6:, :, 1, 1], np.eye(3)) and not first[6:, :, [0, 2]].any()
    assert_equivalent(model, result, sizes=SIZES)


def test_signed_skip_is_carried_as_two_relus():
    b = GraphBuilder(3)
    model = b.model(_skip_net(b))
    ranges = {"input": (-1.0, 1.0)}
    result, hits, _ = run_family(model, et_carry.rules, input_ranges=ranges)
    assert hits == {"carry_skip": 2}
    assert ops(result) == ["Conv", "Relu", "Conv", "Relu", "Conv"]
    first, second, last = conv_kernels(result)
    assert first.shape == (12, 3, 3, 3) and second.shape == (11, 12, 3, 3) and last.shape == (4, 11, 3, 3)
    assert_equivalent(model, result, input_ranges=ranges, sizes=SIZES)


def test_signed_skip_into_a_graph_output_is_refused():
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 6)])
    model = b.model(b.op("Concat", [h, "input"], axis=1))
    _, hits, declines = run_family(model, et_carry.rules, input_ranges={"input": (-1.0, 1.0)})
    assert not hits
    assert any("may be negative" in r and "graph output" in r for r in reasons(declines, "carry_skip"))


def test_nonnegative_skip_into_a_graph_output_is_carried():
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 6)])
    model = b.model(b.op("Concat", [h, "input"], axis=1))
    result, hits, _ = run_family(model, et_carry.rules)
    assert hits == {"carry_skip": 1}
    assert ops(result) == ["Conv", "Relu"]
    assert_equivalent(model, result, sizes=SIZES)


@pytest.mark.parametrize(("lo", "slope"), [(0.0, 0.0), (-1.0, 1.0)])
def test_prelu_carries_with_slope_0_or_1(lo, slope):
    b = GraphBuilder(3)
    model = b.model(_skip_net(b, "PRelu"))
    ranges = {"input": (lo, 1.0)}
    result, hits, _ = run_family(model, et_carry.rules, input_ranges=ranges)
    assert hits == {"carry_skip": 2}
    assert ops(result) == ["Conv", "PRelu", "Conv", "PRelu", "Conv"]
    slopes = [i for i in result.graph.initializer if i.dims[:1] == [8] and list(i.dims[1:]) == [1, 1]]
    from onnx import numpy_helper

    assert any(np.allclose(numpy_helper.to_array(s).reshape(-1)[5:], slope) for s in slopes)
    assert_equivalent(model, result, input_ranges=ranges, sizes=SIZES)


def test_nonnegative_skip_rides_through_leaky_relu_unchanged():
    """Real-ESRGAN Compact's activation: leaky_relu(s) = s for s >= 0, so the image rides along as is."""
    b = GraphBuilder(3)
    model = b.model(_skip_net(b, "LeakyRelu"))
    result, hits, _ = run_family(model, et_carry.rules)
    assert hits == {"carry_skip": 2}
    assert ops(result) == ["Conv", "LeakyRelu", "Conv", "LeakyRelu", "Conv"]
    alphas = [a.f for n in result.graph.node for a in n.attribute if a.name == "alpha"]
    assert np.allclose(alphas, 0.1)
    assert_equivalent(model, result, sizes=SIZES)


def test_signed_skip_is_not_carried_through_leaky_relu():
    b = GraphBuilder(3)
    model = b.model(_skip_net(b, "LeakyRelu"))
    result, hits, declines = run_family(model, et_carry.rules, input_ranges={"input": (-1.0, 1.0)})
    assert not hits and ops(result) == ops(model)
    assert any("may be negative: LeakyRelu would scale it" in r for r in reasons(declines, "carry_skip"))


def test_leaky_relu_next_to_relu_carries_as_prelu():
    """Streams with different activations merge as one PRelu with each stream's slopes (Relu: 0)."""
    b = GraphBuilder(3)
    leaky = b.op("LeakyRelu", [b.conv("input", 3, 4)], alpha=0.2)
    relu = b.op("Relu", [b.conv("input", 3, 2)])
    model = b.model(b.conv(b.op("Concat", [leaky, relu, "input"], axis=1), 9, 3))
    result, hits, _ = run_family(model, et_carry.rules)
    assert hits == {"carry_skip": 1}
    assert ops(result) == ["Conv", "PRelu", "Conv"]
    assert_equivalent(model, result, sizes=SIZES)


def test_strided_conv_is_not_carried_through():
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 6, stride=2)])
    model = b.model(
        b.conv(
            b.op("Concat", [h, b.op("MaxPool", ["input"], kernel_shape=[2, 2], strides=[2, 2])], axis=1), 9, 2
        )
    )
    _, hits, declines = run_family(model, BOTH)
    assert not hits
    assert any("stride" in r for r in reasons(declines, "carry_skip"))


def test_residual_block_becomes_plain():
    """y = x + Conv(Relu(Conv(x))) inside a net: add -> conv, then the carry makes it one chain."""
    from etc.passes import et_add

    b = GraphBuilder(4)
    x = b.op("Relu", [b.conv("input", 4, 4)])
    r = b.conv(b.op("Relu", [b.conv(x, 4, 4)]), 4, 4)
    model = b.model(b.conv(b.op("Add", [x, r]), 4, 3))
    result, hits, _ = run_family(model, et_add.rules + BOTH)
    assert hits["add_to_conv"] == 1 and hits["carry_skip"] >= 1
    assert set(ops(result)) == {"Conv", "Relu"}
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)}, sizes=SIZES)
