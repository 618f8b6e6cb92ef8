"""fold_clip: Clip(Clip(x)) and Clip(Relu(x)) become one Clip when the intervals meet; never when disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from etc.frontends.torch import export
from etc.passes.fold_clip import rules as clip_rules
from etc.testing import apply_pass, assert_equivalent, op_types, reasons, run_family, text_model

INIT = {
    "w": np.random.default_rng(7).normal(size=(4, 3, 3, 3)).astype(np.float32),
    "b": np.random.default_rng(8).normal(size=4).astype(np.float32),
}
CONV = "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n"
RANGE = {"input": (-1.0, 1.0)}


def f32(value: float) -> np.ndarray:
    return np.array(value, np.float32)


@pytest.mark.parametrize(
    ("body", "bounds", "expected"),
    [
        ("i = Clip(c, lo)\noutput = Clip(i, , hi)", {"lo": f32(0), "hi": f32(1)}, (0.0, 1.0)),
        (
            "i = Clip(c, lo, hi)\noutput = Clip(i, lo2, hi2)",
            {"lo": f32(-2), "hi": f32(1), "lo2": f32(-1), "hi2": f32(3)},
            (-1.0, 1.0),
        ),
        ("i = Relu(c)\noutput = Clip(i, lo, hi)", {"lo": f32(-1), "hi": f32(0.5)}, (0.0, 0.5)),
        ("i = Clip(c, lo, hi)\noutput = Clip(i, lo, hi)", {"lo": f32(0.5), "hi": f32(0.5)}, (0.5, 0.5)),
    ],
    ids=["clamp-min-then-max", "overlapping", "relu-then-clip", "touching-point"],
)
def test_nested_clamps_become_one_clip(body, bounds, expected):
    m = text_model(CONV + body, **INIT, **bounds)
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv", "Clip"]
    assert result.hits["clip_clip"] == 1
    clip = result.model.graph.node[1]
    values = {i.name: i for i in result.model.graph.initializer}
    low, high = (float(np.frombuffer(values[n].raw_data, np.float32)[0]) for n in clip.input[1:3])
    assert (low, high) == expected
    assert_equivalent(m, result.model, input_ranges=RANGE)


def test_disjoint_intervals_stay_nested_with_the_reason():
    m = text_model(
        CONV + "i = Clip(c, lo, hi)\noutput = Clip(i, lo2, hi2)",
        **INIT,
        lo=f32(-1),
        hi=f32(0),
        lo2=f32(0.5),
        hi2=f32(1),
    )
    model, hits, declines = run_family(m, clip_rules)
    assert op_types(model) == ["Conv", "Clip", "Clip"]
    assert "clip_clip" not in hits
    assert any("disjoint" in r for r in reasons(declines, "clip_clip"))
    assert_equivalent(m, model, input_ranges=RANGE)


def test_inner_clip_with_another_reader_stays():
    m = text_model(
        CONV + "i = Clip(c, lo, hi)\nj = Clip(i, lo, hi2)\nk = Relu(i)\noutput = Add(j, k)",
        **INIT,
        lo=f32(0),
        hi=f32(1),
        hi2=f32(0.5),
    )
    _, hits, declines = run_family(m, clip_rules)
    assert "clip_clip" not in hits
    assert any("other readers" in r for r in reasons(declines, "clip_clip"))


def test_bound_computed_at_run_time_stays():
    m = text_model(
        CONV + "i = Relu(c)\nhi = ReduceMax <keepdims = 0> (c)\noutput = Clip(i, lo, hi)", **INIT, lo=f32(0)
    )
    _, hits, declines = run_family(m, clip_rules)
    assert "clip_clip" not in hits
    assert any("run time" in r for r in reasons(declines, "clip_clip"))


class ClampedHead(nn.Module):
    """``x.clamp(min=0).clamp(max=1)`` after a conv, as PyTorch code often writes a [0, 1] clamp."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).clamp(min=0).clamp(max=1)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_exported_two_step_clamp_becomes_one_clip(exporter):
    torch.manual_seed(0)
    model = export(ClampedHead().eval(), exporter=exporter, dynamic_hw=True)
    result = apply_pass(model, "fold")
    assert op_types(result.model).count("Clip") == 1
    assert_equivalent(model, result.model)
