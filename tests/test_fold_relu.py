"""fold_relu: Relu(Relu), Max(x, 0) and Clip(x, 0, inf) become one Relu."""

from __future__ import annotations

import numpy as np
import pytest

from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph

INIT = {
    "w": np.random.default_rng(5).normal(size=(4, 3, 3, 3)).astype(np.float32),
    "b": np.zeros(4, np.float32),
}
RANGE = {"input": (-1.0, 1.0)}


@pytest.mark.parametrize(
    ("rule", "body", "extra"),
    [
        ("relu_relu", "r = Relu(c)\noutput = Relu(r)", {}),
        ("max_zero", "output = Max(c, zero)", {"zero": np.float32(0.0)}),
        ("max_zero", "output = Max(zero, c)", {"zero": np.float32(0.0)}),
        ("clip_zero_inf", "output = Clip(c, zero)", {"zero": np.float32(0.0)}),
        (
            "clip_zero_inf",
            "output = Clip(c, zero, big)",
            {"zero": np.float32(0.0), "big": np.float32(np.inf)},
        ),
    ],
)
def test_relu_spellings_become_relu(rule, body, extra):
    m = graph("c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n" + body, **INIT, **extra)
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv", "Relu"]
    assert result.hits[rule] == 1
    assert_equivalent(m, result.model, input_ranges=RANGE)


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        ("output = Max(c, half)", {"half": np.float32(0.5)}),
        ("output = Clip(c, zero, one)", {"zero": np.float32(0.0), "one": np.float32(1.0)}),
        ("output = Max(c, zeros)", {"zeros": np.zeros((1, 1, 1, 1, 1), np.float32)}),
    ],
    ids=["max-nonzero", "clip-bounded", "max-higher-rank"],
)
def test_non_relus_stay(body, extra):
    outputs = "float[1,1,4,H,W] output" if "zeros" in extra else "float[1,4,H,W] output"
    m = graph("c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n" + body, outputs=outputs, **INIT, **extra)
    result = apply_pass(m, "fold")
    assert "Relu" not in op_types(result.model)
