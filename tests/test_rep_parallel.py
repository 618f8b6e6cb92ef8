"""rep_parallel: sums of linear branches of one input become one Conv (exact at borders, odd sizes included)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etc.pipeline import Options, PassContext
from etc.testing import GraphBuilder, apply_pass, assert_equivalent, op_types

KERNELS = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 1)]


def rep_net(channels: int, rng: np.random.Generator | None = None, **kw) -> GraphBuilder:
    """The rep tests' builder: input 'x' [1, channels, H, W] (``hw``/``opset`` keywords as GraphBuilder)."""
    return GraphBuilder(channels, input_name="x", rng=rng, **kw)


def rep(model: onnx.ModelProto):
    ctx = PassContext(Options())
    return apply_pass(model, "rep", ctx), ctx


def reasons(ctx: PassContext) -> str:
    return " | ".join(d.reason for d in ctx.declines)


def test_repvgg_block_3x3_1x1_bn_becomes_one_conv():
    net = rep_net(4)
    a = net.conv("x", 4, 4, (3, 3))
    b = net.conv("x", 4, 4, (1, 1))
    y = net.op("Add", [net.op("Add", [a, b]), net.bn("x", 4)])
    model = net.model(y)
    result, _ = rep(model)
    assert result.modified and op_types(result.model) == ["Conv"]
    assert result.hits == {"merge_parallel": 1}
    assert_equivalent(model, result.model)


def test_bare_input_is_the_identity_kernel():
    net = rep_net(3)
    y = net.op("Add", ["x", net.conv("x", 3, 3, (3, 3))])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_acnet_asymmetric_branches():
    net = rep_net(4)
    y = net.op("Sum", [net.conv("x", 4, 6, (3, 3)), net.conv("x", 4, 6, (1, 3)), net.conv("x", 4, 6, (3, 1))])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_depthwise_mask_scaled_per_channel_joins_a_dense_sum():
    """ECB form after the 1x1 merged: dense 3x3 + (depthwise Sobel -> Mul(scale) -> Add(bias))."""
    net = rep_net(4)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
    mask = np.broadcast_to(sobel, (4, 1, 3, 3)).copy()
    dw = net.conv(net.pad("x", 1, 1, 1, 1), 4, 4, (3, 3), pad=(0, 0, 0, 0), group=4, bias=False, weight=mask)
    scaled = net.op("Mul", [dw, net.float_const(net.rng.normal(size=(1, 4, 1, 1)))])
    scaled = net.op("Add", [scaled, net.float_const(np.ones((1, 4, 1, 1)))])
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3)), scaled])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_equal_groups_stay_grouped():
    net = rep_net(4)
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3), group=2), net.conv("x", 4, 4, (1, 1), group=2)])
    y = net.op("Add", [y, "x"])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    group = next(a.i for a in result.model.graph.node[0].attribute if a.name == "group")
    assert group == 2
    assert_equivalent(model, result.model)


def test_equal_strides_merge_and_other_summands_stay():
    net = rep_net(3)
    a = net.conv("x", 3, 5, (3, 3), stride=(2, 2))
    b = net.conv("x", 3, 5, (1, 1), stride=(2, 2))
    other = net.conv(net.op("Relu", ["x"]), 3, 5, (3, 3), stride=(2, 2))
    model = net.model(net.op("Add", [net.op("Add", [a, other]), b]))
    result, _ = rep(model)
    assert sorted(op_types(result.model)) == ["Add", "Conv", "Conv", "Relu"]
    assert_equivalent(model, result.model)


@pytest.mark.parametrize("join", ["Add", "Sub"])
def test_different_inputs_are_not_merged(join):
    """Nothing to merge: the sum stays as it is (a Sub gets no Neg or Mul(-1)) and nothing is reported."""
    net = rep_net(3)
    model = net.model(net.op(join, [net.conv("x", 3, 3), net.conv(net.op("Relu", ["x"]), 3, 3)]))
    result, ctx = rep(model)
    assert not result.modified and not ctx.declines


# ---------------------------------------------------------------- negative: one per exactness condition


