"""etc.fusion: onnxruntime's optimized graph, counted (what the runtime fuses decides CPU latency)."""

from __future__ import annotations

import numpy as np

from etc.fusion import optimized_graph, optimized_model
from tests.fold_helpers import graph


def _residual(rng, extra_reader: bool):
    """Conv -> Conv + skip (static shapes: onnxruntime fuses the Add only where it can prove both shapes equal)."""
    body = "x = Conv(input, w0, b)\nc = Conv <pads = [1, 1, 1, 1]> (x, w, b)\na = Add(c, x)\n"
    body += "output = Mul(a, c)" if extra_reader else "output = Relu(a)"
    return graph(
        body,
        inputs="float[1,8,16,16] input",
        outputs="float[1,8,16,16] output",
        w0=rng.normal(size=(8, 8, 1, 1)).astype(np.float32),
        w=rng.normal(size=(8, 8, 3, 3)).astype(np.float32),
        b=rng.normal(size=8).astype(np.float32),
    )


def test_conv_add_relu_is_one_fused_conv(rng):
    g = optimized_graph(_residual(rng, extra_reader=False))
    assert g.fused_conv == 1
    assert g.ops["Add"] == g.ops["Relu"] == 0


def test_a_conv_output_read_twice_keeps_its_add(rng):
    g = optimized_graph(_residual(rng, extra_reader=True))
    assert g.fused_conv == 0
    assert g.ops["Add"] == 1


def test_the_erf_gelu_chain_is_one_gelu_at_the_extended_and_all_levels(rng):
    model = graph(
        "c = Conv(input, w, b)\ns = Div(c, k)\ne = Erf(s)\na = Add(e, one)\nm = Mul(c, a)\noutput = Mul(m, half)",
        w=rng.normal(size=(4, 3, 1, 1)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=np.array(np.sqrt(2.0), np.float32),
        one=np.array(1.0, np.float32),
        half=np.array(0.5, np.float32),
    )
    assert optimized_graph(model, level="basic").gelu == 0
    assert optimized_graph(model, level="extended").gelu == 1
    assert optimized_graph(model).gelu == 1
    assert any(n.domain == "com.microsoft" for n in optimized_model(model).graph.node)
