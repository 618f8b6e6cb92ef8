"""Tiny graph builders for the fold tests."""

from __future__ import annotations

import numpy as np
import onnx

from etc.testing import model_from_text

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def graph(body: str, inputs: str = "float[1,3,H,W] input", outputs: str = "float[1,4,H,W] output", **inits):
    """A model from ONNX text with float32/int64 initializers given as keyword arrays."""
    text = f"{HEADER}\ng ({inputs}) => ({outputs}) {{\n{body}\n}}"
    return model_from_text(text, {k: np.asarray(v) for k, v in inits.items()})


def conv_inits(
    rng: np.random.Generator, out_ch: int = 4, in_ch: int = 3, k: int = 3
) -> dict[str, np.ndarray]:
    return {
        "w": rng.normal(size=(out_ch, in_ch, k, k)).astype(np.float32),
        "b": rng.normal(size=out_ch).astype(np.float32),
    }


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}