def test_refuses_different_strides():
    """Only a static 4x4 input makes a stride-2 3x3 (pad 1) and a stride-1 3x3 (pad 0) the same size."""
    net = rep_net(3, hw=(4, 4))
    a = net.conv("x", 3, 3, (3, 3), stride=(2, 2), pad=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), stride=(1, 1), pad=(0, 0, 0, 0))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "strides differ" in reasons(ctx)


def test_refuses_different_dilations():
    net = rep_net(3)
    a = net.conv("x", 3, 3, (3, 3), dilations=(2, 2))
    b = net.conv("x", 3, 3, (3, 3), dilations=(1, 1))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "dilations differ" in reasons(ctx)


def test_refuses_taps_off_the_dilation_grid():
    net = rep_net(3)
    a = net.conv("x", 3, 3, (3, 3), dilations=(2, 2), pad=(2, 2, 2, 2))
    b = net.conv("x", 3, 3, (3, 3), dilations=(2, 2), pad=(1, 1, 3, 3))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "dilation-2 grid" in reasons(ctx)


def test_refuses_output_size_mismatch():
    net = rep_net(3)
    a = net.conv("x", 3, 3, (3, 3), pad=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), pad=(0, 0, 0, 0))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "padding mismatch" in reasons(ctx)


def test_refuses_misaligned_windows_that_cost_more():
    net = rep_net(3)
    a = net.conv("x", 3, 3, (3, 3), pad=(0, 0, 2, 2))
    b = net.conv("x", 3, 3, (3, 3), pad=(2, 2, 0, 0))
    model = net.model(net.op("Add", [a, b]))
    result, ctx = rep(model)
    assert not result.modified
    assert "multiply-adds" in reasons(ctx)


def test_shifted_but_aligned_windows_merge_exactly(rng):
    """Equal output size and on-grid offsets: exact even though one branch is not centred."""
    net = rep_net(3, rng)
    a = net.conv("x", 3, 3, (3, 3), pad=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), pad=(0, 0, 2, 2))
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
    net = rep_net(channels, np.random.default_rng(seed))
    terms = [
        net.conv("x", channels, channels, k, stride=(stride, stride), group=channels if dw else 1, bias=bias)
        for k, dw in zip(kernels, depthwise)
    ]
    if stride == 1 and extra == "identity":
        terms.append("x")
    if stride == 1 and extra == "bn":
        terms.append(net.bn("x", channels))
    if len(terms) < 2:
        terms.append(net.conv("x", channels, channels, (1, 1), stride=(stride, stride)))
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
    net = rep_net(4, opset=opset)
    y = net.op("Add", [net.conv("x", 4, 4, (3, 3)), net.conv("x", 4, 4, (1, 1))])
    model = net.model(y)
    a, _ = rep(model)
    b, _ = rep(model)
    assert a.model.SerializeToString() == b.model.SerializeToString()


# ---------------------------------------------------------------- signed sums (Sub, Neg)


def test_difference_of_depthwise_branches_becomes_one_depthwise_conv():
    """RepMixer's x + s·(dw3x3(x) - dw1x1(x)): the Sub is a signed sum, the layer scale folds after it."""
    net = rep_net(5)
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
    net = rep_net(4)
    neg = net.op("Neg", [net.conv("x", 4, 4, (1, 3))])
    y = net.op("Sub", [net.op("Add", [net.conv("x", 4, 4, (3, 3)), neg]), "x"])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model, input_ranges={"x": (-1.0, 1.0)})


def test_subtracted_summand_left_out_stays_subtracted():
    """conv_a(x) + conv_b(x) - conv(relu(x)): the merge keeps the other input's term as a Sub, no more nodes."""
    net = rep_net(3)
    other = net.conv(net.op("Relu", ["x"]), 3, 3, (3, 3))
    y = net.op("Sub", [net.op("Add", [net.conv("x", 3, 3, (3, 3)), net.conv("x", 3, 3, (1, 1))]), other])
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Relu", "Conv", "Conv", "Sub"]
    assert_equivalent(model, result.model, input_ranges={"x": (-1.0, 1.0)})


def test_sub_of_misaligned_branches_is_refused_with_the_reason():
    net = rep_net(3)
    y = net.op("Sub", [net.conv("x", 3, 3, (3, 3), stride=(2, 2)), net.conv("x", 3, 3, (1, 1))])
    result, ctx = rep(net.model(y))
    assert not result.modified
    assert "strides differ" in reasons(ctx)
