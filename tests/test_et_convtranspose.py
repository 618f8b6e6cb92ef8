"""ConvTranspose -> Conv over sub-pixel phases + DepthToSpace: exact at every pixel, declines crops."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from etc.graph import to_gs
from etc.passes import et_convtranspose
from etc.passes.et_convtranspose import phase_plan
from etc.pipeline import Options, PassContext
from etc.rules import Decline, NoMatch, RewriteContext, RulePass
from etc.testing import assert_equivalent, op_types

SIZES = ((9, 11), (12, 10))


class _Family(RulePass):
    name = "convtranspose"
    rules = et_convtranspose.rules


def run(model: onnx.ModelProto):
    ctx = PassContext(Options())
    return _Family().run(model, ctx), ctx


def convtranspose_model(
    rng: np.random.Generator,
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int],
    pads: tuple[int, int, int, int],
    output_padding: tuple[int, int] = (0, 0),
    group: int = 1,
    bias: bool = True,
    **attrs,
) -> onnx.ModelProto:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    strides = [stride, stride] if isinstance(stride, int) else list(stride)
    weight = rng.normal(0, 0.3, size=(cin, cout // group, kh, kw)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(onnx.numpy_helper.from_array(rng.normal(0, 0.3, size=cout).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(
        "ConvTranspose",
        inputs,
        ["y"],
        name="deconv",
        strides=strides,
        pads=list(pads),
        output_padding=list(output_padding),
        group=group,
        **attrs,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, "OH", "OW"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def decline_reason(model: onnx.ModelProto) -> str:
    graph = to_gs(model)
    ctx = RewriteContext(graph, Options())
    node = next(n for n in graph.nodes if n.op == "ConvTranspose")
    found = et_convtranspose.ConvTransposeToConvD2S().find(ctx, node)
    assert isinstance(found, NoMatch), found
    return found.reason


def test_fsrcnn_shaped_deconv_becomes_conv_and_crd_depth_to_space(rng):
    model = convtranspose_model(rng, 8, 3, 9, 3, (4, 4, 4, 4), (2, 2))
    result, _ = run(model)
    assert result.modified
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    d2s = result.model.graph.node[1]
    assert {a.name: helper.get_attribute_value(a) for a in d2s.attribute} == {"blocksize": 3, "mode": b"CRD"}
    conv = result.model.graph.node[0]
    weight = next(i for i in result.model.graph.initializer if i.name == conv.input[1])
    # 9x9 kernel, stride 3, pad 4: phases read offsets {1,0,-1}, {1,0,-1}, {2,1,0} -> a 4x4 window
    assert list(weight.dims) == [3 * 9, 8, 4, 4]
    assert_equivalent(model, result.model, sizes=SIZES)


def test_stride_one_is_a_single_conv(rng):
    model = convtranspose_model(rng, 4, 5, 3, 1, (1, 0, 2, 1))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model, sizes=SIZES)


def test_grouped_deconv_keeps_groups(rng):
    model = convtranspose_model(rng, 4, 6, 4, 2, (1, 1, 1, 1), group=2)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    conv = result.model.graph.node[0]
    assert next(a.i for a in conv.attribute if a.name == "group") == 2
    assert_equivalent(model, result.model, sizes=SIZES)


def test_rectangular_kernel_and_asymmetric_pads(rng):
    model = convtranspose_model(rng, 3, 2, (5, 2), 2, (2, 0, 1, 0), (0, 0))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert_equivalent(model, result.model, sizes=SIZES)


def test_kernel_smaller_than_stride_leaves_bias_only_phases(rng):
    model = convtranspose_model(rng, 2, 3, 1, 3, (0, 0, 0, 0), (2, 2))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert_equivalent(model, result.model, sizes=SIZES)


def test_declines_when_output_is_not_a_multiple_of_the_stride(rng):
    model = convtranspose_model(rng, 2, 2, 3, 2, (1, 1, 1, 1))  # 2H - 1 rows
    assert "not a multiple of the stride" in decline_reason(model)
    result, ctx = run(model)
    assert not result.modified
    assert any("not a multiple of the stride" in d.reason for d in ctx.declines)


def test_declines_unequal_strides(rng):
    model = convtranspose_model(rng, 2, 2, 4, (2, 1), (1, 1, 1, 1), (0, 0))
    assert "differ" in decline_reason(model)


def test_declines_dilation(rng):
    model = convtranspose_model(rng, 2, 2, 3, 2, (1, 1, 1, 1), (1, 1), dilations=[2, 2])
    assert "dilations" in decline_reason(model)


def test_declines_output_shape_and_same_padding(rng):
    model = convtranspose_model(rng, 2, 2, 4, 2, (1, 1, 1, 1), output_shape=[32, 32])
    assert "output_shape" in decline_reason(model)
    same = convtranspose_model(rng, 2, 2, 4, 2, (0, 0, 0, 0), auto_pad="SAME_UPPER")
    same.graph.node[0].attribute.remove(next(a for a in same.graph.node[0].attribute if a.name == "pads"))
    assert "auto_pad" in decline_reason(same)


def test_declines_non_constant_weights(rng):
    model = convtranspose_model(rng, 2, 2, 4, 2, (1, 1, 1, 1))
    model.graph.initializer.pop(0)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2, 4, 4]))
    assert "not constant" in decline_reason(model)


def test_phase_plan_pads_are_never_negative():
    for s in range(1, 5):
        for k in range(1, 10):
            for pb in range(k + s):
                for pe in range(k + s):
                    for op in range(s):
                        try:
                            plan = phase_plan(s, k, pb, pe, op)
                        except Decline:
                            assert (k - s - pb - pe + op) % s
                            continue
                        assert plan.pad_lo >= 0 and plan.pad_hi >= 0
                        used = sorted(int(t) for t in plan.taps.ravel() if t >= 0)
                        assert used == list(range(k))  # every kernel tap lands in exactly one phase slot


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.integers(1, 9),
    stride=st.integers(1, 4),
    pad_begin=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    extra=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    out_pad=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    cin=st.integers(1, 4),
    cout=st.integers(1, 3),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_for_any_kernel_stride_padding(
    kernel, stride, pad_begin, extra, out_pad, cin, cout, bias, seed
):
    rng = np.random.default_rng(seed)
    pads_begin = [min(p, kernel - 1) for p in pad_begin]
    out_pad = [o % stride for o in out_pad]
    # the end pad that makes the output a multiple of the stride (plus 0 or 1 extra stride)
    pads_end = [
        (kernel - stride - pb + op) % stride + e * stride for pb, op, e in zip(pads_begin, out_pad, extra)
    ]
    pads = (pads_begin[0], pads_begin[1], pads_end[0], pads_end[1])
    model = convtranspose_model(rng, cin, cout, kernel, stride, pads, tuple(out_pad), bias=bias)
    result, _ = run(model)
    assert op_types(result.model) == (["Conv"] if stride == 1 else ["Conv", "DepthToSpace"])
    assert_equivalent(model, result.model, sizes=SIZES)


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.integers(1, 9),
    stride=st.integers(2, 4),
    pads=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    out_pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_fires_exactly_when_the_output_is_a_multiple_of_the_stride(kernel, stride, pads, out_pad, seed):
    rng = np.random.default_rng(seed)
    pads = tuple(min(p, kernel - 1) for p in pads)
    out_pad = out_pad % stride
    model = convtranspose_model(rng, 2, 2, kernel, stride, pads, (out_pad, out_pad))
    divisible = all((kernel - stride - pads[a] - pads[a + 2] + out_pad) % stride == 0 for a in range(2))
    result, _ = run(model)
    assert result.modified == divisible
    if divisible:
        assert_equivalent(model, result.model, sizes=SIZES)


def test_opset_10_uses_dcr_depth_to_space(rng):
    model = convtranspose_model(rng, 4, 6, 4, 2, (1, 1, 1, 1), group=2)
    model.opset_import[0].version = 10
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert [a.name for a in result.model.graph.node[1].attribute] == ["blocksize"]
    assert_equivalent(model, result.model, sizes=SIZES)
