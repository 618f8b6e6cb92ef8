"""Per-layer sensitivity: how much of the INT8 model's output error each quantized Conv causes.

For every quantized Conv, the QDQ model is rebuilt with that Conv alone kept float (its FP32 weights and bias,
no Q/DQ pair on its output, as ``--exclude`` does) and its output is compared with the FP32 model's on
held-out patches. The gain in output PSNR over the all-INT8 model says which layers to keep float first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from etc import proto
from etc.quant import observe, qdq


@dataclass
class LayerSensitivity:
    """One quantized Conv (node name, output tensor): the output PSNR (dB, against FP32, peak 1) with it kept
    float, and the gain over the all-INT8 model."""

    node: str
    tensor: str
    psnr_float: float
    gain_db: float

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "tensor": self.tensor,
            "psnr_float": self.psnr_float,
            "gain_db": self.gain_db,
        }


def output_psnr(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], reference) -> float:
    """PSNR (peak 1) of ``model``'s first output against ``reference`` (one array per feed); inf if equal."""
    name = model.graph.output[0].name
    errors = [
        float(np.mean((values[name].astype(np.float64) - ref) ** 2))
        for values, ref in zip(observe.run_tensors(model, feeds, [name]), reference)
    ]
    mse = float(np.mean(errors)) if errors else 0.0
    return float("inf") if mse == 0 else float(-10.0 * np.log10(mse))


def layer_sensitivity(
    float_model: onnx.ModelProto,
    model: onnx.ModelProto,
    plan: qdq.Plan,
    ranges: Mapping[str, tuple[float, float]],
    build: Mapping,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    exclude: frozenset[str] = frozenset(),
    progress: Callable[[int], None] | None = None,
) -> tuple[float, list[LayerSensitivity]]:
    """(all-INT8 output PSNR, one row per quantized Conv sorted by gain, largest first).

    ``float_model`` holds the FP32 weights, ``model`` the rounded ones that ``build_qdq(model, plan, ranges,
    **build)`` quantizes; both name their Convs alike."""
    out_name = float_model.graph.output[0].name
    reference = [v[out_name].astype(np.float64) for v in observe.run_tensors(float_model, feeds, [out_name])]
    base = output_psnr(qdq.build_qdq(model, plan, ranges, **build), feeds, reference)
    fp32 = qdq.constants(float_model)
    rows = []
    for conv in proto.nodes_named(model, plan.convs):
        kept = onnx.ModelProto()
        kept.CopyFrom(model)
        for name in conv.input[1:]:
            if name in fp32:
                proto.set_initializer(kept, name, fp32[name])
        partial = qdq.plan_qdq(kept, exclude | {conv.name})
        psnr = output_psnr(qdq.build_qdq(kept, partial, ranges, **build), feeds, reference)
        rows.append(LayerSensitivity(conv.name, conv.output[0], psnr, psnr - base))
        if progress:
            progress(1)
    rows.sort(key=lambda r: (-r.gain_db if np.isfinite(r.gain_db) else -np.inf, r.node))
    return base, rows
