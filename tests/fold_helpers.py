"""The fold tests' names for the text builder (etc.testing.text_model) and small weight helpers."""

from __future__ import annotations

import numpy as np
import onnx

from etc.testing import text_model

graph = text_model  # the fold tests' name for it


def conv_inits(
    rng: np.random.Generator, out_ch: int = 4, in_ch: int = 3, k: int = 3
) -> dict[str, np.ndarray]:
    return {
        "w": rng.normal(size=(out_ch, in_ch, k, k)).astype(np.float32),
        "b": rng.normal(size=out_ch).astype(np.float32),
    }


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}
