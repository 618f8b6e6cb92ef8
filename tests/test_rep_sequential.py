"""rep_sequential: two linear convs in a row become one Conv when exact at every pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rep_parallel import reasons, rep, rep_net

from etc.testing import GraphBuilder, assert_equivalent, op_types

SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)


def test_kxk_then_1x1_is_one_kxk():
    net = rep_net(3)
    y = net.conv(net.conv("x", 3, 8, (3, 3)), 8, 4, (1, 1))
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"] and result.hits == {"compose_sequential": 1}
    assert_equivalent(model, result.model)


def test_conv_then_batchnorm_when_rep_runs_alone():
    net = rep_net(3)
    model = net.model(net.bn(net.conv("x", 3, 5, (3, 3), bias=False), 5))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_ecb_padded_1x1_with_bias_then_valid_3x3():
    """Pad(x) -> Conv1x1(bias) -> Conv3x3(pad 0): the 1x1 output border holds its bias; merged pads 1."""
    net = rep_net(4)
    y = net.conv(net.conv(net.pad("x", 1, 1, 1, 1), 4, 8, (1, 1)), 8, 4, (3, 3), pad=(0, 0, 0, 0))
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_dynamo_form_1x1_with_pads_then_valid_3x3():
    net = rep_net(4)
    y = net.conv(net.conv("x", 4, 8, (1, 1), pad=(1, 1, 1, 1)), 8, 4, (3, 3), pad=(0, 0, 0, 0))
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_bias_free_1x1_then_padded_kxk():
    net = rep_net(4)
    y = net.conv(net.conv("x", 4, 4, (1, 1), bias=False), 4, 4, (5, 5))
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_valid_kxk_then_valid_kxk_composes_to_a_larger_kernel():
    net = rep_net(2)
    y = net.conv(net.conv("x", 2, 2, (3, 3), pad=(1, 1, 1, 1)), 2, 2, (3, 3), pad=(0, 0, 0, 0))
    model = net.model(y)
    result, _ = rep(model)
    assert not result.modified  # a 5x5 (100 MACs) costs more than 3x3 + 3x3 (72) and joins no sum
    y2 = net.op("Add", [y, net.conv("x", 2, 2, (3, 3), pad=(0, 0, 0, 0))])
    model = net.model(y2)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_ecb_mask_branch_merges_inside_a_sum():
    """Conv1x1 -> depthwise Sobel -> Mul -> Add: raises MACs alone, but the sum absorbs it."""
    net = rep_net(4)
    mask = np.broadcast_to(SOBEL, (4, 1, 3, 3)).copy()
    dw = net.conv(
        net.conv("x", 4, 4, (1, 1), pad=(1, 1, 1, 1)), 4, 4, (3, 3), pad=(0, 0, 0, 0), group=4, weight=mask
    )
    dw = net.op(
        "Add",
        [
            net.op("Mul", [dw, net.float_const(net.rng.normal(size=(1, 4, 1, 1)))]),
            net.float_const(np.ones((1, 4, 1, 1))),
        ],
    )
    model = net.model(net.op("Add", [net.conv("x", 4, 4, (3, 3)), dw]))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_dbb_1x1_then_avgpool():
    net = rep_net(3)
    avg = net.op("AveragePool", [net.conv("x", 3, 3, (1, 1), pad=(1, 1, 1, 1))], kernel_shape=[3, 3])
    model = net.model(net.op("Add", [net.conv("x", 3, 3, (3, 3)), avg]))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_avgpool_counting_pads_is_a_zero_padded_conv():
    net = rep_net(3)
    avg = net.op(
        "AveragePool",
        [net.conv("x", 3, 3, (1, 1), bias=False)],
        kernel_shape=[3, 3],
        pads=[1] * 4,
        count_include_pad=1,
    )
    model = net.model(net.op("Add", [net.conv("x", 3, 3, (3, 3)), avg]))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_depthwise_then_batchnorm_stays_depthwise():
    net = rep_net(4)
    model = net.model(net.bn(net.conv("x", 4, 4, (3, 3), group=4), 4))
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    group = next(a.i for a in result.model.graph.node[0].attribute if a.name == "group")
    assert group == 4
    assert_equivalent(model, result.model)


# ---------------------------------------------------------------- negative: one per exactness condition


def test_refuses_zero_padding_the_output_of_a_biased_1x1():
    net = rep_net(4)
    model = net.model(net.conv(net.conv("x", 4, 8, (1, 1)), 8, 4, (3, 3)))
    result, ctx = rep(model)
    assert not result.modified
    assert "1x1 with a bias" in reasons(ctx)


def test_refuses_kxk_then_padded_kxk():
    net = rep_net(2)
    y = net.conv(net.conv("x", 2, 2, (3, 3)), 2, 2, (3, 3))
    model = net.model(net.op("Add", [y, net.conv("x", 2, 2, (5, 5))]))
    result, ctx = rep(model)
    assert op_types(result.model) == op_types(model)
    assert "not exact at borders" in reasons(ctx)


def test_refuses_strided_first_conv_before_kxk():
    net = rep_net(2)
    model = net.model(net.conv(net.conv("x", 2, 4, (3, 3), stride=(2, 2)), 4, 2, (3, 3), pad=(0, 0, 0, 0)))
    result, ctx = rep(model)
    assert not result.modified
    assert "strided" in reasons(ctx)


def test_refuses_two_dilated_kxk():
    net = rep_net(2)
    inner = net.conv("x", 2, 2, (3, 3), dilations=(2, 2))
    model = net.model(net.conv(inner, 2, 2, (3, 3), pad=(0, 0, 0, 0), dilations=(2, 2)))
    result, ctx = rep(model)
    assert not result.modified
    assert "dilated" in reasons(ctx)


def test_refuses_avgpool_excluding_pads():
    net = rep_net(3)
    avg = net.op("AveragePool", [net.conv("x", 3, 3, (1, 1))], kernel_shape=[3, 3], pads=[1] * 4)
    model = net.model(net.op("Add", [net.conv("x", 3, 3, (3, 3)), avg]))
    result, ctx = rep(model)
    assert "AveragePool" in op_types(result.model)
    assert "count_include_pad=0" in reasons(ctx)


def test_refuses_a_shared_intermediate():
    net = rep_net(3)
    mid = net.conv("x", 3, 4, (3, 3))
    model = net.model(net.op("Add", [net.conv(mid, 4, 4, (1, 1)), mid]))
    result, ctx = rep(model)
    assert "also read elsewhere" in reasons(ctx)
    assert_equivalent(model, result.model)


def test_refuses_a_merge_that_costs_more_outside_a_sum():
    net = rep_net(8)
    model = net.model(net.conv(net.conv("x", 8, 2, (1, 1), bias=False), 2, 8, (3, 3)))  # a bottleneck
    result, ctx = rep(model)
    assert not result.modified
    assert "multiply-adds" in reasons(ctx)


# ---------------------------------------------------------------- property-based


@settings(max_examples=35, deadline=None)
@given(
    cin=st.integers(1, 4),
    mid=st.integers(1, 6),
    k0=st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 5)]),
    k1=st.sampled_from([(1, 1), (3, 3), (3, 1)]),
    pad0=st.sampled_from(["same", "none", "pad1"]),
    pad1=st.sampled_from(["same", "none"]),
    stride=st.sampled_from([1, 2]),
    depthwise=st.booleans(),
    bias0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sequential_property(cin, mid, k0, k1, pad0, pad1, stride, depthwise, bias0, seed):
    """Whatever the rule decides, the result is equivalent; it fires exactly when the conditions hold."""
    net = rep_net(cin, np.random.default_rng(seed))
    pads0 = {"same": None, "none": (0, 0, 0, 0), "pad1": (1, 1, 1, 1)}[pad0]
    group = cin if depthwise and mid % cin == 0 else 1
    first = net.conv("x", cin, mid, k0, pad=pads0, group=group, bias=bias0)
    pads1 = None if pad1 == "same" else (0, 0, 0, 0)
    second = net.conv(first, mid, mid, k1, pad=pads1, stride=(stride, stride))
    # a sibling branch of the same input makes cost-raising merges worth it
    y = net.op("Relu", [second])
    model = net.model(y)
    result, ctx = rep(model)
    padded_second = pad1 == "same" and k1 != (1, 1)
    exact = not padded_second or (k0 == (1, 1) and not bias0)
    if result.modified:
        assert exact
        assert op_types(result.model) == ["Conv", "Relu"]
        assert_equivalent(model, result.model, sizes=((9, 11), (6, 7)))
    else:
        why = reasons(ctx)
        assert not exact or "multiply-adds" in why, why


@pytest.mark.parametrize("scalar", [True, False])
def test_affine_constants_after_conv(scalar):
    net = rep_net(3)
    c = np.float32(0.5) if scalar else net.rng.normal(size=(3, 1, 1)).astype(np.float32)
    y = net.op(
        "Sub", [net.op("Div", [net.conv("x", 3, 3, (3, 3)), net.float_const(c + 2)]), net.float_const(c)]
    )
    model = net.model(y)
    result, _ = rep(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def _two_readers(net: GraphBuilder, scaled: str, cin: int, kernel=(1, 1)) -> str:
    """Relu(Conv_a(scaled)) + Relu(Conv_b(scaled)): two readers that no parallel merge may fuse."""
    a = net.op("Relu", [net.conv(scaled, cin, 4, kernel)])
    b = net.op("Relu", [net.conv(scaled, cin, 4, kernel)])
    return net.op("Add", [a, b])


def test_batchnorm_read_by_two_1x1_convs_folds_into_both():
    """EIMN's norm: Conv -> BN -> two 1x1 convs, the Conv also feeding a skip; the BN vanishes."""
    net = rep_net(4)
    c = net.conv("x", 4, 6, (3, 3))
    y = _two_readers(net, net.bn(c, 6), 6)
    model = net.model(net.op("Add", [y, net.conv(c, 6, 4, (1, 1))]))
    result, _ = rep(model)
    assert "BatchNormalization" not in op_types(result.model)
    assert result.hits.get("scale_into_readers") == 1
    assert_equivalent(model, result.model)


