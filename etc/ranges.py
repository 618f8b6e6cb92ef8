"""Value ranges: sound per-channel intervals for every tensor, propagated from declared input ranges.

Rules use them to prove facts such as "this skip tensor is >= 0" (so it can ride through ReLUs unchanged).
Every transfer function over-approximates: an interval may be wider than the true range, never narrower.
Border padding is accounted for: a zero-padded Conv sees 0 as a possible input value.

Intervals are arrays along the channel axis (shape (C,)) or a single whole-tensor pair (shape (1,)).
Images default to [0, 1]; unknown ops give (-inf, inf).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import batchnorm_affine, const_value, conv_spec, input_at, producer, static_channels

DEFAULT_IMAGE_RANGE = (0.0, 1.0)
INF = np.inf


@dataclass(frozen=True)
class Interval:
    """Per-channel [lo, hi] (or one pair for the whole tensor)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, lo, hi) -> Interval:
        lo_a = np.atleast_1d(np.asarray(lo, dtype=np.float64))
        hi_a = np.atleast_1d(np.asarray(hi, dtype=np.float64))
        lo_a, hi_a = np.broadcast_arrays(lo_a, hi_a)
        return cls(lo_a.copy(), hi_a.copy())

    @classmethod
    def unknown(cls) -> Interval:
        return cls.of(-INF, INF)

    @property
    def nonnegative(self) -> bool:
        return bool(np.all(self.lo >= 0))

    @property
    def per_channel(self) -> bool:
        return self.lo.size > 1

    def hull(self) -> Interval:
        return Interval.of(self.lo.min(), self.hi.max())

    def channel(self, index: int) -> tuple[float, float]:
        i = index if self.per_channel else 0
        return float(self.lo[i]), float(self.hi[i])

    def channels(self, count: int) -> Interval:
        """Broadcast to ``count`` channels (a whole-tensor pair repeats)."""
        if self.lo.size == count:
            return self
        return Interval.of(np.full(count, self.lo.min()), np.full(count, self.hi.max()))

    def with_zero(self) -> Interval:
        return Interval.of(np.minimum(self.lo, 0), np.maximum(self.hi, 0))

    def __repr__(self) -> str:
        return f"Interval(lo={np.round(self.lo, 4).tolist()}, hi={np.round(self.hi, 4).tolist()})"


def _broadcast(a: Interval, b: Interval) -> tuple[Interval, Interval]:
    if a.lo.size == b.lo.size:
        return a, b
    if a.lo.size == 1:
        return a.channels(b.lo.size), b
    if b.lo.size == 1:
        return a, b.channels(a.lo.size)
    return a.hull(), b.hull()


def _mul_bounds(a_lo, a_hi, b_lo, b_hi):
    with np.errstate(invalid="ignore", over="ignore"):
        cands = np.stack([a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi])
    cands = np.nan_to_num(cands, nan=0.0, posinf=INF, neginf=-INF)
    return cands.min(axis=0), cands.max(axis=0)


