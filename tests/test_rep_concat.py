"""rep_concat: convs of one input concatenated on channels become one Conv with stacked rows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rep_parallel import reasons, rep, rep_net

from etc.testing import assert_equivalent, op_types


def test_two_convs_of_one_input_stack():
    net = rep_net(3)
    y = net.op("Concat", [net.conv("x", 3, 4), net.conv("x", 3, 5)], axis=1)
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"] and result.hits == {"stack_concat": 1}
    assert_equivalent(model, result.model)


def test_only_adjacent_runs_stack_and_order_is_kept():
    net = rep_net(3)
    other = net.conv(net.op("Relu", ["x"]), 3, 2)
    y = net.op(
        "Concat", [net.conv("x", 3, 4), net.conv("x", 3, 2, bias=False), other, net.conv("x", 3, 3)], axis=1
    )
    model = net.model(y)
    result, _ = rep(model)
    assert sorted(op_types(result.model)) == ["Concat", "Conv", "Conv", "Conv", "Relu"]
    assert_equivalent(model, result.model)


def test_refuses_different_inputs_silently():
    net = rep_net(3)
    model = net.model(net.op("Concat", [net.conv("x", 3, 4), net.conv(net.op("Relu", ["x"]), 3, 4)], axis=1))
    result, ctx = rep(model)
    assert not result.modified and not ctx.declines


def test_refuses_different_kernels():
    net = rep_net(3)
    model = net.model(net.op("Concat", [net.conv("x", 3, 4, (3, 3)), net.conv("x", 3, 4, (1, 1))], axis=1))
    result, ctx = rep(model)
    assert not result.modified
    assert "kernels differ" in reasons(ctx)


def test_refuses_grouped_convs():
    net = rep_net(4)
    model = net.model(net.op("Concat", [net.conv("x", 4, 4, group=2), net.conv("x", 4, 4, group=2)], axis=1))
    result, ctx = rep(model)
    assert not result.modified
    assert "grouped" in reasons(ctx)


def test_refuses_different_strides():
    net = rep_net(3, hw=(4, 4))
    a = net.conv("x", 3, 3, (3, 3), stride=(2, 2), pad=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), stride=(1, 1), pad=(0, 0, 0, 0))
    model = net.model(net.op("Concat", [a, b], axis=1))
    result, ctx = rep(model)
    assert not result.modified
    assert "strides differ" in reasons(ctx)


def test_refuses_padding_mismatch():
    net = rep_net(3)
    a = net.conv("x", 3, 3, (3, 3), pad=(1, 1, 1, 1))
    b = net.conv("x", 3, 3, (3, 3), pad=(2, 2, 0, 0))
    model = net.model(net.op("Concat", [a, b], axis=1))
    result, ctx = rep(model)
    assert not result.modified
    assert "kernels differ" in reasons(ctx)


def test_channel_axis_only():
    net = rep_net(3)
    model = net.model(net.op("Concat", [net.conv("x", 3, 3), net.conv("x", 3, 3)], axis=3))
    result, _ = rep(model)
    assert not result.modified


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    outs=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    kernel=st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 5)]),
    stride=st.sampled_from([1, 2]),
    dilation=st.sampled_from([1, 2]),
    bias=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_concat_property(cin, outs, kernel, stride, dilation, bias, seed):
    net = rep_net(cin, np.random.default_rng(seed))
    convs = [
        net.conv("x", cin, o, kernel, stride=(stride, stride), dilations=(dilation, dilation), bias=b)
        for o, b in zip(outs, bias)
    ]
    model = net.model(net.op("Concat", convs, axis=1))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model, sizes=((11, 13), (6, 5)))
