"""Activation statistics on calibration data and the per-tensor choice of a quantization range.

:func:`collect` runs the float model in onnxruntime (optimizations off) on the calibration patches with the
requested intermediate tensors exposed as outputs and gathers, per tensor, per-channel min/max/mean/mean-square
and a histogram of all values. :func:`choose_range` turns the statistics into ``(lo, hi)`` with one method:

* ``minmax``      the observed extremes;
* ``percentile``  the 0.001 % / 99.999 % quantiles (outliers clipped);
* ``entropy``     the threshold minimising the KL divergence between the value histogram and its 8-bit
                  quantized version (TensorRT's calibration);
* ``auto``        per tensor, the candidate of the three with the lowest expected squared quantization
                  error on the observed histogram (rounding noise step²/12 inside, clipping error outside).

``auto`` may weigh each channel's values by how strongly the next layer reads the channel (``channel_weights``
of :func:`collect`; the quantizer passes Σ W2[:, c]² over the consumer Convs): the error that counts is the
one the next layer sees. In plain SR nets the carried image channels are read with weight ~1 while feature
channels are read with weights ~0.1, and they hold the largest values, so a range that clips them trades a
small rounding gain on many features for a large clipping error on the image (plain against weighted
histogram: bench/RESULTS.md, "Quantizer design measurements").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from etc import proto
from etc.quant import qdq

METHODS = ("auto", "minmax", "percentile", "entropy")
BINS = 2048


@dataclass
class TensorStats:
    """What calibration saw of one float tensor (N, C, H, W)."""

    name: str
    ch_min: np.ndarray
    ch_max: np.ndarray
    ch_mean: np.ndarray
    ch_sq: np.ndarray  # mean of squares per channel
    hist: np.ndarray  # counts over [lo, hi] in BINS bins
    lo: float
    hi: float
    weighted: np.ndarray | None = None  # the same histogram with each value weighted by its channel's weight

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, len(self.hist) + 1)

    @property
    def centres(self) -> np.ndarray:
        e = self.edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def nonnegative(self) -> bool:
        return self.lo >= 0.0


def run_tensors(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    progress: Callable[[int], None] | None = None,
):
    """Yields {name: array} per feed for the tensors ``names`` (onnxruntime, optimizations off)."""
    from etc import runtime

    sess = runtime.session(runtime.with_outputs(model, names), threads=1)
    names = list(names)
    for feed in feeds:
        values = sess.run(names, dict(feed))
        if progress:
            progress(1)
        yield dict(zip(names, values))


def channel_rows(value: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (C, N*...) float64."""
    if value.ndim < 2:
        return value.reshape(1, -1).astype(np.float64)
    return np.moveaxis(value, 1, 0).reshape(value.shape[1], -1).astype(np.float64)


def consumer_weights(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, np.ndarray]:
    """{tensor: Σ W[:, c]² per channel c over its readers} for the tensors read only by ungrouped Convs with
    constant weights as their data input: how strongly the next layer sees each channel (for ``auto``)."""
    consts = qdq.constants(model)
    readers = proto.readers(model)
    outputs = {o.name for o in model.graph.output}
    out: dict[str, np.ndarray] = {}
    for name in names:
        users = readers.get(name, [])
        if not users or name in outputs:
            continue
        total = None
        for node in users:
            grouped = proto.conv_attrs(node).group != 1
            if not qdq.is_quantizable_conv(node, consts) or grouped or node.input[0] != name:
                total = None
                break
            w = consts[node.input[1]].astype(np.float64)
            part = (w * w).sum(axis=(0, 2, 3))
            total = part if total is None else total + part
        if total is not None and total.sum() > 0:
            out[name] = total
    return out


def collect(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    progress: Callable[[int], None] | None = None,
    channel_weights: Mapping[str, np.ndarray] | None = None,
) -> dict[str, TensorStats]:
    """Per-tensor statistics over all ``feeds``: two passes (extremes, then histograms). A tensor with
    ``channel_weights`` (one non-negative weight per channel) also gets the weighted histogram."""
    channel_weights = channel_weights or {}
    names = list(dict.fromkeys(names))
    acc: dict[str, list] = {}
    count: dict[str, int] = {}
    for values in run_tensors(model, feeds, names, progress):
        for name, value in values.items():
            ch = channel_rows(value)
            cur = acc.get(name)
            stats = [ch.min(1), ch.max(1), ch.sum(1), (ch * ch).sum(1)]
            if cur is None:
                acc[name] = stats
            else:
                cur[0] = np.minimum(cur[0], stats[0])
                cur[1] = np.maximum(cur[1], stats[1])
                cur[2] = cur[2] + stats[2]
                cur[3] = cur[3] + stats[3]
            count[name] = count.get(name, 0) + ch.shape[1]
    bounds = {n: (min(float(a[0].min()), 0.0), max(float(a[1].max()), 0.0)) for n, a in acc.items()}
    hists = {n: np.zeros(BINS, dtype=np.float64) for n in acc}
    whists = {n: np.zeros(BINS, dtype=np.float64) for n in acc if n in channel_weights}
    for values in run_tensors(model, feeds, names, progress):
        for name, value in values.items():
            lo, hi = bounds[name]
            if hi > lo:
                h, _ = np.histogram(value, bins=BINS, range=(lo, hi))
                hists[name] += h
                if name in whists:
                    ch = channel_rows(value)
                    wts = np.broadcast_to(np.asarray(channel_weights[name], np.float64)[:, None], ch.shape)
                    h, _ = np.histogram(ch, bins=BINS, range=(lo, hi), weights=wts)
                    whists[name] += h
    out = {}
    for name, (mn, mx, s, sq) in acc.items():
        n = max(count[name], 1)
        lo, hi = bounds[name]
        out[name] = TensorStats(name, mn, mx, s / n, sq / n, hists[name], lo, hi, whists.get(name))
    return out


