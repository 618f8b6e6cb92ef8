"""et_d2s: Add and elementwise activations commute with DepthToSpace."""

from __future__ import annotations

import numpy as np
import pytest

from etc.passes import et_d2s
from etc.testing import GraphBuilder, assert_equivalent, ops, reasons, run_family

RANGE = {"input": (-1.0, 1.0)}


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("mode", ["CRD", "DCR", None])
def test_add_of_two_shuffles(mode, op):
    b = GraphBuilder(3)
    kw = {"blocksize": 2} | ({"mode": mode} if mode else {})
    left = b.op("DepthToSpace", [b.conv("input", 3, 12)], **kw)
    right = b.op("DepthToSpace", [b.conv("input", 3, 12)], **kw)
    model = b.model(b.op(op, [left, right]))
    result, hits, _ = run_family(model, et_d2s.rules)
    assert hits == {"add_through_d2s": 1}
    assert ops(result) == ["Conv", "Conv", op, "DepthToSpace"]
    assert_equivalent(model, result, input_ranges=RANGE)


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_mixed_modes_are_refused(op):
    b = GraphBuilder(3)
    left = b.op("DepthToSpace", [b.conv("input", 3, 12)], blocksize=2, mode="CRD")
    right = b.op("DepthToSpace", [b.conv("input", 3, 12)], blocksize=2, mode="DCR")
    _, hits, declines = run_family(b.model(b.op(op, [left, right])), et_d2s.rules)
    assert not hits
    assert reasons(declines, "add_through_d2s") == ["the DepthToSpace nodes differ in blocksize or mode"]


@pytest.mark.parametrize("op", ["Relu", "Clip", "LeakyRelu", "Neg"])
def test_activation_moves_before_shuffle(op):
    b = GraphBuilder(3)
    d = b.op("DepthToSpace", [b.conv("input", 3, 12)], blocksize=2, mode="CRD")
    if op == "Clip":
        out = b.op("Clip", [d, b.const(np.float32(0.0)), b.const(np.float32(1.0))])
    else:
        out = b.op(op, [d])
    model = b.model(out)
    result, hits, _ = run_family(model, et_d2s.rules)
    assert hits == {"activation_through_d2s": 1}
    assert ops(result) == ["Conv", op, "DepthToSpace"]
    assert_equivalent(model, result, input_ranges=RANGE)


def test_shared_shuffle_is_left():
    b = GraphBuilder(3)
    d = b.op("DepthToSpace", [b.conv("input", 3, 12)], blocksize=2, mode="CRD")
    model = b.model(b.op("Relu", [d]), d)
    _, hits, _ = run_family(model, et_d2s.rules)
    assert not hits


def test_clip_with_tensor_bound_is_refused():
    b = GraphBuilder(3)
    d = b.op("DepthToSpace", [b.conv("input", 3, 12)], blocksize=2, mode="CRD")
    bound = b.op("ReduceMax", ["input"], keepdims=0)
    _, hits, declines = run_family(b.model(b.op("Clip", [d, bound])), et_d2s.rules)
    assert not hits
    assert any("not a constant scalar" in r for r in reasons(declines, "activation_through_d2s"))
