"""The float64 second opinion: onnx's reference evaluator with vectorized Conv and MaxPool kernels.

A float32 comparison that fails only by summation order asks what the model computes in float64
(:func:`etc.runtime.within_rounding`). onnxruntime has no float64 Conv, and the reference evaluator's own Conv
and MaxPool loop in Python (about 2 s for a 64-conv net at 128x128). The two kernels here compute the same
values with one BLAS contraction per tap, grouped convs kept grouped; any case they do not cover (auto_pad,
ceil_mode, 1-D or 3-D, a second MaxPool output) falls back to the reference implementation.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.ops.op_conv import Conv as _ReferenceConv
from onnx.reference.ops.op_max_pool import MaxPool as _ReferenceMaxPool


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    pads: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    group: int,
) -> np.ndarray:
    """ONNX Conv on NCHW ``x`` with weight (out, in/group, kh, kw) and pads (top, left, bottom, right)."""
    n, c, _, _ = x.shape
    out_ch, per_in, kh, kw = w.shape
    top, left, bottom, right = pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = strides, dilations
    oh = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
    grouped = padded.reshape(n, group, c // group, *padded.shape[2:])
    weight = w.reshape(group, out_ch // group, per_in, kh, kw)
    taps = [
        grouped[:, :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    columns = np.stack(taps, axis=3).reshape(n, group, (c // group) * kh * kw, oh * ow)
    out = np.matmul(weight.reshape(group, out_ch // group, per_in * kh * kw), columns)
    out = out.reshape(n, out_ch, oh, ow)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def max_pool2d(
    x: np.ndarray,
    kernel: tuple[int, int],
    pads: tuple[int, int, int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """ONNX MaxPool (floor mode) on NCHW ``x``; padding never wins the max."""
    top, left, bottom, right = pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.full((*x.shape[:2], oh, ow), -np.inf, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[
                :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw
            ]
            np.maximum(out, window, out=out)
    return out


def _pair(values, default: int) -> tuple[int, int]:
    return (default, default) if values is None else (int(values[0]), int(values[1]))


def _pads(values) -> tuple[int, int, int, int]:
    if values is None:
        return (0, 0, 0, 0)
    return (int(values[0]), int(values[1]), int(values[2]), int(values[3]))


class Conv(_ReferenceConv):
    """Reference Conv with :func:`conv2d` for explicit-padding 2-D convs."""

    def _run(
        self,
        X,
        W,
        B=None,
        auto_pad=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        pads=None,
        strides=None,
    ):
        explicit = auto_pad in (None, "NOTSET", b"NOTSET")
        if (
            X.ndim != 4
            or W.ndim != 4
            or not explicit
            or (kernel_shape is not None and tuple(kernel_shape) != W.shape[2:])
        ):
            return super()._run(
                X,
                W,
                B,
                auto_pad=auto_pad,
                dilations=dilations,
                group=group,
                kernel_shape=kernel_shape,
                pads=pads,
                strides=strides,
            )
        out = conv2d(X, W, B, _pads(pads), _pair(strides, 1), _pair(dilations, 1), int(group or 1))
        return (out.astype(X.dtype, copy=False),)


class MaxPool(_ReferenceMaxPool):
    """Reference MaxPool with :func:`max_pool2d` for floor-mode, explicit-padding 2-D pools."""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,  # type: ignore[override]
        storage_order=None,
        strides=None,
    ):
        simple = auto_pad in (None, "NOTSET", b"NOTSET") and not ceil_mode and len(self.output) == 1
        if x.ndim != 4 or not simple or kernel_shape is None or len(kernel_shape) != 2:
            return super()._run(
                x,
                auto_pad=auto_pad,
                ceil_mode=ceil_mode,
                dilations=dilations,
                kernel_shape=kernel_shape,
                pads=pads,
                storage_order=storage_order,
                strides=strides,
            )
        out = max_pool2d(x, _pair(kernel_shape, 1), _pads(pads), _pair(strides, 1), _pair(dilations, 1))
        return (out,)


FAST_OPS = [Conv, MaxPool]
