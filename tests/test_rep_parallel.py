"""rep_parallel: sums of linear branches of one input become one Conv (exact at borders, odd sizes included)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from etc.pipeline import Options, PassContext
from etc.testing import apply_pass, assert_equivalent, op_types, random_conv_weights

KERNELS = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 1)]


class Net:
    """A tiny ONNX graph builder: input x (1, C, H, W) with dynamic H/W, float32 initializers."""

    def __init__(self, channels: int, rng: np.random.Generator | None = None) -> None:
        self.channels = channels
        self.rng = rng or np.random.default_rng(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, value: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel=(3, 3),
        pads=None,
        strides=(1, 1),
        dilations=(1, 1),
        group: int = 1,
        bias: bool = True,
        weight: np.ndarray | None = None,
        bias_value: np.ndarray | None = None,
    ) -> str:
        kh, kw = kernel
        if pads is None:
            pads = (dilations[0] * (kh // 2), dilations[1] * (kw // 2)) * 2
        w, b = random_conv_weights(self.rng, cout, cin // group, kh, kw, bias)
        w = w if weight is None else weight
        b = b if bias_value is None else bias_value
        inputs = [x, self.const(w)] + ([self.const(b)] if b is not None else [])
        attrs = dict(
            kernel_shape=list(kernel), pads=list(pads), strides=list(strides), dilations=list(dilations)
        )
        return self.op("Conv", inputs, group=group, **attrs)

    def bn(self, x: str, channels: int) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, channels), r.normal(0, 0.2, channels), r.normal(0, 0.2, channels)]
        params.append(r.uniform(0.5, 2.0, channels))
        return self.op("BatchNormalization", [x, *(self.const(p) for p in params)], epsilon=1e-5)

    def const_int(self, value) -> str:
        name = self.name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def pad(self, x: str, top: int, left: int, bottom: int, right: int) -> str:
        return self.op("Pad", [x, self.const_int([0, 0, top, left, 0, 0, bottom, right])])

    def model(self, out: str, opset: int = 17, hw: tuple = ("H", "W")) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, self.channels, *hw])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "C", "Ho", "Wo"])
        graph = helper.make_graph(self.nodes, "g", [x], [y], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def rep(model: onnx.ModelProto):
    ctx = PassContext(Options())
    return apply_pass(model, "rep", ctx), ctx


def reasons(ctx: PassContext) -> str:
    return " | ".join(d.reason for d in ctx.declines)


def test_repvgg_block_3x3_1x1_bn_becomes_one_conv():
    net = Net(4)
    a = net.conv("x", 4, 4, (3, 3))
    b = net.conv("x", 4, 4, (1, 1))
    y = net.op("Add", [net.op("Add", [a, b]), net.bn("x", 4)])
    model = net.model(y)
    result, _ = rep(model)
    assert result.modified and op_types(result.model) == ["Conv"]
    assert result.hits == {"merge_parallel": 1}
    assert_equivalent(model, result.model)


def test_bare_input_is_the_identity_kernel():
    net = Net(3)
    y = net.op("Add", ["x", net.conv("x", 3, 3, (3, 3))])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_acnet_asymmetric_branches():
    net = Net(4)
    y = net.op("Sum", [net.conv("x", 4, 6, (3, 3)), net.conv("x", 4, 6, (1, 3)), net.conv("x", 4, 6, (3, 1))])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_depthwise_mask_scaled_per_channel_joins_a_dense_sum():
    """ECB form after the 1x1 merged: dense 3x3 + (depthwise Sobel -> Mul(scale) -> Add(bias))."""
    net = Net(4)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
    mask = np.broadcast_to(sobel, (4, 1, 3, 3)).copy()
    dw = net.conv(net.pad("x", 1, 1, 1, 1), 4, 4, (3, 3), pads=(0, 0, 0, 0), group=4, bias=False, weight=mask)
    scaled = net.op("Mul", [dw, net.const(net.rng.normal(size=(1, 4, 1, 1)))])
    scaled = net.op("Add", [scaled, net.const(np.ones((1, 4, 1, 1)))])
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3)), scaled])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_equal_groups_stay_grouped():
    net = Net(4)
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3), group=2), net.conv("x", 4, 4, (1, 1), group=2)])
    y = net.op("Add", [y, "x"])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    group = next(a.i for a in result.model.graph.node[0].attribute if a.name == "group")
    assert group == 2
    assert_equivalent(model, result.model)


def test_equal_strides_merge_and_other_summands_stay():
    net = Net(3)
    a = net.conv("x", 3, 5, (3, 3), strides=(2, 2))
    b = net.conv("x", 3, 5, (1, 1), strides=(2, 2))
    other = net.conv(net.op("Relu", ["x"]), 3, 5, (3, 3), strides=(2, 2))
    model = net.model(net.op("Add", [net.op("Add", [a, other]), b]))
    result, _ = rep(model)
    assert sorted(op_types(result.model)) == ["Add", "Conv", "Conv", "Relu"]
    assert_equivalent(model, result.model)


def test_different_inputs_are_not_merged():
    net = Net(3)
    model = net.model(net.op("Add", [net.conv("x", 3, 3), net.conv(net.op("Relu", ["x"]), 3, 3)]))
    result, ctx = rep(model)
    assert not result.modified and not ctx.declines


# ---------------------------------------------------------------- negative: one per exactness condition


def test_refuses_different_strides():
    """Only a static 4x4 input makes a stride-2 3x3 (pad 1) and a stride-1 3x3 (pad 0) the same size."""
    net = Net(3)
    a = net.conv("x", 3, 3, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), strides=(1, 1), pads=(0, 0, 0, 0))
    model = net.model(net.op("Add", [a, b]), hw=(4, 4))
    result, ctx = rep(model)
    assert not result.modified
    assert "strides differ" in reasons(ctx)


def test_refuses_different_dilations():
    net = Net(3)
    a = net.conv("x", 3, 3, (3, 3), dilations=(2, 2))
    b = net.conv("x", 3, 3, (3, 3), dilations=(1, 1))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "dilations differ" in reasons(ctx)


def test_refuses_taps_off_the_dilation_grid():
    net = Net(3)
    a = net.conv("x", 3, 3, (3, 3), dilations=(2, 2), pads=(2, 2, 2, 2))
    b = net.conv("x", 3, 3, (3, 3), dilations=(2, 2), pads=(1, 1, 3, 3))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "dilation-2 grid" in reasons(ctx)


def test_refuses_output_size_mismatch():
    net = Net(3)
    a = net.conv("x", 3, 3, (3, 3), pads=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), pads=(0, 0, 0, 0))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "padding mismatch" in reasons(ctx)


def test_refuses_misaligned_windows_that_cost_more():
    net = Net(3)
    a = net.conv("x", 3, 3, (3, 3), pads=(0, 0, 2, 2))
    b = net.conv("x", 3, 3, (3, 3), pads=(2, 2, 0, 0))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "multiply-adds" in reasons(ctx)


def test_shifted_but_aligned_windows_merge_exactly(rng):
    """Equal output size and on-grid offsets: exact even though one branch is not centred."""
    net = Net(3, rng)
    a = net.conv("x", 3, 3, (3, 3), pads=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), pads=(0, 0, 2, 2))
    model = net.model(net.op("Add", [a, b]))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


# ---------------------------------------------------------------- property-based


@settings(max_examples=30, deadline=None)
@given(
    channels=st.integers(1, 5),
    kernels=st.lists(st.sampled_from(KERNELS), min_size=1, max_size=4),
    stride=st.sampled_from([1, 2]),
    depthwise=st.lists(st.booleans(), min_size=4, max_size=4),
    bias=st.booleans(),
    extra=st.sampled_from(["none", "identity", "bn"]),
    seed=st.integers(0, 2**16),
    joins=st.lists(st.sampled_from(["Add", "Sub", "AddNeg"]), min_size=5, max_size=5),
)
def test_parallel_merge_property(channels, kernels, stride, depthwise, bias, extra, seed, joins):
    net = Net(channels, np.random.default_rng(seed))
    terms = [
        net.conv("x", channels, channels, k, strides=(stride, stride), group=channels if dw else 1, bias=bias)
        for k, dw in zip(kernels, depthwise)
    ]
    if stride == 1 and extra == "identity":
        terms.append("x")
    if stride == 1 and extra == "bn":
        terms.append(net.bn("x", channels))
    if len(terms) < 2:
        terms.append(net.conv("x", channels, channels, (1, 1), strides=(stride, stride)))
    y = terms[0]
    for t, join in zip(terms[1:], joins):  # a - b, and a + Neg(b), are signed sums
        y = net.op("Add", [y, net.op("Neg", [t])]) if join == "AddNeg" else net.op(join, [y, t])
    model = net.model(y)
    result, ctx = rep(model)
    if result.modified:
        assert op_types(result.model) == ["Conv"]
        assert_equivalent(model, result.model, sizes=((9, 11), (5, 7)))
    else:
        assert "multiply-adds" in reasons(ctx)
    convs = [(k, channels if dw else 1) for k, dw in zip(kernels, depthwise)]
    if len(terms) > len(kernels) + (stride == 1 and extra != "none"):
        convs.append(((1, 1), 1))
    group = math.gcd(*(g for _, g in convs))
    union = max(k[0] for k, _ in convs) * max(k[1] for k, _ in convs)
    parts = sum(channels * (channels // g) * k[0] * k[1] for k, g in convs)
    assert result.modified == (channels * (channels // group) * union <= parts)


@pytest.mark.parametrize("opset", [17, 18])
def test_merge_is_deterministic(opset):
    net = Net(4)
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3)), net.conv("x", 4, 4, (1, 1))])
    model = net.model(y, opset=opset)
    a, _ = rep(model)
    b, _ = rep(model)
    assert a.model.SerializeToString() == b.model.SerializeToString()


# ---------------------------------------------------------------- signed sums (Sub, Neg)


def test_difference_of_depthwise_branches_becomes_one_depthwise_conv():
    """RepMixer's x + s·(dw3x3(x) - dw1x1(x)): the Sub is a signed sum, the layer scale folds after it."""
    net = Net(5)
    diff = net.op("Sub", [net.conv("x", 5, 5, (3, 3), group=5), net.conv("x", 5, 5, (1, 1), group=5)])
    model = net.model(diff)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert result.hits == {"merge_parallel": 1}
    group = next(a.i for a in result.model.graph.node[0].attribute if a.name == "group")
    assert group == 5
    assert_equivalent(model, result.model, input_ranges={"x": (-1.0, 1.0)})