def test_scale_without_shift_folds_into_padded_readers():
    net = rep_net(4)
    scaled = net.op("Mul", ["x", net.float_const(net.rng.uniform(0.5, 2.0, (1, 4, 1, 1)))])
    model = net.model(_two_readers(net, scaled, 4, (3, 3)))
    result, _ = rep(model)
    assert "Mul" not in op_types(result.model)
    assert_equivalent(model, result.model)


def test_shift_before_padded_readers_is_refused():
    """A BN shift seen through zero padding: the border would hold 0 in the original, the shift in a fold."""
    net = rep_net(4)
    model = net.model(_two_readers(net, net.bn("x", 4), 4, (3, 3)))
    result, ctx = rep(model)
    assert "BatchNormalization" in op_types(result.model)
    assert "zero-pads the output of a 1x1 with a bias" in reasons(ctx)
    assert_equivalent(model, result.model)


def test_scale_with_a_non_conv_reader_stays():
    net = rep_net(4)
    scaled = net.bn("x", 4)
    y = net.op("Add", [net.conv(scaled, 4, 4, (1, 1)), net.op("Relu", [scaled])])
    model = net.model(y)
    result, ctx = rep(model)
    assert "BatchNormalization" in op_types(result.model)
    assert "not a Conv" in reasons(ctx)


