"""et_clip: Clip(Conv(y), 0, M) becomes Conv(-W, M-b) + ReLU, Conv1x1(-I, M) + ReLU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc.passes import et_clip
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family

RANGE = {"input": (-2.0, 2.0)}


def _clip(b: GraphBuilder, x: str, lo, hi, form: str = "init") -> str:
    if form == "init":
        return b.op("Clip", [x, b.const(np.float32(lo)), b.const(np.float32(hi))])
    if form == "constant":
        cs = []
        for v in (lo, hi):
            name = b.name("k")
            b.nodes.append(
                onnx.helper.make_node(
                    "Constant", [], [name], value=onnx.numpy_helper.from_array(np.array(v, np.float32))
                )
            )
            cs.append(name)
        return b.op("Clip", [x, *cs])
    return b.op("Clip", [x, "", b.const(np.float32(hi))])  # empty min: unbounded below


@pytest.mark.parametrize(("hi", "form"), [(1.0, "init"), (6.0, "init"), (1.0, "constant")])
def test_clip_becomes_two_relu_pairs(hi, form):
    b = GraphBuilder(3)
    model = b.model(_clip(b, b.conv("input", 3, 5), 0.0, hi, form))
    result, hits, _ = run_family(model, et_clip.rules)
    assert hits == {"clip_to_relu": 1}
    assert ops(result) == ["Conv", "Relu", "Conv", "Relu"]
    assert conv_kernels(result)[1].shape == (5, 5, 1, 1)
    assert_equivalent(model, result, input_ranges=RANGE, sizes=((5, 7), (1, 1)))


def test_opset_6_attribute_bounds():
    b = GraphBuilder(3, opset=6)
    c = b.op("Conv", ["input", b.const(np.ones((2, 3, 1, 1), np.float32))], kernel_shape=[1, 1])
    model = b.model(b.op("Clip", [c], min=0.0, max=1.0))
    result, hits, _ = run_family(model, et_clip.rules)
    assert hits == {"clip_to_relu": 1}
    assert_equivalent(model, result, input_ranges=RANGE)


@pytest.mark.parametrize(
    ("lo", "hi", "form", "why"),
    [
        (-1.0, 1.0, "init", "lower bound"),
        (0.0, 1.0, "empty", "lower bound"),
        (0.0, -1.0, "init", "upper bound"),
    ],
)
def test_unsupported_bounds_are_refused(lo, hi, form, why):
    b = GraphBuilder(3)
    _, hits, declines = run_family(b.model(_clip(b, b.conv("input", 3, 5), lo, hi, form)), et_clip.rules)
    assert not hits
    assert any(why in r for r in reasons(declines, "clip_to_relu"))


def test_clip_zero_inf_is_left_to_fold():
    b = GraphBuilder(3)
    _, hits, declines = run_family(b.model(_clip(b, b.conv("input", 3, 5), 0.0, np.inf)), et_clip.rules)
    assert not hits and not declines


def test_shared_conv_is_refused():
    b = GraphBuilder(3)
    c = b.conv("input", 3, 5)
    _, hits, declines = run_family(b.model(_clip(b, c, 0.0, 1.0), c), et_clip.rules)
    assert not hits
    assert any("other nodes" in r for r in reasons(declines, "clip_to_relu"))


def test_clip_of_non_conv_is_refused():
    b = GraphBuilder(3)
    _, hits, declines = run_family(b.model(_clip(b, b.op("Sigmoid", ["input"]), 0.0, 1.0)), et_clip.rules)
    assert not hits
    assert any("does not read a Conv" in r for r in reasons(declines, "clip_to_relu"))