def test_conv_minus_bare_input_and_negated_summands_merge():
    """conv(x) - x and a Neg inside the tree: each summand's sign is folded into its kernel and bias."""
    net = Net(4)
    neg = net.op("Neg", [net.conv("x", 4, 4, (1, 3))])
    y = net.op("Sub", [net.op("Add", [net.conv("x", 4, 4, (3, 3)), neg]), "x"])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model, input_ranges={"x": (-1.0, 1.0)})


def test_subtracted_summand_left_out_stays_subtracted():
    """conv_a(x) + conv_b(x) - conv(relu(x)): the merge keeps the other input's term as a Sub, no more nodes."""
    net = Net(3)
    other = net.conv(net.op("Relu", ["x"]), 3, 3, (3, 3))
    y = net.op("Sub", [net.op("Add", [net.conv("x", 3, 3, (3, 3)), net.conv("x", 3, 3, (1, 1))]), other])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Relu", "Conv", "Conv", "Sub"]
    assert_equivalent(model, result.model, input_ranges={"x": (-1.0, 1.0)})


def test_sub_of_different_inputs_is_left_alone():
    """Nothing to merge: the Sub stays a Sub (no Neg or Mul(-1) appears) and nothing is reported."""
    net = Net(3)
    model = net.model(net.op("Sub", [net.conv("x", 3, 3), net.conv(net.op("Relu", ["x"]), 3, 3)]))
    result, ctx = rep(model)
    assert not result.modified and not ctx.declines


def test_sub_of_misaligned_branches_is_refused_with_the_reason():
    net = Net(3)
    y = net.op("Sub", [net.conv("x", 3, 3, (3, 3), strides=(2, 2)), net.conv("x", 3, 3, (1, 1))])
    result, ctx = rep(net.model(y))
    assert not result.modified
    assert "strides differ" in reasons(ctx)
