"""et_add: Add of convs (or of a conv and a bare tensor) becomes one conv over the concatenated inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from etc.passes import et_add
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family


def test_two_convs_on_different_inputs():
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 5)])
    out = b.op("Add", [b.conv(h, 5, 6, 3), b.conv("input", 3, 6, 1)])
    model = b.model(out)
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 1}
    assert ops(result) == ["Conv", "Relu", "Concat", "Conv"]
    assert conv_kernels(result)[-1].shape == (6, 8, 3, 3)
    assert_equivalent(model, result)


def test_conv_plus_bare_tensor_uses_identity_kernel():
    b = GraphBuilder(4)
    out = b.op("Add", [b.conv("input", 4, 4, 5), "input"])
    model = b.model(out)
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 1}
    assert ops(result) == ["Conv"]
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)})


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout=st.integers(1, 5),
    ka=st.sampled_from([1, 3, 5]),
    kb=st.sampled_from([1, 3]),
    group=st.sampled_from([1, 2]),
    bias=st.booleans(),
)
def test_property_merge(cin, cout, ka, kb, group, bias):
    cin_g, cout_g = cin * group, cout * group
    b = GraphBuilder(cin_g, seed=cin * 7 + cout)
    h = b.op("Relu", [b.conv("input", cin_g, cin_g, 3)])
    left = b.conv(h, cin_g, cout_g, ka, bias=bias, group=group)
    right = b.conv("input", cin_g, cout_g, kb, bias=not bias)
    model = b.model(b.op("Add", [left, right]))
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 1}
    assert ops(result).count("Conv") == 2 and "Add" not in ops(result)
    assert_equivalent(model, result, sizes=((5, 7),))


def test_strided_conv_is_refused():
    b = GraphBuilder(3)
    out = b.op("Add", [b.conv("input", 3, 3, 3, stride=2), b.conv("input", 3, 3, 3, stride=2)])
    _, hits, declines = run_family(b.model(out), et_add.rules)
    assert not hits
    assert any("stride" in r for r in reasons(declines, "add_to_conv"))


def test_unpadded_conv_is_refused():
    b = GraphBuilder(3)
    out = b.op("Add", [b.conv("input", 3, 3, 3, pad=0), b.conv("input", 3, 3, 1)])
    _, hits, declines = run_family(b.model(out), et_add.rules)
    assert not hits
    assert any("pads" in r for r in reasons(declines, "add_to_conv"))


def test_spatial_broadcast_is_refused():
    b = GraphBuilder(3, hw=(6, 5))
    pooled = b.op("ReduceMean", [b.conv("input", 3, 3, 3)], axes=[2, 3], keepdims=1)
    out = b.op("Add", [b.conv("input", 3, 3, 3), pooled])
    _, hits, declines = run_family(b.model(out), et_add.rules)
    assert not hits
    assert any("spatial" in r for r in reasons(declines, "add_to_conv"))


def test_shared_conv_output_is_carried_not_absorbed():
    b = GraphBuilder(3)
    shared = b.conv("input", 3, 3, 3)
    total = b.op("Add", [b.conv("input", 3, 3, 3), shared])
    out = b.op("Mul", [total, shared])
    model = b.model(out)
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 1}
    assert (
        ops(result).count("Conv") == 2
    )  # the shared conv still runs once, the other is merged with identity
    assert_equivalent(model, result)


def test_add_of_two_bare_tensors_is_left():
    b = GraphBuilder(3)
    out = b.op("Add", ["input", b.op("Relu", ["input"])])
    _, hits, declines = run_family(b.model(out), et_add.rules)
    assert not hits and not declines


def test_bias_add_is_not_matched():
    b = GraphBuilder(3)
    out = b.op("Add", [b.conv("input", 3, 3, 3), b.const(np.ones((1, 3, 1, 1), np.float32))])
    _, hits, _ = run_family(b.model(out), et_add.rules)
    assert not hits


def test_bare_input_minus_conv_becomes_one_conv_over_the_concat():
    """DnCNN's x - f(x): the subtrahend's kernel and bias are negated, x enters as the identity kernel."""
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 6)])
    model = b.model(b.op("Sub", ["input", b.conv(h, 6, 3, 3)]))
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 1}
    assert ops(result) == ["Conv", "Relu", "Concat", "Conv"]
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)})


def test_conv_minus_conv_and_conv_minus_bare_input():
    b = GraphBuilder(4)
    h = b.op("Relu", [b.conv("input", 4, 5)])
    diff = b.op("Sub", [b.conv(h, 5, 4, 3), b.conv("input", 4, 4, 1)])
    model = b.model(b.op("Sub", [b.conv(diff, 4, 4, 3), diff]))
    result, hits, _ = run_family(model, et_add.rules)
    assert hits == {"add_to_conv": 2}
    assert "Sub" not in ops(result)
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)})


def test_sub_of_strided_conv_is_refused_and_stays_a_sub():
    b = GraphBuilder(3)
    model = b.model(b.op("Sub", [b.conv("input", 3, 3, 3, stride=2), b.conv("input", 3, 3, 3, stride=2)]))
    result, hits, declines = run_family(model, et_add.rules)
    assert not hits and ops(result) == ["Conv", "Conv", "Sub"]
    assert any("stride" in r for r in reasons(declines, "add_to_conv"))


def test_sub_with_spatial_broadcast_is_refused():
    b = GraphBuilder(3, hw=(7, 5))
    pooled = b.op("ReduceMean", [b.conv("input", 3, 3, 3)], axes=[2, 3], keepdims=1)
    _, hits, declines = run_family(b.model(b.op("Sub", [b.conv("input", 3, 3, 3), pooled])), et_add.rules)
    assert not hits
    assert any("spatial" in r for r in reasons(declines, "add_to_conv"))