# ---------------------------------------------------------------- decide before computing


def _count_kernel_algebra(monkeypatch) -> list[int]:
    """Counts calls of the composition algebra rep_sequential uses (every kernel it builds goes through it)."""
    import etc.passes.rep_sequential as rep_sequential

    calls: list[int] = []
    real = rep_sequential.compose_grouped

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rep_sequential, "compose_grouped", counted)
    return calls


def test_declined_composition_does_no_kernel_algebra(monkeypatch):
    """FastViT's ConvMlp head: depthwise 7x7 -> 1x1 up to 3C. Merged it would be a dense 7x7 (C·3C·49 MACs
    instead of C·49 + C·3C): declined from the shapes, before any kernel is composed, round after round."""
    calls = _count_kernel_algebra(monkeypatch)
    net = rep_net(8)
    dw = net.conv("x", 8, 8, (7, 7), group=8)
    model = net.model(net.op("Relu", [net.conv(dw, 8, 24, (1, 1))]))
    for _ in range(2):
        result, ctx = rep(model)
        assert not result.modified
        assert f"from {8 * 49 + 8 * 24} to {24 * 8 * 49}" in reasons(ctx)
    assert calls == []


def test_scale_into_readers_builds_kernels_only_when_accepted(monkeypatch):
    """A BN shift before padded readers is declined from the pads, with no kernel built; a pure scale before
    a dense and a depthwise reader is absorbed by both, one composition per reader."""
    calls = _count_kernel_algebra(monkeypatch)
    net = rep_net(4)
    refused = net.model(_two_readers(net, net.bn("x", 4), 4, (3, 3)))
    result, ctx = rep(refused)
    assert "zero-pads the output of a 1x1 with a bias" in reasons(ctx) and calls == []
    net = rep_net(4)
    scaled = net.op("Mul", ["x", net.float_const(net.rng.uniform(0.5, 2.0, (1, 4, 1, 1)))])
    a = net.op("Relu", [net.conv(scaled, 4, 4, (3, 3), group=4)])
    b = net.op("Relu", [net.conv(scaled, 4, 4, (3, 3))])
    model = net.model(net.op("Add", [a, b]))
    result, _ = rep(model)
    assert "Mul" not in op_types(result.model)
    assert result.hits == {"scale_into_readers": 1} and len(calls) == 2
    assert_equivalent(model, result.model)


