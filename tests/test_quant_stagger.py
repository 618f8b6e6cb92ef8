"""Staggered copies are exact in FP32 (onnxruntime, optimizations off, odd sizes) and fire only where safe."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from etc.pipeline import NumericCheck, run_pipeline
from etc.quant import split, stagger
from etc.testing import assert_equivalent, assert_int8_close, image_model, op_types, random_conv_weights


def _model(
    rng,
    *,
    c: int = 6,
    act: str = "Relu",
    reader: str = "Conv",
    out_extra: bool = False,
    copies: tuple[int, ...] = (1, 1, 3, 1, 2, 1),
):
    """x -> Conv(3->c) -> act -> t -> Conv(c->4) -> y, channel ``i`` of t then copied ``copies[i]`` times."""
    w1, b1 = random_conv_weights(rng, c, 3, 3, 3)
    w2, b2 = random_conv_weights(rng, 4, c, 3, 3)
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    attrs = {"alpha": 0.2} if act == "LeakyRelu" else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node(act, ["c1"], ["t"], name="act1", **attrs),
        helper.make_node(
            "Conv", ["t", "w2", "b2"], ["y0" if reader != "Conv" else "y"], pads=[1] * 4, name="conv2"
        ),
    ]
    if reader != "Conv":  # t is also read by a non-Conv node
        nodes.append(helper.make_node("ReduceMean", ["t"], ["m"], keepdims=1, name="mean"))
        nodes.append(helper.make_node("Add", ["y0", "m"], ["y"], name="add"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, None, None])]
    if out_extra:
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, None, None, None]))
    model = image_model(nodes, outputs, inits)
    if reader == "Conv" and not out_extra and act in ("Relu", "LeakyRelu"):
        model = split.duplicate(model, split.find_sites(model)[0], np.array(copies))
    else:  # duplicate by hand: the split site conditions fail for these graphs
        model = _duplicate_rows(model, np.array(copies))
    return model


def _duplicate_rows(model, copies):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    src = np.repeat(np.arange(len(copies)), copies)
    share = 1.0 / copies[src]
    new = {
        "w1": inits["w1"][src],
        "b1": inits["b1"][src],
        "w2": (inits["w2"][:, src] * share.reshape(1, -1, 1, 1)).astype(np.float32),
    }
    for init in model.graph.initializer:
        if init.name in new:
            init.CopyFrom(numpy_helper.from_array(new[init.name], init.name))
    return model


def _producer_rows(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    return inits[conv1.input[1]], inits[conv1.input[2]]


def test_copy_groups_finds_bitwise_equal_rows(rng):
    w = rng.normal(size=(5, 2, 3, 3)).astype(np.float32)
    w[3] = w[1]
    w[4] = w[1]
    assert stagger.copy_groups(w) == [[1, 3, 4]]
    b = np.array([0.0, 1.0, 0.0, 1.0, 2.0], np.float32)  # channel 4 has another bias: not a copy
    assert stagger.copy_groups(w, b) == [[1, 3]]


def test_stagger_scales():
    scales = stagger.stagger_scales(6, [[2, 3, 5], [0, 4]], spread=0.1)
    np.testing.assert_allclose(scales, [1.0, 1.0, 1.0, 0.9, 0.9, 0.8])


def test_scales_must_stay_positive():
    with pytest.raises(ValueError, match="non-positive"):
        stagger.stagger_scales(4, [[0, 1, 2, 3]], spread=0.5)


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu"])
def test_staggering_is_exact(rng, act):
    model = _model(rng, act=act)
    out, records = stagger.stagger(model, spread=0.03)
    assert [(r.tensor, r.groups, r.max_copies) for r in records] == [("t", 2, 3)]
    assert op_types(out) == op_types(model)
    assert_equivalent(model, out, sizes=((11, 13), (12, 9), (5, 7)), atol=1e-5)
    w, b = _producer_rows(out)
    w0, b0 = _producer_rows(model)
    groups = stagger.copy_groups(w0, b0)
    assert stagger.copy_groups(w, b) == []  # no two copies round alike any more
    for group in groups:
        for j, c in enumerate(group):
            np.testing.assert_allclose(w[c], w0[c] * (1 - 0.03 * j), rtol=1e-6)
            assert b[c] == pytest.approx(b0[c] * (1 - 0.03 * j), rel=1e-6)


def test_stagger_pass_runs_under_numeric_check(rng):
    model = _model(rng)
    check = NumericCheck()
    sp = stagger.StaggerPass(spread=0.05)
    result = run_pipeline(model, [sp], instruments=[check], max_rounds=1)
    assert result.hits == {"stagger/stagger": 1}
    assert max(check.worst.values()) < 1e-5
    assert_equivalent(model, result.model)


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        ({"copies": (1, 1, 1, 1, 1, 1)}, {}),  # no copies to stagger
        ({}, {"spread": 0.0}),  # spread 0 is off
        ({"act": "Sigmoid"}, {}),  # not positively homogeneous
        ({"out_extra": True}, {}),  # the tensor is a graph output
        ({"reader": "ReduceMean"}, {}),  # a reader is not a Conv
        ({}, {"skip": {"t"}}),  # skipped tensors are left alone
    ],
    ids=["no_copies", "zero_spread", "not_homogeneous", "graph_output", "non_conv_reader", "skipped"],
)
def test_negative_conditions_leave_the_model_alone(rng, build, kwargs):
    model = _model(rng, **build)
    out, records = stagger.stagger(model, **kwargs)
    assert records == [] and out is model


def test_quantizer_staggers_the_split_copies_and_stays_close(rng):
    from etc.quant import quantizer

    model = _model(rng, copies=(1, 1, 1, 1, 1, 1))
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    w2 = next(i for i in model.graph.initializer if i.name == conv2.input[1])
    value = numpy_helper.to_array(w2).copy()
    value[:, 2] *= 10.0  # channel 2 dominates every row: split copies it, stagger rescales the copies
    w2.CopyFrom(numpy_helper.from_array(value, w2.name))
    images = [rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32) for _ in range(4)]
    qmodel, report = quantizer.quantize_with_report(model, images, scale=1, num=4, split=3, target="native")
    assert [(r.tensor, r.max_copies) for r in report.staggered] == [("t", 3)]
    _, off = quantizer.quantize_with_report(model, images, scale=1, num=4, split=3, stagger=0.0)
    assert off.staggered == []
    assert_int8_close(
        model, qmodel, {"x": images[0]}
    )  # native target: the fused kernel computes the QDQ graph
