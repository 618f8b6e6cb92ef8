"""Weight algebra shared by the rule families (pure numpy, float64 in, float64 out).

Kernels are (out, in/group, kh, kw) as in ONNX Conv. Every function is exact algebra; the exactness
conditions about borders and padding belong to the rules that call them.
"""

from __future__ import annotations

import numpy as np


def pad_kernel(weight: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Zero-pads a kernel symmetrically to kh x kw (both larger or equal, same parity)."""
    h, w = weight.shape[2:]
    if (kh - h) % 2 or (kw - w) % 2 or kh < h or kw < w:
        raise ValueError(f"cannot centre a {h}x{w} kernel in {kh}x{kw}")
    top, left = (kh - h) // 2, (kw - w) // 2
    out = np.zeros((*weight.shape[:2], kh, kw), dtype=np.float64)
    out[:, :, top : top + h, left : left + w] = weight
    return out


def identity_kernel(channels: int, kh: int = 1, kw: int = 1, group: int = 1) -> np.ndarray:
    """The kernel of y = x: 1 at the centre tap of channel i -> i (in/group columns per output)."""
    per_group = channels // group
    out = np.zeros((channels, per_group, kh, kw), dtype=np.float64)
    for o in range(channels):
        out[o, o % per_group, kh // 2, kw // 2] = 1.0
    return out


def grouped_to_dense(weight: np.ndarray, group: int) -> np.ndarray:
    """A grouped kernel (out, in/g, kh, kw) as the equivalent dense kernel (out, in, kh, kw)."""
    if group == 1:
        return weight.astype(np.float64)
    out_ch, per_in = weight.shape[:2]
    per_out = out_ch // group
    dense = np.zeros((out_ch, per_in * group, *weight.shape[2:]), dtype=np.float64)
    for g in range(group):
        dense[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = weight[g * per_out : (g + 1) * per_out]
    return dense


def selection_kernel(source_of: list[int] | np.ndarray, in_ch: int) -> np.ndarray:
    """1x1 kernel copying input channel ``source_of[o]`` to output o (a 0/1 matrix)."""
    source_of = np.asarray(source_of, dtype=np.int64)
    out = np.zeros((len(source_of), in_ch, 1, 1), dtype=np.float64)
    out[np.arange(len(source_of)), source_of, 0, 0] = 1.0
    return out


def then_1x1(w0: np.ndarray, b0: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conv(W0, b0) followed by a dense 1x1 Conv(W1, b1): W = K1·K0 per tap, b = K1·b0 + b1. Always exact."""
    k1 = w1[:, :, 0, 0].astype(np.float64)
    weight = np.einsum("om,mihw->oihw", k1, w0.astype(np.float64))
    bias = k1 @ b0.astype(np.float64) + b1.astype(np.float64)
    return weight, bias


def scale_rows(weight: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None):
    """Per-output-channel affine after a conv: (s·W, s·b + t)."""
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    w = weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    b = bias.astype(np.float64) * scale
    if shift is not None:
        b = b + np.asarray(shift, dtype=np.float64).reshape(-1)
    return w, b
