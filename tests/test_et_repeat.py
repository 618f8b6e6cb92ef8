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


class DepthwiseAnchorSR(nn.Module):
    """An ABPN-style anchor (repeat_interleave of the image added before PixelShuffle) over a body with a depthwise
    conv: carrying the image up the body would make that conv dense, which the default budget declines."""

    def __init__(self, scale: int = 2, channels: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.depthwise(torch.relu(self.head(x))))
        anchor = torch.repeat_interleave(x, self.scale * self.scale, dim=1)
        return nn.functional.pixel_shuffle(self.tail(h) + anchor, self.scale)


def test_copy_is_judged_with_the_carry_it_starts():
    """The anchor's copy conv pays only once et_add merges it and et_carry carries the image: when the carry is
    declined (here: it would densify the depthwise conv), the copy is declined with it, so no lone 1x1 copy conv
    is left in front of the Add; with --allow-dense both go ahead and the result is plain."""
    from etc.pipeline import Options, run_pipeline

    torch.manual_seed(0)
    model = export(DepthwiseAnchorSR(), torch.rand(1, 3, 12, 12), exporter="legacy", dynamic_hw=True)
    kept = run_pipeline(model, "fold,rep,et")
    assert "Add" in ops(kept.model)
    assert not [k for k in conv_kernels(kept.model) if k.shape[2:] == (1, 1)], (
        "a lone copy conv was left behind"
    )
    copy = [d for d in kept.budget.decisions if d.rule == "repeat_to_conv"]
    assert copy and not copy[0].accepted and "then adding 'input' and carrying it" in copy[0].what
    assert "dense" in copy[0].reason
    assert_equivalent(model, kept.model, sizes=((9, 11),))
    dense = run_pipeline(model, "fold,rep,et", options=Options(allow_dense=True))
    assert set(ops(dense.model)) == {"Conv", "Relu", "DepthToSpace"}
    assert_equivalent(model, dense.model, sizes=((9, 11),))
