"""et_repeat + etc.passes._region: anchors and repeats become 1x1 selection convs with the exact channel map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from etc.frontends.torch import export
from etc.passes import et_repeat
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family

SHAPE_OPS = {"Unsqueeze", "Tile", "Expand", "Reshape", "Shape", "Slice", "Concat", "Gather"}


class Anchors(nn.Module):
    """Both anchor spellings: repeat_interleave (o copies o // n) and Tile (o copies o % C)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(torch.repeat_interleave(x, 4, dim=1)), torch.relu(x.repeat(1, 4, 1, 1))


@pytest.mark.parametrize(("exporter", "dynamic"), [("legacy", True), ("legacy", False), ("dynamo", True)])
def test_torch_anchors_become_selection_convs(exporter, dynamic):
    model = export(Anchors(), torch.rand(1, 3, 8, 10), exporter=exporter, dynamic_hw=dynamic)
    out, hits, _ = run_family(model, et_repeat.rules)
    assert hits.get("repeat_to_conv") == 2
    assert not SHAPE_OPS & set(ops(out)), ops(out)
    kernels = {tuple(k[:, :, 0, 0].argmax(1)) for k in conv_kernels(out)}
    assert kernels == {tuple(np.arange(12) // 4), tuple(np.arange(12) % 3)}
    assert all(set(np.unique(k)) == {0.0, 1.0} for k in conv_kernels(out))
    assert_equivalent(model, out, sizes=((5, 7), (8, 10)) if dynamic else ((8, 10),))


def _interleave_dynamo_style(b: GraphBuilder, c: int, n: int) -> str:
    """Unsqueeze -> Expand -> Reshape(Concat(1, C*n, Shape(x, start=2)))."""
    u = b.op("Unsqueeze", ["input", b.const(np.array([2], np.int64))])
    e = b.op("Expand", [u, b.const(np.array([1, 1, n, 1, 1], np.int64))])
    hw = b.op("Shape", ["input"], start=2)
    shape = b.op(
        "Concat", [b.const(np.array([1], np.int64)), b.const(np.array([c * n], np.int64)), hw], axis=0
    )
    return b.op("Reshape", [e, shape])


def test_handmade_interleave_and_concat_repeat():
    b = GraphBuilder(2, opset=18)
    a = _interleave_dynamo_style(b, 2, 3)
    t = b.op("Concat", ["input", "input", "input"], axis=1)
    out = b.op("Add", [a, t])
    model = b.model(out)
    result, hits, _ = run_family(model, et_repeat.rules)
    assert hits["repeat_to_conv"] == 2
    assert ops(result) == ["Conv", "Conv", "Add"]
    got = sorted(k[:, :, 0, 0].argmax(1).tolist() for k in conv_kernels(result))
    assert got == sorted([[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]])
    assert_equivalent(model, result)


def test_transpose_is_not_a_channel_map():
    b = GraphBuilder(3)
    t = b.op("Transpose", ["input"], perm=[0, 1, 3, 2])
    out = b.op("Relu", [t])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits
    assert any("not [N, C', H, W]" in r for r in reasons(declines, "repeat_to_conv"))


def test_spatial_slice_is_refused():
    b = GraphBuilder(3)
    t = b.op(
        "Slice",
        [
            "input",
            b.const(np.array([1], np.int64)),
            b.const(np.array([1000], np.int64)),
            b.const(np.array([3], np.int64)),
        ],
    )
    out = b.op("Relu", [t])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits
    assert reasons(declines, "repeat_to_conv")


def test_shape_from_graph_input_is_refused():
    b = GraphBuilder(3)
    b.inputs.append(__import__("onnx").helper.make_tensor_value_info("shape", 7, [4]))
    t = b.op("Reshape", ["input", "shape"])
    out = b.op("Relu", [t])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits
    assert any("graph input" in r for r in reasons(declines, "repeat_to_conv"))


def test_constant_data_is_not_a_region():
    b = GraphBuilder(3, hw=(4, 4))
    t = b.op("Concat", ["input", b.const(np.ones((1, 1, 4, 4), np.float32))], axis=1)
    out = b.op("Relu", [t])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits and not reasons(declines, "repeat_to_conv")


def test_identity_region_is_left_to_fold():
    b = GraphBuilder(3)
    t = b.op("Identity", ["input"])
    out = b.op("Relu", [t])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits
    assert any("identity" in r for r in reasons(declines, "repeat_to_conv"))


def test_broadcast_one_channel_anchor():
    b = GraphBuilder(1, hw=(6, 5))
    c = b.conv("input", 1, 4)
    out = b.op("Add", [c, "input"])
    model = b.model(out)
    result, hits, _ = run_family(model, et_repeat.rules)
    assert hits == {"broadcast_anchor": 1}
    assert ops(result) == ["Conv", "Conv", "Add"]
    assert_equivalent(model, result)


def test_broadcast_over_space_is_refused():
    b = GraphBuilder(4, hw=(6, 5))
    pooled = b.op("ReduceMean", ["input"], axes=[1, 2, 3], keepdims=1)
    out = b.op("Add", ["input", pooled])
    _, hits, declines = run_family(b.model(out), et_repeat.rules)
    assert not hits
    assert reasons(declines, "broadcast_anchor")


def test_repeated_region_is_probed_once(monkeypatch):
    """Two blocks with the same region under other tensor names: one onnxruntime probe answers both (and a
    later run), and each gets the right selection conv."""
    import etc.passes._region as region_module

    calls = []
    real = region_module._probe_map

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(region_module, "_probe_map", counted)
    monkeypatch.setattr(region_module, "_PROBED", {})
    b = GraphBuilder(2)
    first = b.op("Relu", [b.op("Concat", ["input", "input", "input"], axis=1)])
    again = b.op("Neg", ["input"])
    second = b.op("Relu", [b.op("Concat", [again, again, again], axis=1)])
    model = b.model(b.op("Add", [first, second]))
    for _ in range(2):
        result, hits, _ = run_family(model, et_repeat.rules)
        assert hits["repeat_to_conv"] == 2
        assert_equivalent(model, result)
    assert len(calls) == 1
