"""depthwise: convs that never mix channels become depthwise convs, exactly, borders included."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc.passes import depthwise
from etc.pipeline import run_pipeline
from etc.runtime import session
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, run_family

RANGE = {"input": (-2.0, 2.0)}


def _diagonal(channels: int, k: int, rng: np.random.Generator) -> np.ndarray:
    weight = np.zeros((channels, channels, k, k), np.float32)
    for c in range(channels):
        weight[c, c] = rng.normal(size=(k, k))
    return weight


def _groups(model: onnx.ModelProto) -> list[int]:
    return [
        next((a.i for a in n.attribute if a.name == "group"), 1)
        for n in model.graph.node
        if n.op_type == "Conv"
    ]


@pytest.mark.parametrize(("k", "pad", "stride"), [(1, 0, 1), (3, 1, 1), (3, 0, 2), (5, 2, 1)])
def test_diagonal_conv_becomes_depthwise(k, pad, stride):
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 6)])
    model = b.model(b.conv(h, 6, 6, k, pad=pad, stride=stride, weight=_diagonal(6, k, b.rng)))
    result, hits, _ = run_family(model, depthwise.rules)
    assert hits == {"diagonal_to_depthwise": 1}
    assert _groups(result) == [1, 6]
    assert conv_kernels(result)[1].shape == (6, 1, k, k)
    assert_equivalent(model, result, input_ranges=RANGE, sizes=((5, 7), (8, 9), (6, 11)))


def test_clamp_conv_is_bit_identical():
    """The clamp's Conv1x1(-I, 1) + Relu: the depthwise form gives the same bits, not merely close ones."""
    b = GraphBuilder(4)
    weight = -np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    h = b.op("Relu", [b.conv("input", 4, 4)])
    model = b.model(b.op("Relu", [b.conv(h, 4, 4, 1, weight=weight)]))
    result, hits, _ = run_family(model, depthwise.rules)
    assert hits == {"diagonal_to_depthwise": 1}
    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 11, 13)).astype(np.float32)
    before = session(model).run(None, {"input": x})[0]
    after = session(result).run(None, {"input": x})[0]
    assert np.array_equal(before, after)


@pytest.mark.parametrize(
    "case", ["mixing", "not_square", "single_channel", "already_grouped", "dynamic_weight"]
)
def test_convs_that_mix_or_cannot_be_regrouped_stay(case):
    b = GraphBuilder(4)
    h = b.op("Relu", [b.conv("input", 4, 4)])
    if case == "mixing":
        weight = _diagonal(4, 1, b.rng)
        weight[0, 3] = 1e-3  # one tiny off-diagonal weight: the channels mix
        out = b.conv(h, 4, 4, 1, weight=weight)
    elif case == "not_square":
        out = b.conv(h, 4, 2, 1, weight=np.eye(4, dtype=np.float32)[:2].reshape(2, 4, 1, 1))
    elif case == "single_channel":
        out = b.conv(b.conv(h, 4, 1, 1), 1, 1, 3)
    elif case == "already_grouped":
        out = b.conv(h, 4, 4, 3, group=2)
    else:
        w = b.op("Identity", [b.const(_diagonal(4, 1, b.rng))])
        out = b.op("Conv", [h, w], kernel_shape=[1, 1])
    model = b.model(out)
    result, hits, _ = run_family(model, depthwise.rules)
    assert hits == {}
    assert ops(result) == ops(model)


def test_pass_by_name_after_et_lowers_the_clamp():
    """fold,rep,et,depthwise on a clamped conv net: the clamp's 1x1 becomes depthwise, MACs drop, outputs equal."""
    b = GraphBuilder(3)
    h = b.op("Relu", [b.conv("input", 3, 8)])
    model = b.model(b.op("Clip", [b.conv(h, 8, 12), b.const(np.float32(0)), b.const(np.float32(1))]))
    dense = run_pipeline(model, "fold,rep,et").model
    lowered = run_pipeline(model, "fold,rep,et,depthwise").model
    assert _groups(dense) == [1, 1, 1]
    assert _groups(lowered) == [1, 1, 12]
    assert_equivalent(model, lowered, input_ranges={"input": (0.0, 1.0)}, sizes=((7, 5), (16, 16)))
