"""Error-compensating weight rounding (GPTQ / optimal brain quantization, one Conv at a time).

Rounding every weight to the nearest int8 level makes the error of output channel o equal to δW_o·X, where X
is the im2col matrix of the Conv's input. What matters is E[(δW_o·X)²] = δW_o H δW_oᵀ with H = E[X Xᵀ]. On the
carried image channels of plain SR nets X is smooth and highly correlated, so nearest rounding leaves a large
low-frequency error. Quantizing the columns in order and spreading each column's rounding error over the
columns not yet quantized through the inverse Hessian (Frantar et al., 2022) minimises that energy::

    for i in columns:  q_i = Q(w_i);  e = (w_i - q_i) / U_ii;  w_{j>i} -= e · U_{i,j>i}     (U = chol(H⁻¹)ᵀ)

The int8 grid (per-channel scales) is fixed beforehand, so the result is still a plain per-channel int8
weight; only which level each weight rounds to changes. H comes from the Conv's input on calibration data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def im2col(
    x: np.ndarray, kernel: tuple[int, int], pads: tuple[int, int, int, int], step: int = 2
) -> np.ndarray:
    """(N, C, H, W) -> (C·kh·kw, positions) for a stride-1, dilation-1 Conv, every ``step``-th output row and
    column; rows ordered like W.reshape(O, -1)."""
    top, left, bottom, right = pads
    n, c, h, w = x.shape
    kh, kw = kernel
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = h + top + bottom - kh + 1, w + left + right - kw + 1
    sh, sw = len(range(0, oh, step)), len(range(0, ow, step))
    cols = np.empty((c, kh, kw, n, sh, sw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, :, i : i + oh : step, j : j + ow : step].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, -1)


def hessian(
    inputs: Iterable[np.ndarray], kernel: tuple[int, int], pads: tuple[int, int, int, int], step: int = 2
) -> np.ndarray:
    """E[X Xᵀ] over every ``step``-th output position of the calibration inputs (one float32 product)."""
    cols = [im2col(x.astype(np.float32), kernel, pads, step) for x in inputs]
    assert cols, "no calibration inputs"
    allc = np.concatenate(cols, axis=1)
    return (allc @ allc.T).astype(np.float64) / max(allc.shape[1], 1)


def gptq_round(
    weight: np.ndarray, scales: np.ndarray, h: np.ndarray, damp: float = 0.01, qmax: int = 127
) -> np.ndarray:
    """int8 weights on the grid ``scales`` (one per output channel) minimising δW H δWᵀ greedily."""
    out_ch = weight.shape[0]
    w = weight.reshape(out_ch, -1).astype(np.float64).copy()
    k = w.shape[1]
    h = h.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += np.eye(k) * damp * float(np.mean(np.diag(h)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper triangular, H⁻¹ = Uᵀ U
    except np.linalg.LinAlgError:
        return np.clip(np.round(w / scales[:, None]), -qmax, qmax).astype(np.int8).reshape(weight.shape)
    s = scales.astype(np.float64)
    q = np.zeros_like(w)
    for i in range(k):
        qi = np.clip(np.round(w[:, i] / s), -qmax, qmax)
        q[:, i] = qi
        err = (w[:, i] - qi * s) / u[i, i]
        w[:, i + 1 :] -= np.outer(err, u[i, i + 1 :])
    return q.astype(np.int8).reshape(weight.shape)