def test_accepted_composition_is_built_once(monkeypatch):
    calls = _count_kernel_algebra(monkeypatch)
    net = rep_net(3)
    model = net.model(net.conv(net.conv("x", 3, 8, (3, 3)), 8, 4, (1, 1)))
    result, _ = rep(model)
    assert result.hits == {"compose_sequential": 1} and len(calls) == 1
    assert_equivalent(model, result.model)


@pytest.mark.parametrize(("group", "out"), [(2, 8), (4, 8), (8, 8), (8, 16)])
def test_grouped_operands_compose_grouped(group, out):
    """Convs with equal groups (depthwise, and depthwise with a channel multiplier) compose group by group:
    the merged conv keeps the groups and equals the two at odd sizes."""
    net = rep_net(8)
    first = net.conv("x", 8, 8, (1, 1), group=group, bias=False)
    second = net.conv(first, 8, out, (3, 3), group=group)
    model = net.model(net.op("Relu", [second]))
    result, _ = rep(model)
    assert result.modified and op_types(result.model) == ["Conv", "Relu"]
    conv = next(n for n in result.model.graph.node if n.op_type == "Conv")
    assert next(a.i for a in conv.attribute if a.name == "group") == group
    assert_equivalent(model, result.model, sizes=((9, 11), (6, 7)))


def _dense_reference(w0, b0, w1, b1):
    """The composition written the slow way: per tap of W1, a matrix product over the mid channels."""
    k1h, k1w = w1.shape[2:]
    k0h, k0w = w0.shape[2:]
    weight = np.zeros((w1.shape[0], w0.shape[1], k0h + k1h - 1, k0w + k1w - 1))
    for sh in range(k1h):
        for sw in range(k1w):
            weight[:, :, sh : sh + k0h, sw : sw + k0w] += np.einsum("om,mihw->oihw", w1[:, :, sh, sw], w0)
    return weight, b1 + np.einsum("omhw,m->o", w1, b0)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.sampled_from([(1, 1), (2, 2), (4, 4), (4, 1), (1, 4), (4, 2), (2, 4)]),
    k0=st.sampled_from([(1, 1), (3, 3), (1, 3), (7, 7)]),
    k1=st.sampled_from([(1, 1), (3, 3), (3, 1)]),
    out_per_group=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_compose_grouped_matches_dense_algebra(groups, k0, k1, out_per_group, seed):
    from etc.convmath import compose_grouped, grouped_to_dense

    group0, group1 = groups
    rng = np.random.default_rng(seed)
    cin, mid = 4, 4 if 4 in groups else 8
    out = group1 * out_per_group
    w0 = rng.normal(size=(mid, cin // group0, *k0))
    w1 = rng.normal(size=(out, mid // group1, *k1))
    b0, b1 = rng.normal(size=mid), rng.normal(size=out)
    weight, bias, group = compose_grouped(w0, group0, b0, w1, group1, b1)
    want_w, want_b = _dense_reference(grouped_to_dense(w0, group0), b0, grouped_to_dense(w1, group1), b1)
    np.testing.assert_allclose(grouped_to_dense(weight, group), want_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias, want_b, rtol=1e-12, atol=1e-12)
