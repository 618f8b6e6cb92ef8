"""The ModelProto helpers (etc.proto): Conv attributes with ONNX defaults, readers, initializer edits."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from etc import proto
from etc.quant import refit
from etc.testing import image_model, random_conv_weights


def test_conv_attrs_fill_the_onnx_defaults():
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    assert proto.conv_attrs(node) == proto.ConvAttrs(1, (1, 1), (1, 1), (0, 0, 0, 0), "NOTSET")


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", ""])
def test_conv_attrs_decode_auto_pad(auto_pad):
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        auto_pad=auto_pad,
        group=3,
        strides=[2, 1],
        dilations=[1, 2],
        pads=[1, 0, 1, 0],
    )
    attrs = proto.conv_attrs(node)
    assert attrs.auto_pad == (auto_pad or "NOTSET")
    assert (attrs.group, attrs.strides, attrs.dilations, attrs.pads) == (3, (2, 1), (1, 2), (1, 0, 1, 0))


@pytest.mark.parametrize(
    "attrs, refittable",
    [
        ({"pads": [1, 1, 1, 1]}, True),
        ({"auto_pad": "SAME_UPPER"}, False),
        ({"auto_pad": "VALID"}, False),
        ({"strides": [2, 2]}, False),
        ({"group": 2}, False),
    ],
)
def test_refit_reads_the_geometry_through_conv_attrs(attrs, refittable):
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    assert (refit.conv_geometry(node) is not None) == refittable


def _two_reader_model(rng):
    w1, b1 = random_conv_weights(rng, 4, 3, 3, 3)
    w2, _ = random_conv_weights(rng, 2, 4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("Add", ["t", "t"], ["s"], name="add"),
        helper.make_node("Conv", ["r", "w2"], ["y1"], name="c2"),
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, None, None])
        for n, c in (("y1", 2), ("s", 4))
    ]
    return image_model(nodes, outputs, {"w1": w1, "b1": b1, "w2": w2, "unused": b1})


def test_readers_list_each_node_once_in_graph_order(rng):
    readers = proto.readers(_two_reader_model(rng))
    assert [n.name for n in readers["t"]] == ["relu", "add"]
    assert [n.name for n in readers["r"]] == ["c2"]


def test_initializer_edits(rng):
    model = _two_reader_model(rng)
    consts = proto.initializer_names(model)
    c1, c2 = proto.nodes_named(model, ["c1", "c2"])
    assert proto.is_const_conv(c1, consts) and proto.is_const_conv(c2, consts)
    proto.set_initializer(model, "b1", np.arange(4, dtype=np.float64))
    np.testing.assert_array_equal(proto.constants(model)["b1"], np.arange(4, dtype=np.float32))
    with pytest.raises(KeyError):
        proto.set_initializer(model, "missing", np.zeros(1))
    update = proto.initializer_updater(model, "_x")
    assert update("w2", lambda w: 2 * w) == "w2_x"
    assert update("w2", lambda w: 3 * w) == "w2_x1"  # fresh names never collide
    read = proto.drop_unused_initializers(model)
    assert {"w1", "b1", "w2"} <= read and proto.initializer_names(model) == {"w1", "b1", "w2"}
