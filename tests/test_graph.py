"""The graph layer: cleanup disconnects dead nodes, bypass keeps output names, names are unique."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import Namer, bypass, cleanup, consumers, to_gs
from tests.fold_helpers import graph


def test_cleanup_disconnects_dead_nodes_from_live_tensors():
    m = graph(
        "c = Conv (input, w, b)\nd = Relu(c)\noutput = Relu(input)",
        outputs="float[1,3,H,W] output",
        w=np.ones((4, 3, 1, 1), np.float32),
        b=np.zeros(4, np.float32),
    )
    g = to_gs(m)
    cleanup(g)
    assert [n.op for n in g.nodes] == ["Relu"]
    assert [n.op for n in consumers(g.inputs[0])] == ["Relu"]


def test_bypass_before_graph_output_hands_the_name_upstream():
    m = graph("r = Relu(input)\noutput = Identity(r)", outputs="float[1,3,H,W] output")
    g = to_gs(m)
    identity = next(n for n in g.nodes if n.op == "Identity")
    assert bypass(g, identity)
    cleanup(g)
    assert [n.op for n in g.nodes] == ["Relu"]
    assert g.nodes[0].outputs[0] is g.outputs[0]


def test_namer_never_reuses_a_name():
    m = graph("output = Relu(input)", outputs="float[1,3,H,W] output")
    namer = Namer.for_graph(to_gs(m))
    names = {namer("output"), namer("output"), namer("input"), namer("x"), namer("x")}
    assert len(names) == 5 and "output" not in names and "input" not in names


def test_adopting_one_output_of_a_split_keeps_the_other_in_its_slot():
    """Found by the fuzzer: taking Split output 0 must not shift output 1 into slot 0."""
    import onnx_graphsurgeon as gs

    from etc.graph import make_node

    m = graph(
        "a, b = Split <axis = 1> (input, sizes)\nx = Relu(a)\noutput = Relu(b)",
        outputs="float[1,2,H,W] output",
        sizes=np.array([1, 2], np.int64),
    )
    g = to_gs(m)
    split = next(n for n in g.nodes if n.op == "Split")
    first, second = split.outputs
    make_node(g, Namer.for_graph(g), "Relu", [g.inputs[0]], output=first)
    assert split.outputs[1] is second and split.outputs[0] is not first
    assert isinstance(split.outputs[0], gs.Variable) and not split.outputs[0].outputs


def test_auto_pad_reads_graphsurgeon_and_onnx_nodes_alike():
    from onnx import helper

    from etc.graph import auto_pad, explicit_pads

    for attrs, mode, pads in (
        ({}, "NOTSET", (0, 0, 0, 0)),
        ({"pads": [1, 2, 1, 2]}, "NOTSET", (1, 2, 1, 2)),
        ({"auto_pad": "VALID", "pads": [1, 1, 1, 1]}, "VALID", (0, 0, 0, 0)),
        ({"auto_pad": "SAME_UPPER"}, "SAME_UPPER", None),
        ({"auto_pad": ""}, "NOTSET", (0, 0, 0, 0)),
    ):
        proto = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        node = gs.Node("Conv", attrs=dict(attrs))
        assert auto_pad(proto) == auto_pad(node) == mode
        assert explicit_pads(proto) == explicit_pads(node) == pads


def test_channels_of_follows_producers_when_the_shape_is_unknown():
    from etc.graph import channels_of, static_channels

    x = gs.Variable("x", np.float32, [1, 3, 5, 7])
    w = gs.Constant("w", np.zeros((4, 3, 1, 1), np.float32))
    conv_out, relu_out, cat_out = (gs.Variable(n, np.float32) for n in ("c", "r", "cat"))
    gs.Node("Conv", inputs=[x, w], outputs=[conv_out])
    gs.Node("Relu", inputs=[conv_out], outputs=[relu_out])
    gs.Node("Concat", attrs={"axis": 1}, inputs=[relu_out, x], outputs=[cat_out])
    assert static_channels(x) == 3 and static_channels(cat_out) is None
    assert channels_of(relu_out) == 4 and channels_of(cat_out) == 7


def test_batchnorm_affine_names_what_is_not_an_inference_affine():
    import pytest

    from etc.graph import batchnorm_affine

    params = [gs.Constant(n, np.array(v, np.float32)) for n, v in zip("gbmv", ([2.0], [1.0], [0.5], [3.0]))]
    x, y = gs.Variable("x", np.float32), gs.Variable("y", np.float32)
    node = gs.Node("BatchNormalization", attrs={"epsilon": 1.0}, inputs=[x, *params], outputs=[y])
    a, c = batchnorm_affine(node)
    assert np.allclose(a, [1.0]) and np.allclose(c, [0.5])
    node.attrs["training_mode"] = 1
    with pytest.raises(ValueError, match="training mode"):
        batchnorm_affine(node)


def test_shape_view_infers_the_same_shapes_without_the_weights():
    """Shape inference on shape_view (big float weights as typed inputs) gives every tensor the shape full
    inference gives, including a Resize whose small float scales must stay constants."""
    import onnx

    from etc.graph import shape_view
    from etc.testing import GraphBuilder

    net = GraphBuilder(3, hw=(17, 19))
    y = net.op("Relu", [net.conv(net.conv("input", 3, 16, (3, 3)), 16, 8, (5, 5), stride=(2, 2))])
    scales = net.float_const(np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
    model = net.model(net.op("Resize", [y, "", scales], mode="nearest"))
    light = shape_view(model, keep=64)
    assert not any(len(init.float_data) + len(init.raw_data) > 64 * 4 for init in light.graph.initializer)

    def shapes(m):
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        return {
            v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.graph.value_info, *inferred.graph.output]
        }

    assert shapes(light) == shapes(model)
    assert shapes(model)[model.graph.output[0].name] == [1, 8, 18, 20]