def _weighted_sum(weight: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of sum_j w_j x_j with x_j in [lo_j, hi_j]; rows of ``weight`` are outputs. 0*inf counts as 0;
    bounds too large for float64 overflow to inf, which stays a sound bound."""
    pos = np.maximum(weight, 0)
    neg = np.minimum(weight, 0)
    with np.errstate(invalid="ignore", over="ignore"):
        low = np.where(pos != 0, pos * lo, 0) + np.where(neg != 0, neg * hi, 0)
        high = np.where(pos != 0, pos * hi, 0) + np.where(neg != 0, neg * lo, 0)
        return low.sum(axis=1), high.sum(axis=1)


def const_interval(value: np.ndarray) -> Interval:
    """Per-channel when the constant broadcasts along axis 1 of an NCHW tensor, else one pair."""
    value = np.asarray(value, dtype=np.float64)
    if value.size == 0:
        return Interval.unknown()
    if value.ndim >= 3 and value.shape[-3] > 1 and value.size == value.shape[-3]:
        flat = value.reshape(-1)
        return Interval.of(flat, flat)
    return Interval.of(value.min(), value.max())


class _TensorMemo:
    """Intervals by tensor identity. It holds each tensor it keys, so a tensor that dies elsewhere (a rewrite
    dropped it) cannot hand its id, and with it its interval, to a tensor created later."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[gs.Tensor, Interval]] = {}

    def __contains__(self, tensor: gs.Tensor) -> bool:
        return id(tensor) in self._items

    def __getitem__(self, tensor: gs.Tensor) -> Interval:
        return self._items[id(tensor)][1]

    def __setitem__(self, tensor: gs.Tensor, interval: Interval) -> None:
        self._items[id(tensor)] = (tensor, interval)

    def setdefault(self, tensor: gs.Tensor, interval: Interval) -> Interval:
        return self._items.setdefault(id(tensor), (tensor, interval))[1]


class ValueRanges:
    """Intervals for every tensor of a graph; tensors added later are computed on first request."""

    def __init__(
        self, graph: gs.Graph, input_ranges: Mapping[str, tuple[float, float]] | None = None
    ) -> None:
        self.graph = graph
        self.input_ranges = dict(input_ranges or {})
        self._memo = _TensorMemo()
        for node in graph.nodes:
            self._compute_node(node)

    def __getitem__(self, tensor: gs.Tensor) -> Interval:
        return self.get(tensor)

    def get(self, tensor: gs.Tensor) -> Interval:
        if tensor in self._memo:
            return self._memo[tensor]
        # iterative on-demand evaluation of producers not yet seen
        stack = [tensor]
        while stack:
            top = stack[-1]
            node = producer(top)
            if node is None or top in self._memo:
                self._memo.setdefault(top, self._leaf(top))
                stack.pop()
                continue
            missing = [t for t in node.inputs if t not in self._memo and producer(t) is not None]
            if missing:
                stack.extend(missing)
                continue
            self._compute_node(node)
            stack.pop()
        return self._memo[tensor]

    def _leaf(self, tensor: gs.Tensor) -> Interval:
        value = const_value(tensor)
        if value is not None:
            return const_interval(value) if value.dtype.kind == "f" else Interval.of(value.min(), value.max())
        if tensor.name in self.input_ranges:
            return Interval.of(*self.input_ranges[tensor.name])
        if any(tensor is i for i in self.graph.inputs):
            shape = tensor.shape or ()
            if len(shape) == 4 and np.dtype(tensor.dtype or np.float32).kind == "f":
                return Interval.of(*DEFAULT_IMAGE_RANGE)
        return Interval.unknown()

    def _input(self, node: gs.Node, index: int) -> Interval:
        tensor = input_at(node, index)
        if tensor is None:
            return Interval.unknown()
        if tensor not in self._memo:
            self._memo[tensor] = self._leaf(tensor) if producer(tensor) is None else self.get(tensor)
        return self._memo[tensor]

    def _compute_node(self, node: gs.Node) -> None:
        if node.op == "Constant":
            for out in node.outputs:
                self._memo[out] = self._leaf(out)
            return
        handler = getattr(self, f"_op_{node.op}", None)
        try:
            results = handler(node) if handler else None
        except Exception:
            results = None
        if results is None:
            results = [Interval.unknown()] * len(node.outputs)
        elif isinstance(results, Interval):
            results = [results] * len(node.outputs)
        for out, interval in zip(node.outputs, results):
            self._memo[out] = interval

    # ------------------------------------------------------------ transfer functions

    def _op_Conv(self, node: gs.Node) -> Interval | None:
        spec = conv_spec(node)
        weight = const_value(input_at(node, 1))
        if spec is None or weight is None:
            return None
        bias = const_value(input_at(node, 2))
        x = self._input(node, 0)
        if any(spec.pads):
            x = x.with_zero()
        out_ch, in_per_group = weight.shape[:2]
        x = x.channels(in_per_group * spec.group)
        per_out = out_ch // spec.group
        lo = np.empty(out_ch)
        hi = np.empty(out_ch)
        flat = weight.reshape(out_ch, in_per_group, -1).astype(np.float64)
        for g in range(spec.group):
            rows = slice(g * per_out, (g + 1) * per_out)
            cols = slice(g * in_per_group, (g + 1) * in_per_group)
            w = flat[rows]
            taps = w.shape[2]
            lo_in = np.repeat(x.lo[cols], taps)
            hi_in = np.repeat(x.hi[cols], taps)
            lo[rows], hi[rows] = _weighted_sum(w.reshape(per_out, -1), lo_in, hi_in)
        if bias is not None:
            lo += bias
            hi += bias
        return Interval.of(lo, hi)

    def _op_ConvTranspose(self, node: gs.Node) -> Interval | None:
        weight = const_value(input_at(node, 1))
        if weight is None:
            return None
        group = int(node.attrs.get("group", 1))
        in_ch, per_out = weight.shape[:2]
        x = self._input(node, 0).channels(in_ch)
        bias = const_value(input_at(node, 2))
        lo = np.zeros(per_out * group)
        hi = np.zeros(per_out * group)
        per_in = in_ch // group
        for g in range(group):
            w = weight[g * per_in : (g + 1) * per_in].astype(np.float64)  # (per_in, per_out, kh, kw)
            w = np.transpose(w, (1, 0, 2, 3)).reshape(per_out, per_in, -1)
            taps = w.shape[2]
            pos = np.maximum(w, 0).reshape(per_out, -1)
            neg = np.minimum(w, 0).reshape(per_out, -1)
            lo_in = np.repeat(x.lo[g * per_in : (g + 1) * per_in], taps)
            hi_in = np.repeat(x.hi[g * per_in : (g + 1) * per_in], taps)
            with np.errstate(invalid="ignore"):
                term_lo = np.where(pos != 0, pos * lo_in, 0) + np.where(neg != 0, neg * hi_in, 0)
                term_hi = np.where(pos != 0, pos * hi_in, 0) + np.where(neg != 0, neg * lo_in, 0)
            # an output pixel receives a subset of the taps: each term may also be absent (0)
            lo[g * per_out : (g + 1) * per_out] = np.minimum(term_lo, 0).sum(axis=1)
            hi[g * per_out : (g + 1) * per_out] = np.maximum(term_hi, 0).sum(axis=1)
        if bias is not None:
            lo += bias
            hi += bias
        return Interval.of(lo, hi)

    def _op_Relu(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        return Interval.of(np.maximum(x.lo, 0), np.maximum(x.hi, 0))

    def _op_Clip(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        lo_v = const_value(input_at(node, 1))
        hi_v = const_value(input_at(node, 2))
        lo = float(lo_v) if lo_v is not None else node.attrs.get("min", -INF)
        hi = float(hi_v) if hi_v is not None else node.attrs.get("max", INF)
        if input_at(node, 1) is not None and lo_v is None:
            lo = -INF
        if input_at(node, 2) is not None and hi_v is None:
            hi = INF
        return Interval.of(np.clip(x.lo, lo, hi), np.clip(x.hi, lo, hi))

    def _op_LeakyRelu(self, node: gs.Node) -> Interval:
        alpha = float(node.attrs.get("alpha", 0.01))
        return self._prelu(self._input(node, 0), np.array([alpha]))

    def _op_PRelu(self, node: gs.Node) -> Interval | None:
        slope = const_value(input_at(node, 1))
        if slope is None:
            return None
        return self._prelu(self._input(node, 0), np.asarray(slope, dtype=np.float64).reshape(-1))

    @staticmethod
    def _prelu(x: Interval, slope: np.ndarray) -> Interval:
        if slope.size > 1:
            x = x.channels(slope.size)

        def f(v):
            return np.where(v >= 0, v, v * slope)

        a, b = f(x.lo), f(x.hi)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        spans_zero = (x.lo < 0) & (x.hi > 0)
        lo = np.where(spans_zero, np.minimum(lo, 0), lo)
        hi = np.where(spans_zero, np.maximum(hi, 0), hi)
        return Interval.of(np.nan_to_num(lo, nan=-INF), np.nan_to_num(hi, nan=INF))

    def _op_Sigmoid(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        with np.errstate(over="ignore"):  # exp(+large) = inf gives the exact limit 0
            return Interval.of(1 / (1 + np.exp(-x.lo)), 1 / (1 + np.exp(-x.hi)))

    def _op_Tanh(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        return Interval.of(np.tanh(x.lo), np.tanh(x.hi))

    def _op_Add(self, node: gs.Node) -> Interval:
        a, b = _broadcast(self._input(node, 0), self._input(node, 1))
        return Interval.of(a.lo + b.lo, a.hi + b.hi)

    def _op_Sum(self, node: gs.Node) -> Interval:
        return self._variadic(node, np.add)

    def _op_Sub(self, node: gs.Node) -> Interval:
        a, b = _broadcast(self._input(node, 0), self._input(node, 1))
        return Interval.of(a.lo - b.hi, a.hi - b.lo)

    def _op_Neg(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        return Interval.of(-x.hi, -x.lo)

    def _op_Mul(self, node: gs.Node) -> Interval:
        a, b = _broadcast(self._input(node, 0), self._input(node, 1))
        return Interval.of(*_mul_bounds(a.lo, a.hi, b.lo, b.hi))

    def _op_Div(self, node: gs.Node) -> Interval | None:
        a, b = _broadcast(self._input(node, 0), self._input(node, 1))
        if np.any((b.lo <= 0) & (b.hi >= 0)):
            return None
        return Interval.of(*_mul_bounds(a.lo, a.hi, 1 / b.hi, 1 / b.lo))

    def _variadic(self, node: gs.Node, combine) -> Interval:
        """Folds the inputs of a variadic elementwise op with ``combine`` applied to both bounds."""
        total = self._input(node, 0)
        for i in range(1, len(node.inputs)):
            a, b = _broadcast(total, self._input(node, i))
            total = Interval.of(combine(a.lo, b.lo), combine(a.hi, b.hi))
        return total

    def _op_Max(self, node: gs.Node) -> Interval:
        return self._variadic(node, np.maximum)

    def _op_Min(self, node: gs.Node) -> Interval:
        return self._variadic(node, np.minimum)

    def _op_BatchNormalization(self, node: gs.Node) -> Interval | None:
        try:
            a, c = batchnorm_affine(node)
        except ValueError:
            return None
        x = self._input(node, 0).channels(a.size)
        lo, hi = _mul_bounds(x.lo, x.hi, a, a)
        return Interval.of(lo + c, hi + c)

    def _same(self, node: gs.Node) -> Interval:
        return self._input(node, 0)

    def _hull(self, node: gs.Node) -> Interval:
        return self._input(node, 0).hull()

    _op_Identity = _op_Dropout = _op_MaxPool = _op_GlobalMaxPool = _same
    _op_Reshape = _op_Flatten = _op_Transpose = _op_Squeeze = _op_Unsqueeze = _hull
    _op_Tile = _op_Expand = _op_Gather = _op_SpaceToDepth = _hull

    def _op_Resize(self, node: gs.Node) -> Interval:
        mode = node.attrs.get("mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        x = self._input(node, 0)
        return x if mode in ("nearest", "linear") else Interval.unknown()

    _op_Upsample = _op_Resize

    def _op_AveragePool(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        if any(node.attrs.get("pads", [0])) and int(node.attrs.get("count_include_pad", 0)):
            x = x.with_zero()
        return x

    _op_GlobalAveragePool = _same

    def _op_ReduceMean(self, node: gs.Node) -> Interval:
        return self._input(node, 0).hull()

    def _op_Pad(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            return x
        value = const_value(input_at(node, 2))
        v = float(value.reshape(-1)[0]) if value is not None and value.size else 0.0
        return Interval.of(np.minimum(x.lo, v), np.maximum(x.hi, v))

    def _op_Concat(self, node: gs.Node) -> Interval:
        parts = [self._input(node, i) for i in range(len(node.inputs))]
        axis = int(node.attrs.get("axis", 0))
        rank = len(node.outputs[0].shape or ())
        if rank == 4 and axis in (1, -3):
            counts = [static_channels(t) for t in node.inputs]
            if all(c is not None for c in counts):
                lo = np.concatenate([p.channels(c).lo for p, c in zip(parts, counts)])
                hi = np.concatenate([p.channels(c).hi for p, c in zip(parts, counts)])
                return Interval.of(lo, hi)
        return Interval.of(min(p.lo.min() for p in parts), max(p.hi.max() for p in parts))

    def _op_Slice(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        if not x.per_channel:
            return x
        starts, ends = const_value(input_at(node, 1)), const_value(input_at(node, 2))
        axes = const_value(input_at(node, 3))
        steps = const_value(input_at(node, 4))
        if starts is None or ends is None:
            return x.hull()
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if axis in (1, -3):
                idx = np.arange(x.lo.size)[slice(int(start), int(end), step)]
                return Interval.of(x.lo[idx], x.hi[idx])
        return x

    def _op_Split(self, node: gs.Node) -> list[Interval]:
        x = self._input(node, 0)
        axis = int(node.attrs.get("axis", 0))
        if not x.per_channel or axis not in (1, -3):
            return [x.hull()] * len(node.outputs)
        sizes = const_value(input_at(node, 1))
        if sizes is None:
            sizes = node.attrs.get("split")
        if sizes is None:
            sizes = [x.lo.size // len(node.outputs)] * len(node.outputs)
        out, start = [], 0
        for size in sizes:
            out.append(Interval.of(x.lo[start : start + int(size)], x.hi[start : start + int(size)]))
            start += int(size)
        return out

    def _op_DepthToSpace(self, node: gs.Node) -> Interval:
        x = self._input(node, 0)
        if not x.per_channel:
            return x
        block = int(node.attrs["blocksize"])
        mode = node.attrs.get("mode", "DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        out_ch = x.lo.size // (block * block)
        if mode == "CRD":
            grouped = lambda v: v.reshape(out_ch, block * block)  # noqa: E731
        else:
            grouped = lambda v: v.reshape(block * block, out_ch).T  # noqa: E731
        return Interval.of(grouped(x.lo).min(axis=1), grouped(x.hi).max(axis=1))
