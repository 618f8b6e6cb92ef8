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
        dense[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = weight[
            g * per_out : (g + 1) * per_out
        ]
    return dense


def selection_kernel(source_of: list[int] | np.ndarray, in_ch: int) -> np.ndarray:
    """1x1 kernel copying input channel ``source_of[o]`` to output o (a 0/1 matrix)."""
    source_of = np.asarray(source_of, dtype=np.int64)
    out = np.zeros((len(source_of), in_ch, 1, 1), dtype=np.float64)
    out[np.arange(len(source_of)), source_of, 0, 0] = 1.0
    return out


def dense_to_grouped(weight: np.ndarray, group: int) -> np.ndarray:
    """A dense kernel (out, in, kh, kw) as a grouped one (out, in/group, kh, kw); off-block taps must be zero."""
    if group == 1:
        return weight.astype(np.float64)
    out_ch, in_ch = weight.shape[:2]
    if out_ch % group or in_ch % group:
        raise ValueError(f"{out_ch}x{in_ch} kernel cannot be split into {group} groups")
    per_out, per_in = out_ch // group, in_ch // group
    blocks = [weight[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] for g in range(group)]
    grouped = np.concatenate(blocks, axis=0).astype(np.float64)
    if not np.allclose(grouped_to_dense(grouped, group), weight, rtol=0.0, atol=0.0):
        raise ValueError(f"kernel is not block-diagonal for {group} groups")
    return grouped


def regroup(weight: np.ndarray, group_from: int, group_to: int) -> np.ndarray:
    """A grouped kernel re-expressed with ``group_to`` groups (``group_to`` must divide ``group_from``)."""
    if group_from == group_to:
        return weight.astype(np.float64)
    if group_from % group_to:
        raise ValueError(f"{group_from} groups cannot be expressed as {group_to} groups")
    return dense_to_grouped(grouped_to_dense(weight, group_from), group_to)


def embed_kernel(weight: np.ndarray, kh: int, kw: int, top: int, left: int) -> np.ndarray:
    """Places a kernel at tap offset (top, left) inside a zero kh x kw kernel."""
    h, w = weight.shape[2:]
    if top < 0 or left < 0 or top + h > kh or left + w > kw:
        raise ValueError(f"a {h}x{w} kernel at ({top}, {left}) does not fit in {kh}x{kw}")
    out = np.zeros((*weight.shape[:2], kh, kw), dtype=np.float64)
    out[:, :, top : top + h, left : left + w] = weight
    return out


def compose_kernels(
    w0: np.ndarray, b0: np.ndarray, w1: np.ndarray, b1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dense Conv(W0, b0) (stride 1, no dilation) then dense Conv(W1, b1) with no padding between them.

    Cross-correlations compose: W[o, i, u] = Σ_m Σ_{s+t=u} W1[o, m, s]·W0[m, i, t] (a (k0+k1-1) kernel) and
    b = b1 + Σ_{m,s} W1[o, m, s]·b0[m]. With a 1x1 on either side this is the usual per-tap matrix product.
    """
    k1h, k1w = w1.shape[2:]
    k0h, k0w = w0.shape[2:]
    w0 = w0.astype(np.float64)
    w1 = w1.astype(np.float64)
    weight = np.zeros((w1.shape[0], w0.shape[1], k0h + k1h - 1, k0w + k1w - 1), dtype=np.float64)
    for sh in range(k1h):
        for sw in range(k1w):
            weight[:, :, sh : sh + k0h, sw : sw + k0w] += np.einsum("om,mihw->oihw", w1[:, :, sh, sw], w0)
    bias = b1.astype(np.float64) + np.einsum("omhw,m->o", w1, b0.astype(np.float64))
    return weight, bias
