"""The QDQ form made for Qualcomm HTP's arithmetic (``target="htp"``).

What HTP (onnxruntime-qnn 2.7.0's simulator) computes differently from the QDQ graph in exact arithmetic,
measured with small QDQ graphs against onnxruntime CPU (optimizations off) and by exposing every quantized
tensor of real models (bench/RESULTS.md, "htp: the quantizer's target"):

* PReLU with a float slope: QNN groups ``DequantizeLinear -> PRelu -> QuantizeLinear`` into one quantized op
  only when the slope is itself a ``DequantizeLinear`` of a **uint8 per-tensor** grid. A float slope, an int8
  slope or a uint16 slope next to uint8 activations leaves the PReLU in float between a standalone Dequantize
  and Quantize: 7.3x the cycles of ECBSR_ET x4 (32x32) and the first PReLU output already 4 steps off (21% of
  its values), 1.99 dB lost on HTP against 0.59 on CPU. A per-channel slope grid is refused ("Failed to compose
  Qnn graph"). So the slopes are put on one uint8 grid per PReLU (zero exact) *before* calibration, and every
  later step (ranges, refit, bias correction) sees the slopes HTP will use; the graph stores them as
  ``DequantizeLinear(uint8)``, which computes the same float32 values on the CPU.
* 8-bit requantization (Conv -> [Relu] -> uint8): HTP rounds down 4-5% of the outputs whose exact value has a
  fraction in [0.5, 0.61) (never up where exact rounding goes down), whatever the scales, zero point, bias or
  ReLU; on uniformly spread fractions the mean error is -0.03 to -0.05 of an output step. It is not the
  multiplier's precision (multipliers exactly representable in float16 change nothing in 8 bits). A constant
  shift of :data:`ROUNDING_SHIFT` output steps added to every Conv's int32 bias cancels the mean and halves the
  disagreements (4.5% -> 2.6% of values); the CPU then computes that shift (measured, the same order).
* 16-bit requantization (A16W8 Conv): HTP multiplies by the requantization multiplier ``M = s_x·s_w/s_y``
  rounded to float16 (per-channel errors fitted within 1e-5 of ``fp16(M)/M - 1``), and the error applies to the
  stored value including its zero point: up to 2^-11·65535 = 32 steps of 16 bits. :func:`fp16_exact_scales`
  chooses weight scales whose multipliers are float16 numbers, so HTP's multiplier is the exact one.
* Exact on HTP: LeakyReLU and data movement (DepthToSpace). Not compensated: an Add of two uint8 tensors rounds
  up 2.4% of its outputs by one step, a uint16 -> uint8 Convert 0.6%.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

SLOPE_QMAX = 255
# Output steps added to every 8-bit Conv's bias: HTP's mean rounding error is -0.03 .. -0.05 step.
ROUNDING_SHIFT = 0.04


def slope_grid(alpha: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(uint8 codes, scale, zero point) of one PReLU's slopes on a per-tensor grid covering [min, max] and 0: the
    grid of etc.quant.qdq.act_params, computed here because qdq imports this module (no import cycle)."""
    a = np.asarray(alpha, dtype=np.float64)
    lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    if hi - lo <= 0:
        return np.zeros(a.shape, np.uint8), np.float32(1.0), np.uint8(0)
    scale = np.float32((hi - lo) / SLOPE_QMAX)
    zero = int(np.clip(np.round(-lo / float(scale)), 0, SLOPE_QMAX))
    codes = np.clip(np.round(a / float(scale)) + zero, 0, SLOPE_QMAX).astype(np.uint8)
    return codes, scale, np.uint8(zero)


def grid_values(codes: np.ndarray, scale: np.float32, zero: np.uint8) -> np.ndarray:
    """The float32 values ``DequantizeLinear`` computes from a slope grid: (q - z)·s in float32."""
    return (codes.astype(np.int32) - int(zero)).astype(np.float32) * np.float32(scale)


def prelu_slopes(model: onnx.ModelProto) -> dict[str, str]:
    """{PRelu node name: its slope initializer} for every PRelu whose slope is an initializer."""
    inits = {i.name for i in model.graph.initializer}
    return {
        n.name: n.input[1]
        for n in model.graph.node
        if n.op_type == "PRelu" and len(n.input) > 1 and n.input[1] in inits
    }


def snap_slopes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(copy of ``model`` with every PRelu slope initializer replaced by its uint8 grid values, slopes moved).

    Not exact: each slope moves by at most half a grid step ((max - min) / 510)."""
    slopes = set(prelu_slopes(model).values())
    if not slopes:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    moved = 0
    for init in out.graph.initializer:
        if init.name in slopes:
            alpha = numpy_helper.to_array(init)
            snapped = grid_values(*slope_grid(alpha)).astype(alpha.dtype)
            moved += int(np.any(snapped != alpha))
            init.CopyFrom(numpy_helper.from_array(snapped, init.name))
    return out, moved


def shifted_bias(qbias: np.ndarray, bias_scale: np.ndarray, out_scale: float, shift: float) -> np.ndarray:
    """The int32 bias moved by ``shift`` output steps (``out_scale`` each) on its grid (``bias_scale``)."""
    step = float(out_scale) / np.asarray(bias_scale, dtype=np.float64)
    moved = np.round(qbias.astype(np.float64) + shift * step)
    return np.clip(moved, -(2**31) + 1, 2**31 - 1).astype(np.int32)


def fp16_exact_scales(weight_scales: np.ndarray, in_scale: float, out_scale: float) -> np.ndarray:
    """Weight scales near ``weight_scales`` whose multipliers s_x·s_w/s_y are float16 numbers: the multiplier
    HTP uses, rounded to nearest as HTP rounds it (rounding every multiplier up instead grows a channel carried
    through many convs by up to 2^-11 per conv: measured worse on ETDS). The int8 codes of weights on the old
    grid do not change (|q|·2^-11 < 0.5)."""
    exact = float(in_scale) * np.asarray(weight_scales, dtype=np.float64) / float(out_scale)
    m16 = exact.astype(np.float16)
    return (m16.astype(np.float64) * float(out_scale) / float(in_scale)).astype(np.float32)
