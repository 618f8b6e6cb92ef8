"""Nearest Resize/Upsample -> 1x1 selection Conv + DepthToSpace(CRD); every repeat claim checked in onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from etc import runtime
from etc.graph import to_gs
from etc.passes import et_resize
from etc.pipeline import Options, PassContext
from etc.rules import NoMatch, RewriteContext, RulePass
from etc.testing import assert_equivalent, op_types

COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
SIZES = ((5, 7), (16, 16), (9, 4))


class _Family(RulePass):
    name = "et_resize"
    rules = et_resize.rules


def run(model: onnx.ModelProto):
    ctx = PassContext(Options())
    return _Family().run(model, ctx), ctx


def resize_model(
    scales=(1, 1, 2, 2),
    *,
    opset: int = 19,
    sizes=None,
    shape=(1, 3, "H", "W"),
    op: str = "Resize",
    scales_as: str = "input",
    **attrs,
) -> onnx.ModelProto:
    inits = []
    if op == "Upsample" and scales_as == "attr":
        node = helper.make_node(op, ["x"], ["y"], scales=[float(s) for s in scales], **attrs)
    elif op == "Upsample" or opset < 11:
        inits.append(onnx.numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
        node = helper.make_node(op, ["x", "scales"], ["y"], **attrs)
    else:
        inputs = ["x", ""]
        if sizes is None:
            inits.append(onnx.numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
            inputs.append("scales")
        else:
            inits.append(onnx.numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes"))
            inputs += ["", "sizes"]
        if opset < 13:
            inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
            inputs[1] = "roi"
        node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], shape[1], None, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def decline_reason(model: onnx.ModelProto) -> str:
    graph = to_gs(model)
    ctx = RewriteContext(graph, Options())
    found = et_resize.NearestResizeToConvD2S().find(ctx, graph.nodes[0])
    assert isinstance(found, NoMatch), found
    return found.reason


def is_repeat_in_onnxruntime(model: onnx.ModelProto, scale: int) -> bool:
    sess = runtime.session(model)
    for h, w in SIZES:
        x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
        (y,) = sess.run(None, {"x": x})
        if not np.array_equal(y, x.repeat(scale, 2).repeat(scale, 3)):
            return False
    return True


@pytest.mark.parametrize("scale", [2, 3])
def test_the_rule_fires_exactly_on_the_combinations_that_repeat(scale):
    for coordinate_mode, nearest_mode in itertools.product(COORDINATE_MODES, NEAREST_MODES):
        model = resize_model(
            (1, 1, scale, scale), coordinate_transformation_mode=coordinate_mode, nearest_mode=nearest_mode
        )
        claimed = et_resize.is_repeat(coordinate_mode, nearest_mode, scale)
        measured = is_repeat_in_onnxruntime(model, scale)
        result, _ = run(model)
        assert result.modified == claimed, (coordinate_mode, nearest_mode)
        if claimed:
            assert measured, (coordinate_mode, nearest_mode)
            assert op_types(result.model) == ["Conv", "DepthToSpace"]
            assert_equivalent(model, result.model, sizes=SIZES, atol=0, rtol=0)
        elif coordinate_mode != "align_corners":
            # declined combinations really are not a repeat (align_corners is declined for size dependence)
            assert not measured, (coordinate_mode, nearest_mode)


def test_selection_kernel_is_repeat_interleave_and_mode_crd():
    model = resize_model((1, 1, 2, 2), coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    result, _ = run(model)
    conv, d2s = result.model.graph.node
    kernel = onnx.numpy_helper.to_array(
        next(i for i in result.model.graph.initializer if i.name == conv.input[1])
    )
    assert kernel.shape == (12, 3, 1, 1)
    assert [int(np.argmax(kernel[o, :, 0, 0])) for o in range(12)] == [0] * 4 + [1] * 4 + [2] * 4
    assert {a.name: helper.get_attribute_value(a) for a in d2s.attribute} == {"blocksize": 2, "mode": b"CRD"}


def test_default_attributes_are_half_pixel_round_prefer_floor():
    model = resize_model((1, 1, 4, 4))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert_equivalent(model, result.model, sizes=SIZES)


def test_static_sizes_that_are_an_integer_multiple():
    model = resize_model(sizes=(1, 3, 15, 21), shape=(1, 3, 5, 7))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert_equivalent(model, result.model)


def test_declines_sizes_with_dynamic_input_or_non_multiple():
    assert "not static" in decline_reason(resize_model(sizes=(1, 3, 10, 14)))
    assert "not an integer" in decline_reason(resize_model(sizes=(1, 3, 10, 15), shape=(1, 3, 4, 6)))


@pytest.mark.parametrize(
    "kind", ["resize10", "upsample9", "upsample7"], ids=["Resize-10", "Upsample-9", "Upsample-7"]
)
def test_old_resize_and_upsample(kind):
    op, opset, scales_as = {
        "resize10": ("Resize", 10, "input"),
        "upsample9": ("Upsample", 9, "input"),
        "upsample7": ("Upsample", 7, "attr"),
    }[kind]
    model = resize_model((1, 1, 3, 3), opset=opset, op=op, scales_as=scales_as, mode="nearest")
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]
    assert [a.name for a in result.model.graph.node[1].attribute] == ["blocksize"]  # DCR before opset 11
    assert_equivalent(model, result.model, sizes=SIZES)


def test_declines_non_integer_unequal_and_channel_scales():
    assert "not an integer" in decline_reason(resize_model((1, 1, 1.5, 1.5)))
    assert "differ" in decline_reason(resize_model((1, 1, 2, 3)))
    assert "batch or channel" in decline_reason(resize_model((1, 2, 2, 2)))


def test_declines_linear_mode_and_align_corners():
    assert "linear" in decline_reason(resize_model(mode="linear"))
    reason = decline_reason(resize_model(coordinate_transformation_mode="align_corners"))
    assert "not a pure pixel repeat" in reason


def test_declines_unknown_channel_count():
    assert "channel count" in decline_reason(resize_model(shape=(1, "C", "H", "W")))


def test_declines_non_constant_scales():
    model = resize_model()
    model.graph.initializer.pop()
    model.graph.input.append(helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]))
    assert "not constant" in decline_reason(model)


def test_scales_from_a_constant_node_as_the_legacy_exporter_writes_them():
    # torch.onnx.export(dynamo=False) of nn.Upsample(scale_factor=2): Resize(x, "", Constant) asymmetric/floor;
    # the dynamo exporter writes the same node with an initializer (covered above)
    model = resize_model(opset=17, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    scales = model.graph.initializer.pop()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["scales"], value=scales))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "DepthToSpace"]  # the unused Constant is cleaned up
    assert_equivalent(model, result.model, sizes=SIZES)
