"""fold_border: border values written into a padded tensor become padding (ECB branches as published)."""

from __future__ import annotations

import numpy as np
import pytest

from etc.passes.fold_border import rules
from etc.pipeline import run_pipeline
from etc.testing import GraphBuilder, assert_equivalent, ops, reasons, run_family

H, W = 7, 9  # odd sizes: border bugs hide at even ones
RULE = "border_write_as_padding"


def strip_indices(c: int, rows: range, cols: range) -> np.ndarray:
    """ScatterND indices (1, c, len(rows), len(cols), 4) of every (n=0, ch, row, col) in the strip."""
    grid = np.stack(np.meshgrid([0], range(c), rows, cols, indexing="ij"), axis=-1)
    return grid.astype(np.int64)


STRIPS = {
    "top": (lambda h, w: (range(0, 1), range(0, w))),
    "bottom": (lambda h, w: (range(h - 1, h), range(0, w))),
    "left": (lambda h, w: (range(0, h), range(0, 1))),
    "right": (lambda h, w: (range(0, h), range(w - 1, w))),
}


def border_written(
    c: int = 4,
    *,
    strips: tuple[str, ...] = ("top", "bottom", "left", "right"),
    value: str = "bias",
    mode: str = "constant",
    stride: int = 1,
    interior: bool = False,
):
    """x -> Conv1x1(3->c, bias b0) -> Pad(1) -> ScatterND per strip -> Conv3x3 (pad 0): the published ECB branch.

    ``value`` picks what the strips hold: 'bias' (b0), 'other' (per-channel, not b0), 'scalar' (0.25 everywhere),
    'varying' (b0 plus a different offset at every position: not one value per channel).
    """
    b = GraphBuilder(3, hw=(H, W), seed=1)
    b0 = b.rng.normal(0, 0.5, size=c).astype(np.float32)
    w0 = b.rng.normal(0, 0.5, size=(c, 3, 1, 1)).astype(np.float32)
    y = b.op("Conv", ["input", b.const(w0, "w"), b.const(b0, "b")], kernel_shape=[1, 1], strides=[stride] * 2)
    h, w = (H - 1) // stride + 3, (W - 1) // stride + 3
    y = b.op("Pad", [y, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")], mode=mode)
    fill = {"other": b0 + 1.0, "scalar": np.full(c, 0.25, np.float32)}.get(value, b0)
    for strip in strips:
        rows, cols = STRIPS[strip](h, w)
        if interior and strip == "top":
            rows = range(1, 2)
        idx = strip_indices(c, rows, cols)
        upd = np.broadcast_to(fill[None, :, None, None], idx.shape[:-1]).astype(np.float32)
        if value == "varying":
            upd = upd + np.arange(upd.size, dtype=np.float32).reshape(upd.shape) * 1e-3
        y = b.op("ScatterND", [y, b.const(idx, "idx"), b.const(np.ascontiguousarray(upd), "upd")])
    return b.model(b.conv(y, c, 5, 3, pad=0))


def test_bias_border_becomes_a_padded_1x1():
    model = border_written()
    out, hits, _ = run_family(model, rules)
    assert hits == {RULE: 1}
    assert ops(out) == ["Conv", "Conv"]
    assert_equivalent(model, out)


def test_published_branch_becomes_one_conv_after_fold_rep():
    model = border_written()
    result = run_pipeline(model, "fold,rep")
    assert ops(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_one_value_for_every_channel_becomes_a_constant_pad():
    model = border_written(value="scalar")
    out, hits, _ = run_family(model, rules)
    assert hits == {RULE: 1}
    assert ops(out) == ["Conv", "Pad", "Conv"]
    assert_equivalent(model, out)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"value": "other"}, "not the bias of the 1x1 Conv"),
        ({"strips": ("top", "bottom", "left")}, "one value per channel"),
        ({"value": "varying"}, "one value per channel"),
        ({"interior": True}, "inside the padded region"),
        ({"mode": "reflect"}, "Pad mode 'reflect'"),
        ({"stride": 2}, "strided"),
    ],
)
def test_declines_name_the_failed_condition(kwargs, reason):
    model = border_written(**kwargs)
    out, hits, declines = run_family(model, rules)
    assert hits == {}
    assert ops(out) == ops(model)
    assert any(reason in r for r in reasons(declines, RULE)), reasons(declines, RULE)


