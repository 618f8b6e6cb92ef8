"""et_align: --align-channels N rounds conv widths up with zero channels, never where a Slice would be needed."""

from __future__ import annotations

import numpy as np
import pytest

from etc.passes import et_align
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family


@pytest.mark.parametrize("act", ["Relu", "PRelu", "LeakyRelu", None])
def test_widths_rounded_up(act):
    b = GraphBuilder(3)
    h = b.conv("input", 3, 5)
    if act == "PRelu":
        h = b.op("PRelu", [h, b.const(np.full((5, 1, 1), 0.25, np.float32))])
    elif act:
        h = b.op(act, [h])
    h2 = b.op("Relu", [b.conv(h, 5, 7)])
    model = b.model(b.conv(h2, 7, 3))
    result, hits, _ = run_family(model, et_align.rules, align_channels=4)
    assert hits == {"align_channels": 2}
    assert [k.shape[:2] for k in conv_kernels(result)] == [(8, 3), (8, 8), (3, 8)]
    assert len(ops(result)) == len(ops(model))
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)})


def test_conv_into_depth_to_space_keeps_its_width():
    b = GraphBuilder(3)
    c = b.op("Relu", [b.conv("input", 3, 27)])
    model = b.model(b.op("DepthToSpace", [c], blocksize=3, mode="CRD"))
    _, hits, declines = run_family(model, et_align.rules, align_channels=4)
    assert not hits
    assert any("DepthToSpace" in r for r in reasons(declines, "align_channels"))


def test_graph_output_keeps_its_width():
    b = GraphBuilder(3)
    _, hits, declines = run_family(b.model(b.conv("input", 3, 5)), et_align.rules, align_channels=4)
    assert not hits
    assert any("graph output" in r for r in reasons(declines, "align_channels"))


def test_off_by_default():
    b = GraphBuilder(3)
    model = b.model(b.conv(b.conv("input", 3, 5), 5, 3))
    _, hits, declines = run_family(model, et_align.rules)
    assert not hits and not declines
