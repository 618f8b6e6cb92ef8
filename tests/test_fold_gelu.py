"""fold_gelu: the dynamo exporter's erf GELU (``x * (0.5 * (1 + erf(x / √2)))``) becomes the order onnxruntime
fuses into one Gelu; equivalent in onnxruntime with optimizations off; declined when a constant is not GELU's."""

from __future__ import annotations

import numpy as np
import pytest

from etc.fusion import optimized_graph
from etc.pipeline import PassContext
from etc.testing import apply_pass, assert_equivalent, ops, reasons
from tests.fold_helpers import graph

SQRT2 = np.float32(np.sqrt(2.0))


def _gelu(rng, sqrt2=SQRT2, one=1.0, half=0.5, scale_op="Div"):
    scale = sqrt2 if scale_op == "Div" else np.float32(1.0) / sqrt2
    return graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n"
        f"s = {scale_op}(c, k)\ne = Erf(s)\na = Add(e, one)\nh = Mul(half, a)\ng = Mul(c, h)\n"
        "output = Conv(g, w2, b2)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        w2=rng.normal(size=(4, 4, 1, 1)).astype(np.float32),
        b2=rng.normal(size=4).astype(np.float32),
        k=np.array(scale, np.float32),
        one=np.array(one, np.float32),
        half=np.array(half, np.float32),
    )


def test_half_first_gelu_is_reordered_and_fused_by_onnxruntime(rng):
    model = _gelu(rng)
    result = apply_pass(model, "fold")
    assert result.hits == {"gelu_half_last": 1}
    assert ops(result.model) == ["Conv", "Div", "Erf", "Add", "Mul", "Mul", "Conv"]
    assert optimized_graph(model).gelu == 0
    assert optimized_graph(result.model).gelu == 1
    assert_equivalent(model, result.model, atol=0, rtol=0)  # bit-exact: scaling by 0.5 is exact


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"half": 0.25}, "the constants are not GELU's"),
        ({"one": 2.0}, "the constants are not GELU's"),
        ({"sqrt2": np.float32(1.5)}, "the constants are not GELU's"),
        ({"scale_op": "Mul"}, "onnxruntime fuses no Gelu from this form"),
    ],
    ids=["half", "one", "sqrt2", "times-inverse-sqrt2"],
)
def test_other_forms_are_declined_with_the_reason(rng, change, reason):
    """Not GELU's constants, or x * (1/√2), which onnxruntime does not fuse in either order."""
    model = _gelu(rng, **change)
    ctx = PassContext()
    result = apply_pass(model, "fold", ctx=ctx)
    assert "gelu_half_last" not in result.hits
    assert ops(result.model) == ops(model)
    assert any(reason in r for r in reasons(ctx.declines, "gelu_half_last")), ctx.declines


def test_an_intermediate_read_elsewhere_is_declined(rng):
    model = graph(
        "c = Conv(input, w, b)\ns = Div(c, k)\ne = Erf(s)\na = Add(e, one)\nh = Mul(half, a)\ng = Mul(c, h)\n"
        "output = Add(g, a)",
        w=rng.normal(size=(4, 3, 1, 1)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=np.array(SQRT2, np.float32),
        one=np.array(1.0, np.float32),
        half=np.array(0.5, np.float32),
    )
    ctx = PassContext()
    result = apply_pass(model, "fold", ctx=ctx)
    assert ops(result.model) == ops(model)
    assert "an intermediate of the GELU chain is also read elsewhere" in reasons(
        ctx.declines, "gelu_half_last"
    )
