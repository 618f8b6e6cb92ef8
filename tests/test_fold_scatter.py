"""fold_scatter: an in-place write of a channel range becomes Slice + Concat (PLKSR's partial conv)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc.passes.fold_scatter import rules
from etc.pipeline import NumericCheck, run_pipeline
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family

RULE = "channel_write_as_concat"
C = 6


def channel_write(
    rows: list[list[int]] | None = None,
    *,
    cout: int = 2,
    transposed: bool = False,
    back: bool = True,
    reduction: str = "none",
    hw: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """x = Conv3x3(input); x[:, rows] = Conv5x5(x[:, 0:2]) as ScatterND (legacy layout or dynamo's transposes)."""
    b = GraphBuilder(3, hw=hw, seed=4)
    x = b.conv("input", 3, C, 3)
    part = b.op("Slice", [x, *(b.const(np.array([v], np.int64)) for v in (0, 2, 1))])
    upd = b.conv(part, 2, cout, 5)
    rows = rows if rows is not None else [[0, c] for c in range(1, 1 + cout)]
    if transposed:
        perm = [1, 0, 2, 3]
        idx = np.array([[c] for _, c in rows], np.int64)
        data = b.op("Transpose", [x], perm=perm)
        upd = b.op("Transpose", [upd], perm=perm)
        y = b.op("ScatterND", [data, b.const(idx, "idx"), upd], reduction=reduction)
        y = b.op("Transpose", [y], perm=perm) if back else y
    else:
        idx = np.array([rows], np.int64)  # (1, cout, 2): (batch, channel) pairs
        y = b.op("ScatterND", [x, b.const(idx, "idx"), upd], reduction=reduction)
    return b.model(b.conv(y, C, 3, 1))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("first", [0, 1, 4])
def test_channel_write_becomes_slice_concat(transposed, first):
    model = channel_write([[0, c] for c in range(first, first + 2)], transposed=transposed, hw=(7, 9))
    out, hits, _ = run_family(model, rules)
    assert hits == {RULE: 1}
    slices = (first > 0) + (first + 2 < C)
    assert ops(out) == ["Conv", "Slice", "Conv", *["Slice"] * slices, "Concat", "Conv"], ops(out)
    assert_equivalent(model, out)


def test_dynamic_hw_write_is_rewritten_and_exact():
    model = channel_write(transposed=True)
    out, hits, _ = run_family(model, rules)
    assert hits == {RULE: 1}
    assert_equivalent(model, out)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"rows": [[0, 1], [0, 3]]}, "contiguous"),
        ({"rows": [[0, 2], [0, 1]]}, "reordered"),
        ({"rows": [[0, 1]], "cout": 1}, None),  # one channel: still a range, rewritten
        ({"transposed": True, "back": False}, "not transposed back"),
        ({"reduction": "add"}, "reduction 'add'"),
    ],
)
def test_declines_name_the_failed_condition(kwargs, reason):
    model = channel_write(**kwargs, hw=(7, 9))
    out, hits, declines = run_family(model, rules)
    if reason is None:
        assert hits == {RULE: 1}
        assert_equivalent(model, out)
        return
    assert hits == {}
    assert any(reason in r for r in reasons(declines, RULE)), reasons(declines, RULE)


def test_spatial_write_is_left_alone():
    """Writing row 0 of channels 1..2 (indices reach H) is not a whole-channel write: not this rule's pattern."""
    b = GraphBuilder(3, hw=(7, 9), seed=4)
    x = b.conv("input", 3, C, 3)
    row = b.op("Slice", [x, *(b.const(np.array([v], np.int64)) for v in (1, 3, 1))])
    row = b.op("Slice", [row, *(b.const(np.array([v], np.int64)) for v in (0, 1, 2))])
    idx = np.array([[[0, 1, 0], [0, 2, 0]]], np.int64)
    model = b.model(b.op("ScatterND", [x, b.const(idx, "idx"), b.op("Relu", [row])]))
    out, hits, _ = run_family(model, rules)
    assert hits == {}
    assert ops(out) == ops(model)


# ---------------------------------------------------------------- the published form, exported


def partial_conv_net(in_place: bool | str):
    """PLKSR-style block: conv, ReLU, a 5x5 conv on the first 2 of 8 channels, 1x1, skip. The partial conv is
    written in place (True), with slices and cat (False), or with ``torch.split`` and cat ("split", as PLKSR's
    training path does)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class PartialConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.mix = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1)
            self.lk, self.refine, self.last = (
                nn.Conv2d(2, 2, 5, 1, 2),
                nn.Conv2d(8, 8, 1),
                nn.Conv2d(8, 3, 3, 1, 1),
            )

        def forward(self, x):
            x = self.first(x)
            skip = x
            x = torch.relu(self.mix(x))
            if in_place == "split":
                head, tail = torch.split(x, [2, 6], dim=1)
                x = torch.cat([self.lk(head), tail], dim=1)
            elif in_place:
                x[:, :2] = self.lk(x[:, :2])
            else:
                x = torch.cat([self.lk(x[:, :2]), x[:, 2:]], dim=1)
            return self.last(self.refine(x) + skip)

    torch.manual_seed(0)
    return PartialConv().eval()


@pytest.mark.parametrize("dynamic_hw", [False, True])
@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_in_place_and_split_partial_conv_give_the_same_model(exporter, dynamic_hw):
    from etc.frontends.torch import export

    optimized = []
    for form in (True, False, "split"):
        model = export(partial_conv_net(form), exporter=exporter, dynamic_hw=dynamic_hw)
        assert ("ScatterND" in ops(model)) == (form is True)
        assert ("Split" in ops(model)) == (form == "split")
        result = run_pipeline(model, "fold,rep,et", instruments=[NumericCheck(atol=1e-5)])
        assert_equivalent(model, result.model)
        optimized.append(result.model)
    in_place = optimized[0]
    assert "ScatterND" not in ops(in_place) and "Concat" not in ops(in_place)
    for other in optimized[1:]:
        assert ops(in_place) == ops(other), (ops(in_place), ops(other))
        for got, want in zip(conv_kernels(in_place), conv_kernels(other)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-6)