# ---------------------------------------------------------------- range choice


def _quantile(stats: TensorStats, q: float) -> float:
    cdf = np.cumsum(stats.hist)
    if cdf[-1] == 0:
        return 0.0
    idx = int(np.searchsorted(cdf, q * cdf[-1]))
    return float(stats.edges[min(idx + 1, len(stats.hist))])


def range_minmax(stats: TensorStats) -> tuple[float, float]:
    return float(min(stats.ch_min.min(), 0.0)), float(max(stats.ch_max.max(), 0.0))


def range_percentile(stats: TensorStats, percent: float = 99.999) -> tuple[float, float]:
    lo = 0.0 if stats.nonnegative else min(_quantile(stats, 1 - percent / 100), 0.0)
    return lo, max(_quantile(stats, percent / 100), 0.0)


def _kl_threshold(hist: np.ndarray, edges_hi: np.ndarray, levels: int) -> float:
    """TensorRT's entropy calibration on a histogram of magnitudes starting at 0."""
    best, best_t = np.inf, float(edges_hi[-1])
    n = len(hist)
    if hist.sum() == 0:
        return best_t
    tail = np.cumsum(hist[::-1])[::-1]
    for i in range(levels, n + 1, max(1, (n - levels) // 64)):
        ref = hist[:i].copy()
        if i < n:
            ref[-1] += tail[i]
        starts = np.linspace(0, i, levels + 1).astype(int)[:-1]
        sums = np.add.reduceat(ref, starts)
        nonzero = np.add.reduceat((ref > 0).astype(np.float64), starts)
        per = np.where(nonzero > 0, sums / np.maximum(nonzero, 1), 0.0)
        cand = np.repeat(per, np.diff(np.append(starts, i))) * (ref > 0)
        p = ref / ref.sum()
        q = cand / max(cand.sum(), 1e-12)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best:
            best, best_t = kl, float(edges_hi[i - 1])
    return best_t


def range_entropy(stats: TensorStats) -> tuple[float, float]:
    edges = stats.edges
    if stats.nonnegative:
        return 0.0, _kl_threshold(stats.hist, edges[1:], 255)
    # magnitudes: fold the histogram around zero onto |x| bins of the same width
    width = edges[1] - edges[0]
    mags = np.abs(stats.centres)
    nb = int(np.ceil(mags.max() / width)) + 1
    folded = np.zeros(nb)
    np.add.at(folded, np.minimum((mags / width).astype(int), nb - 1), stats.hist)
    t = _kl_threshold(folded, (np.arange(nb) + 1) * width, 128)
    lo, hi = range_minmax(stats)
    return max(lo, -t), min(hi, t)


def expected_error(stats: TensorStats, lo: float, hi: float, levels: int = 255) -> float:
    """Mean squared quantization error of the histogram (the channel-weighted one when collected) under
    uint8 quantization of [lo, hi]."""
    step = (hi - lo) / levels if hi > lo else 1.0
    x = stats.centres
    clip = np.clip(x, lo, hi)
    err = (x - clip) ** 2 + np.where((x >= lo) & (x <= hi), step * step / 12.0, 0.0)
    hist = stats.weighted if stats.weighted is not None else stats.hist
    total = hist.sum()
    return float((hist * err).sum() / total) if total else 0.0


def choose_range(stats: TensorStats, method: str = "auto") -> tuple[float, float]:
    """(lo, hi) with lo <= 0 <= hi for ``method`` (see the module docstring)."""
    if method == "minmax":
        return range_minmax(stats)
    if method == "percentile":
        return range_percentile(stats)
    if method == "entropy":
        return range_entropy(stats)
    if method != "auto":
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    cands = [
        range_minmax(stats),
        range_percentile(stats),
        range_percentile(stats, 99.99),
        range_entropy(stats),
    ]
    return min(cands, key=lambda r: expected_error(stats, *r))