def test_per_channel_border_without_a_1x1_producer_is_declined():
    b = GraphBuilder(3, hw=(H, W))
    y = b.op("Pad", ["input", b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")])
    for strip in STRIPS.values():
        idx = strip_indices(3, *strip(H + 2, W + 2))
        upd = np.broadcast_to(np.float32([0.1, 0.2, 0.3])[None, :, None, None], idx.shape[:-1])
        y = b.op("ScatterND", [y, b.const(idx, "idx"), b.const(np.ascontiguousarray(upd), "upd")])
    _, hits, declines = run_family(b.model(y), rules)
    assert hits == {}
    assert any("not the output of a Conv" in r for r in reasons(declines, RULE)), reasons(declines, RULE)


def test_data_dependent_updates_are_declined():
    b = GraphBuilder(3, hw=(H, W))
    y = b.op("Pad", ["input", b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")])
    row = b.op("Slice", ["input", *(b.const(np.array([v], np.int64)) for v in (0, 1, 2))])  # (1,3,1,W)
    idx = strip_indices(3, range(0, 1), range(1, W + 1))
    y = b.op("ScatterND", [y, b.const(idx, "idx"), row])
    model = b.model(y)
    _, hits, declines = run_family(model, rules)
    assert hits == {}
    assert any("depend on tensor values" in r for r in reasons(declines, RULE)), reasons(declines, RULE)


# ---------------------------------------------------------------- the border built by Concat of constant strips


def concat_bordered(value: str = "bias", hw: tuple[int, int] = (H, W)):
    """x -> Conv1x1(b0) -> Concat(W: [b0 column, y, b0 column]) -> Concat(H: [b0 row, ., b0 row]) -> Conv3x3."""
    b = GraphBuilder(3, hw=hw, seed=2)
    c = 4
    b0 = b.rng.normal(0, 0.5, size=c).astype(np.float32)
    w0 = b.rng.normal(0, 0.5, size=(c, 3, 1, 1)).astype(np.float32)
    y = b.op("Conv", ["input", b.const(w0, "w"), b.const(b0, "b")], kernel_shape=[1, 1])
    fill = b0 if value == "bias" else b0 + 0.5
    column = np.ascontiguousarray(np.broadcast_to(fill[None, :, None, None], (1, c, hw[0], 1)))
    y = b.op("Concat", [b.const(column, "col"), y, b.const(column, "col")], axis=3)
    row = np.ascontiguousarray(np.broadcast_to(b0[None, :, None, None], (1, c, 1, hw[1] + 2)))
    y = b.op("Concat", [b.const(row, "row"), y, b.const(row, "row")], axis=2)
    return b.model(b.conv(y, c, 5, 3, pad=0))


def test_concat_of_bias_strips_becomes_a_padded_1x1():
    model = concat_bordered()
    out, hits, _ = run_family(model, rules)
    assert hits == {"border_strips_as_padding": 2}
    assert ops(out) == ["Conv", "Conv"]
    assert_equivalent(model, out)
    assert ops(run_pipeline(model, "fold,rep").model) == ["Conv"]


def test_concat_strip_not_holding_the_bias_is_declined():
    model = concat_bordered(value="other")
    out, hits, declines = run_family(model, rules)
    assert "Concat" in ops(out) and hits.get("border_strips_as_padding", 0) <= 1
    assert any(
        "does not hold the 1x1 Conv's bias" in r for r in reasons(declines, "border_strips_as_padding")
    )
    assert_equivalent(model, out)


@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_exported_concat_border_folds_into_the_1x1(exporter):
    """The border written as torch.cat of expanded bias strips, exported: one conv after fold,rep."""
    torch = pytest.importorskip("torch")
    from etc.frontends.torch import export

    class CatBorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv0, self.conv1 = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 5, 3)

        def forward(self, x):
            y = self.conv0(x)
            b = self.conv0.bias.view(1, -1, 1, 1)
            n, c, h, w = y.shape
            y = torch.cat([b.expand(n, c, h, 1), y, b.expand(n, c, h, 1)], dim=3)
            y = torch.cat([b.expand(n, c, 1, w + 2), y, b.expand(n, c, 1, w + 2)], dim=2)
            return self.conv1(y)

    torch.manual_seed(0)
    model = export(CatBorder().eval(), exporter=exporter, dynamic_hw=False)
    result = run_pipeline(model, "fold,rep")
    assert ops(result.model) == ["Conv"], ops(result.model)
    assert_equivalent(model, result.model)
