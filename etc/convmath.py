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
    rows = np.arange(channels)
    out[rows, rows % per_group, kh // 2, kw // 2] = 1.0
    return out


def grouped_to_dense(weight: np.ndarray, group: int) -> np.ndarray:
    """A grouped kernel (out, in/g, kh, kw) as the equivalent dense kernel (out, in, kh, kw)."""
    if group == 1:
        return weight.astype(np.float64)
    out_ch, per_in = weight.shape[:2]
    per_out = out_ch // group
    taps = weight.shape[2:]
    dense = np.zeros((group, per_out, group, per_in, *taps), dtype=np.float64)
    blocks = np.arange(group)
    dense[blocks, :, blocks] = weight.reshape(group, per_out, per_in, *taps)
    return dense.reshape(out_ch, group * per_in, *taps)


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
    taps = weight.shape[2:]
    split = np.asarray(weight, dtype=np.float64).reshape(group, per_out, group, per_in, *taps)
    blocks = np.arange(group)
    grouped = split[blocks, :, blocks].reshape(out_ch, per_in, *taps)
    off_block = split.copy()
    off_block[blocks, :, blocks] = 0.0
    if np.any(off_block):
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
    return compose_grouped(w0, 1, b0, w1, 1, b1)[:2]


def composed_group(mid: int, group0: int, group1: int) -> int:
    """The groups of the composition of a conv with ``group0`` groups (mid output channels) and one with
    ``group1`` groups: equal groups stay, a depthwise side takes the other's groups, anything else is dense."""
    if group0 == group1:
        return group0
    if group0 == mid:
        return group1
    if group1 == mid:
        return group0
    return 1


def compose_grouped(
    w0: np.ndarray,
    group0: int,
    b0: np.ndarray,
    w1: np.ndarray,
    group1: int,
    b1: np.ndarray,
    group: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Grouped Conv(W0, b0) (``group0`` groups, stride 1, no dilation) then grouped Conv(W1, b1): the one conv
    (kernel, bias, groups), as :func:`compose_kernels` computes it densely. The kernel has ``group`` groups
    when given (a divisor of :func:`composed_group`'s), else ``composed_group``'s.

    Equal groups compose block by block (one batched matrix product over the mid channels of a group); a
    depthwise side multiplies the other's taps channel by channel (no contraction, no dense kernel); other
    groupings are made dense first. Taps combine as outer products placed at s + t by 0/1 placement matrices.
    """
    w0 = np.asarray(w0, dtype=np.float64)
    w1 = np.asarray(w1, dtype=np.float64)
    mid, out = w0.shape[0], w1.shape[0]
    natural = composed_group(mid, group0, group1)
    if group is not None and group != natural:
        weight, bias, _ = compose_grouped(w0, group0, b0, w1, group1, b1)
        return regroup(weight, natural, group), bias, group
    group = natural
    if group0 == group1:
        products = _blockwise_products(w0, w1, group)
    elif group0 == mid and w0.shape[1] == 1:
        products = _depthwise_first_products(w0, w1, group1)
    elif group1 == mid and w1.shape[1] == 1 and out == mid:
        products = _depthwise_second_products(w0, w1)
    else:
        return compose_grouped(grouped_to_dense(w0, group0), 1, b0, grouped_to_dense(w1, group1), 1, b1)
    weight = _place_taps(products, w1.shape[2:], w0.shape[2:])
    per_mid = w1.shape[1]
    b0_read = np.asarray(b0, dtype=np.float64)[_mid_index(out, per_mid, group1)]  # (out, mid/group1)
    bias = np.asarray(b1, dtype=np.float64) + np.einsum("om,om->o", w1.sum(axis=(2, 3)), b0_read)
    return weight, bias, group


def _mid_index(out: int, per_mid: int, group: int) -> np.ndarray:
    """(out, mid/group): the mid channel that column j of output o's kernel reads in a grouped conv."""
    per_out = out // group
    return (np.arange(out) // per_out)[:, None] * per_mid + np.arange(per_mid)[None, :]


def _blockwise_products(w0: np.ndarray, w1: np.ndarray, group: int) -> np.ndarray:
    """(out, in/group, tap1, tap0) products Σ_m W1[o, m, s]·W0[m, i, t] within each group."""
    mid, per_in = w0.shape[:2]
    out, per_mid = w1.shape[:2]
    taps0, taps1 = int(np.prod(w0.shape[2:])), int(np.prod(w1.shape[2:]))
    left = w1.reshape(group, out // group, per_mid, taps1).transpose(0, 1, 3, 2)  # (g, o, s, m)
    right = w0.reshape(group, mid // group, per_in * taps0)  # (g, m, i·t)
    product = np.matmul(left.reshape(group, -1, per_mid), right)  # (g, o·s, i·t)
    product = product.reshape(out, taps1, per_in, taps0)
    return product.transpose(0, 2, 1, 3)


def _depthwise_first_products(w0: np.ndarray, w1: np.ndarray, group1: int) -> np.ndarray:
    """(out, mid/group1, tap1, tap0): a depthwise W0 scales each column of W1 by its channel's taps."""
    out, per_mid = w1.shape[:2]
    taps0 = w0.reshape(w0.shape[0], -1)[_mid_index(out, per_mid, group1)]  # (out, mid/g1, t)
    return w1.reshape(out, per_mid, -1)[:, :, :, None] * taps0[:, :, None, :]


def _depthwise_second_products(w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """(mid, in/group0, tap1, tap0): a depthwise W1 scales each row of W0 by its channel's taps."""
    mid, per_in = w0.shape[:2]
    return w1.reshape(mid, 1, -1, 1) * w0.reshape(mid, per_in, 1, -1)


def _place_taps(products: np.ndarray, kernel1: tuple[int, ...], kernel0: tuple[int, ...]) -> np.ndarray:
    """Sums products over (s, t) into the composed tap u = s + t per axis: (o, i, s, t) -> (o, i, kh, kw)."""
    (k1h, k1w), (k0h, k0w) = kernel1, kernel0
    rows, cols = products.shape[:2]
    if k1h * k1w == 1 or k0h * k0w == 1:  # one term per composed tap: a reshape, no sum
        kh, kw = (k0h, k0w) if k1h * k1w == 1 else (k1h, k1w)
        return products.reshape(rows, cols, kh, kw) + 0.0
    grid = products.reshape(rows, cols, k1h, k1w, k0h, k0w)
    place_h, place_w = _placement(k1h, k0h), _placement(k1w, k0w)
    return np.einsum("oiabcd,acu,bdv->oiuv", grid, place_h, place_w, optimize=True)


def _placement(k1: int, k0: int) -> np.ndarray:
    """(k1, k0, k1 + k0 - 1) 0/1 tensor with P[s, t, u] = 1 exactly when s + t = u."""
    s, t = np.meshgrid(np.arange(k1), np.arange(k0), indexing="ij")
    place = np.zeros((k1, k0, k1 + k0 - 1), dtype=np.float64)
    place[s, t, s + t] = 1.0
    return place
