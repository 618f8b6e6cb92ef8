"""Differential fuzzing of the pass pipeline: random conv graphs, optimized and compared in onnxruntime.

A graph is described by a :class:`GraphSpec`, plain data: opset, input channels and size, whether H/W are
dynamic, the declared input range, a weight seed and a list of :class:`Layer` s. Each layer names an op (or a
motif: parallel branches, an ABPN-style anchor, an ETDS-style dual stream) and carries a tuple of small integers
the builder reads as choices, so that 0 is always the simplest one. The builder adapts every layer to the shapes
it meets (groups that divide, channels that fit DepthToSpace, operands of equal size) and skips what cannot fit,
so any spec, including any shrunk spec, builds a valid model.

    spec ──build──> model ──fold,rep,et──> optimized
                      │                       │
                      └── onnxruntime (graph optimizations off), seeded inputs in the declared range
                                      max |a - b| <= 1e-5 · max(1, range(a))  per output

:func:`check` classifies one model: ``ok``, ``refused`` (a clean EtcError that is not a failure), ``miscompile``
(outputs differ, or a pass produced a model onnxruntime or the checker rejects), ``oscillation``, ``crash`` (any
other exception) or ``invalid`` (the generated model itself does not run: a generator bug). :func:`shrink`
reduces a failing spec greedily while it keeps failing the same way. ``graph_specs()`` is the hypothesis
strategy used by tests/test_fuzz.py and ``python -m bench.fuzz``.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from etc.testing import GraphBuilder

INT64_MAX = 2**63 - 1
OPSETS = (17, 18, 13, 11)
RANGES = ((0.0, 1.0), (-1.0, 1.0), (-0.5, 2.0))
N_ARGS = 12
ARG_MAX = 2**16

# ops and motifs, simplest first (hypothesis shrinks towards the front)
OPS = (
    "relu",
    "conv",
    "add",
    "mul_add",
    "bn",
    "concat",
    "repeat",
    "prelu",
    "leaky",
    "sub",
    "neg",
    "signed",
    "leaky_carry",
    "clip",
    "max",
    "d2s",
    "convt",
    "slice",
    "pad",
    "border_write",
    "channel_write",
    "identity",
    "resize",
    "split",
    "chain",
    "stack",
    "branches",
    "anchor",
    "dual",
)
OP_WEIGHTS = {"conv": 3, "chain": 3, "branches": 2, "anchor": 2, "add": 2, "relu": 2}


@dataclass(frozen=True)
class Layer:
    """One step: ``op``, which earlier tensor it reads (counted back from the newest) and its choice integers."""

    op: str
    src: int = 0
    args: tuple[int, ...] = ()


@dataclass(frozen=True)
class GraphSpec:
    """Everything needed to rebuild one random graph."""

    layers: tuple[Layer, ...]
    channels: int = 3
    height: int = 7
    width: int = 9
    dynamic: bool = False
    opset: int = 17
    input_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    extra_output: int = 0  # 0: one output; k > 0: also output the k-th newest tensor before the last
    prelu: bool = False  # Options.prelu_to_relu
    align: int = 1  # Options.align_channels

    def sizes(self) -> list[tuple[int, int]]:
        """The spatial sizes the graph must be valid at (two when H/W are dynamic)."""
        base = (self.height, self.width)
        return [base, (self.height + 3, self.width + 2)] if self.dynamic else [base]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GraphSpec:
        data = json.loads(text)
        data["layers"] = tuple(Layer(l["op"], l["src"], tuple(l["args"])) for l in data["layers"])
        data["input_range"] = tuple(data["input_range"])
        return cls(**data)


# ---------------------------------------------------------------- building


@dataclass
class _T:
    """A tensor being built: name, channels and (h, w) at every tracked size."""

    name: str
    c: int
    hw: tuple[tuple[int, int], ...]


class _Args:
    """Reads a layer's choice integers in order; exhausted or absent choices read as 0 (the simplest)."""

    def __init__(self, values: Sequence[int]) -> None:
        self.values = list(values)
        self.i = 0

    def int(self, n: int) -> int:
        v = self.values[self.i] if self.i < len(self.values) else 0
        self.i += 1
        return v % n if n > 0 else 0

    def pick(self, options: Sequence):
        return options[self.int(len(options))]

    def chance(self, one_in: int) -> bool:
        """True with probability about 1/one_in; False for the simplest choice."""
        return self.int(one_in) == one_in - 1


class _Skip(Exception):
    """The layer does not fit the shapes it meets."""


class _Builder(GraphBuilder):
    def __init__(self, spec: GraphSpec) -> None:
        dims = ["H", "W"] if spec.dynamic else list(spec.sizes()[0])
        super().__init__(spec.channels, hw=dims, opset=spec.opset, seed=spec.seed)
        self.spec = spec
        self.tensors = [_T("input", spec.channels, tuple(spec.sizes()))]

    def node(self, op: str, inputs: Sequence[str], c: int, hw, **attrs) -> _T:
        out = self.name(op.lower())
        self.add_node(op, inputs, [out], out + "_node", **attrs)
        return _T(out, c, tuple(hw))

    def weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.normal(0, 1 / np.sqrt(max(fan_in, 1)), size=shape).astype(np.float32)

    def floats(self, shape, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)

    # tensor selection
    def pick(self, src: int) -> _T:
        return self.tensors[-1 - (src % len(self.tensors))]

    def partner(self, a: _T, args: _Args, same_c: bool) -> _T | None:
        """Another tensor with a's spatial sizes (a itself when nothing else fits)."""
        fits = [t for t in self.tensors if t.hw == a.hw and (not same_c or t.c == a.c)]
        return fits[-1 - args.int(len(fits))] if fits else None

    def adapt(self, t: _T, c: int) -> _T:
        """t with exactly c channels (a plain 1x1 Conv when it has not)."""
        if t.c == c:
            return t
        return self.conv(t, c, _Args([]))

    # ops
    def conv(self, x: _T, c_out: int, a: _Args, same: bool = False) -> _T:
        kh = a.pick((1, 3, 3, 5, 2, 1, 3))
        kw = kh if not a.chance(4) else a.pick((1, 3, 2, 5))
        if same:  # size-preserving: odd kernels padded (k - 1) / 2 on both sides
            kh, kw = kh | 1, kw | 1
        stride = 1 if same or not a.chance(4) else a.pick((2, 3))
        dil = 1 if not a.chance(5) else 2
        groups_all = [g for g in range(1, min(x.c, c_out) + 1) if x.c % g == 0 and c_out % g == 0]
        group = 1 if not a.chance(3) else a.pick(groups_all)
        bias = not a.chance(3)
        auto_pad = "NOTSET"
        ekh, ekw = (kh - 1) * dil + 1, (kw - 1) * dil + 1
        if same or (kh % 2 and kw % 2 and not a.chance(4)):
            pads = [(ekh - 1) // 2, (ekw - 1) // 2, (ekh - 1) // 2, (ekw - 1) // 2]
        else:
            mode = a.int(4)
            if mode == 3 and not same:
                auto_pad = a.pick(("SAME_UPPER", "SAME_LOWER", "VALID")) if dil == 1 else "VALID"
                pads = [0, 0, 0, 0]
            else:
                pads = [a.int(ekh), a.int(ekw), a.int(ekh), a.int(ekw)]
        hw = []
        for h, w in x.hw:
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                oh, ow = -(-h // stride), -(-w // stride)
            else:
                oh = (h + pads[0] + pads[2] - ekh) // stride + 1
                ow = (w + pads[1] + pads[3] - ekw) // stride + 1
            if oh < 1 or ow < 1:
                if same:
                    raise _Skip
                return self.conv(x, c_out, _Args([]), same=True)
            hw.append((oh, ow))
        cin_g = x.c // group
        w = self.weights((c_out, cin_g, kh, kw), cin_g * kh * kw)
        inputs = [x.name, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.floats((c_out,), -0.2, 0.2), "b"))
        attrs: dict = {"kernel_shape": [kh, kw], "group": group}
        if auto_pad == "NOTSET":
            attrs["pads"] = pads
        else:
            attrs["auto_pad"] = auto_pad
        if stride != 1 or a.chance(6):
            attrs["strides"] = [stride, stride]
        if dil != 1:
            attrs["dilations"] = [dil, dil]
        return self.node("Conv", inputs, c_out, hw, **attrs)

    def convt(self, x: _T, a: _Args) -> _T:
        stride = a.pick((2, 1, 3))
        k = a.pick((stride, 2 * stride, 3, 1, 4, stride + 1))
        groups = [g for g in (1, 2, 3, 4) if x.c % g == 0]
        group = 1 if not a.chance(4) else a.pick(groups)
        c_out = group * a.pick((1, 2, 3, 4))
        pad = [a.int(k), a.int(k), a.int(k), a.int(k)] if a.chance(2) else [0, 0, 0, 0]
        out_pad = [a.int(stride), a.int(stride)] if a.chance(3) else [0, 0]
        hw = []
        for h, w in x.hw:
            oh = (h - 1) * stride + out_pad[0] + k - pad[0] - pad[2]
            ow = (w - 1) * stride + out_pad[1] + k - pad[1] - pad[3]
            if oh < 1 or ow < 1:
                raise _Skip
            hw.append((oh, ow))
        w = self.weights((x.c, c_out // group, k, k), x.c // group * k)
        inputs = [x.name, self.const(w, "wt")]
        if not a.chance(3):
            inputs.append(self.const(self.floats((c_out,), -0.2, 0.2), "bt"))
        attrs: dict = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": pad}
        if group != 1:
            attrs["group"] = group
        if out_pad != [0, 0]:
            attrs["output_padding"] = out_pad
        return self.node("ConvTranspose", inputs, c_out, hw, **attrs)

    def channel_const(self, x: _T, a: _Args, lo: float, hi: float) -> str:
        shape = a.pick(((x.c, 1, 1), (1, x.c, 1, 1), (1,), ()))
        return self.const(self.floats(shape, lo, hi), "k")

    def mul_add(self, x: _T, a: _Args) -> _T:
        op = a.pick(("Mul", "Add", "Sub", "Div"))
        lo, hi = (0.5, 2.0) if op in ("Mul", "Div") else (-0.5, 0.5)
        if op == "Mul" and a.chance(3):
            lo = -2.0
        k = self.channel_const(x, a, lo, hi)
        inputs = [k, x.name] if op in ("Mul", "Add", "Sub") and a.chance(2) else [x.name, k]
        return self.node(op, inputs, x.c, x.hw)

    def bn(self, x: _T, a: _Args) -> _T:
        c = x.c
        params = [
            self.const(self.floats((c,), 0.5, 1.5) * (-1 if a.chance(4) else 1), "scale"),
            self.const(self.floats((c,), -0.3, 0.3), "shift"),
            self.const(self.floats((c,), -0.3, 0.3), "mean"),
            self.const(self.floats((c,), 0.5, 2.0), "var"),
        ]
        eps = a.pick((1e-5, 1e-3, 0.1))
        return self.node("BatchNormalization", [x.name, *params], c, x.hw, epsilon=eps)

    def prelu(self, x: _T, a: _Args) -> _T:
        shape = a.pick(((x.c, 1, 1), (1,), (1, x.c, 1, 1), (1, 1, 1)))
        slope = self.floats(shape, -0.5, 0.5)
        return self.node("PRelu", [x.name, self.const(slope, "slope")], x.c, x.hw)

    def leaky(self, x: _T, a: _Args) -> _T:
        alpha = a.pick((0.01, 0.2, 0.1, -0.3, 1.5))
        return self.node("LeakyRelu", [x.name], x.c, x.hw, alpha=alpha)

    # signed sums and LeakyReLU carries (DnCNN, RepMixer, Real-ESRGAN Compact)
    def sub(self, x: _T, a: _Args) -> _T:
        other = self.partner(x, a, same_c=False)
        assert other is not None
        other = self.adapt(other, x.c)
        return self.node("Sub", [x.name, other.name] if not a.chance(2) else [other.name, x.name], x.c, x.hw)

    def neg(self, x: _T, a: _Args) -> _T:
        return self.node("Neg", [x.name], x.c, x.hw)

    def dwconv(self, x: _T, k: int, a: _Args) -> _T:
        """A same-padded depthwise k x k conv (with bias, sometimes followed by BN)."""
        w = self.weights((x.c, 1, k, k), k * k)
        inputs = [x.name, self.const(w, "w"), self.const(self.floats((x.c,), -0.2, 0.2), "b")]
        y = self.node("Conv", inputs, x.c, x.hw, kernel_shape=[k, k], pads=[k // 2] * 4, group=x.c)
        return self.bn(y, a) if a.chance(3) else y

    def signed(self, x: _T, a: _Args) -> _T:
        """Residuals by subtraction: x - f(x) (DnCNN), f(x) - x, x + (-f(x)), or RepMixer's
        x + s·(dw_k(x) - dw_1(x)); f is Conv -> Relu/LeakyRelu -> Conv."""
        kind = a.int(4)
        if kind == 3:
            diff = self.node(
                "Sub", [self.dwconv(x, a.pick((3, 5, 1)), a).name, self.dwconv(x, 1, a).name], x.c, x.hw
            )
            if not a.chance(3):
                diff = self.node("Mul", [self.channel_const(x, a, 0.2, 1.5), diff.name], x.c, x.hw)
            return self.node("Add", [x.name, diff.name], x.c, x.hw)
        h = self.conv(x, a.pick((4, 8, x.c)), a, same=True)
        h = self.node("Relu", [h.name], h.c, h.hw) if not a.chance(3) else self.leaky(h, a)
        f = self.conv(h, x.c, a, same=True)
        if kind == 2:
            return self.node("Add", [x.name, self.neg(f, a).name], x.c, x.hw)
        return self.node("Sub", [x.name, f.name] if kind == 0 else [f.name, x.name], x.c, x.hw)

    def leaky_carry(self, x: _T, a: _Args) -> _T:
        """Conv+LeakyRelu layers with x joined at the end (Add, Sub or Concat -> Conv): x rides through the
        LeakyRelus when proved >= 0."""
        alpha = a.pick((0.1, 0.2, 0.01))
        y = x
        for _ in range(1 + a.int(3)):
            y = self.conv(y, a.pick((4, 8, 2)), a, same=True)
            y = self.node("LeakyRelu", [y.name], y.c, y.hw, alpha=alpha)
        join = a.int(3)
        if join == 2:
            cat = self.node("Concat", [y.name, x.name], y.c + x.c, x.hw, axis=1)
            return self.conv(cat, x.c, a, same=True)
        y = self.conv(y, x.c, a, same=True)
        return self.node(
            "Add" if join == 0 else "Sub", [y.name, x.name] if join == 0 else [x.name, y.name], x.c, x.hw
        )

    def clip(self, x: _T, a: _Args) -> _T:
        lo, hi = a.pick(((0.0, 1.0), (0.0, None), (None, 0.5), (0.2, 0.8), (-0.5, 2.0), (0.0, 6.0)))
        form = a.pick(("init", "const", "inf"))
        names = []
        for bound, default in ((lo, -np.inf), (hi, np.inf)):
            if bound is None and form != "inf":
                names.append("")
                continue
            value = np.float32(default if bound is None else bound)
            names.append(self.const(value, "clipb") if form != "const" else self.const_node(value, "clipb"))
        while names and names[-1] == "":
            names.pop()
        return self.node("Clip", [x.name, *names], x.c, x.hw)

    def max_op(self, x: _T, a: _Args) -> _T:
        kind = a.int(4)
        if kind == 3:
            other = self.partner(x, a, same_c=True)
            assert other is not None
            return self.node(a.pick(("Max", "Min")), [x.name, other.name], x.c, x.hw)
        c = np.float32(a.pick((0.0, 0.1, -0.3)) if kind else 0.0)
        k = self.const(c, "m") if not a.chance(2) else self.const_node(c, "m")
        op = "Max" if kind < 2 else "Min"
        return self.node(op, [x.name, k] if not a.chance(2) else [k, x.name], x.c, x.hw)

    def d2s(self, x: _T, a: _Args) -> _T:
        b = a.pick((2, 3))
        x = self.adapt(x, b * b * max(1, -(-x.c // (b * b))) if x.c % (b * b) else x.c)
        mode = a.pick(("CRD", "DCR", None))
        attrs = {"blocksize": b} | ({"mode": mode} if mode else {})
        hw = [(h * b, w * b) for h, w in x.hw]
        return self.node("DepthToSpace", [x.name], x.c // (b * b), hw, **attrs)

    def add(self, x: _T, a: _Args) -> _T:
        other = self.partner(x, a, same_c=False)
        assert other is not None
        if other.c != x.c and not (other.c == 1 and a.chance(2)):
            other = self.adapt(other, x.c)
        inputs = [x.name, other.name] if not a.chance(2) else [other.name, x.name]
        return self.node(a.pick(("Add", "Add", "Sum")), inputs, x.c, x.hw)

    def concat(self, x: _T, a: _Args) -> _T:
        parts = [x]
        for _ in range(1 + a.int(2)):
            other = self.partner(x, a, same_c=False)
            assert other is not None
            parts.append(other)
        c = sum(p.c for p in parts)
        if c > 16:
            raise _Skip
        return self.node("Concat", [p.name for p in parts], c, x.hw, axis=a.pick((1, -3)))

    def repeat(self, x: _T, a: _Args, n: int | None = None, kind: str | None = None) -> _T:
        n = n or a.pick((2, 3, 4))
        kind = kind or a.pick(("tile", "concat", "interleave_tile", "interleave_expand"))
        if x.c * n > 36:
            raise _Skip
        c = x.c * n
        if kind == "tile":
            return self.node("Tile", [x.name, self.const(np.array([1, n, 1, 1], np.int64), "reps")], c, x.hw)
        if kind == "concat":
            return self.node("Concat", [x.name] * n, c, x.hw, axis=1)
        axes = np.array([2], np.int64)
        five = [(x.c, n, h, w) for h, w in x.hw]
        if self.spec.opset >= 13:
            u = self.node("Unsqueeze", [x.name, self.const(axes, "axes")], x.c, x.hw)
        else:
            u = self.node("Unsqueeze", [x.name], x.c, x.hw, axes=[2])
        if kind == "interleave_tile":
            r = self.node("Tile", [u.name, self.const(np.array([1, 1, n, 1, 1], np.int64), "reps")], 0, five)
        else:
            r = self.node(
                "Expand", [u.name, self.const(np.array([1, x.c, n, 1, 1], np.int64), "shape")], 0, five
            )
        if self.spec.dynamic:
            shape = self.node("Shape", [x.name], 0, x.hw)
            hw = self.node(
                "Slice",
                [
                    shape.name,
                    self.const(np.array([2], np.int64), "s"),
                    self.const(np.array([4], np.int64), "e"),
                ],
                0,
                x.hw,
            )
            target = self.node(
                "Concat", [self.const(np.array([1, c], np.int64), "nc"), hw.name], 0, x.hw, axis=0
            )
            return self.node("Reshape", [r.name, target.name], c, x.hw)
        h, w = x.hw[0]
        return self.node("Reshape", [r.name, self.const(np.array([1, c, h, w], np.int64), "shape")], c, x.hw)

    def slice(self, x: _T, a: _Args) -> _T:
        axis = a.pick((1, 1, 2, 3))
        step = a.pick((1, 1, 2, -1))
        if axis == 1:
            dims = [x.c] * len(x.hw)
        else:
            dims = [hw[axis - 2] for hw in x.hw]
        d0 = dims[0]
        if step > 0:
            start = a.pick((0, 1, -1, 2, -INT64_MAX))
            end = a.pick((INT64_MAX, d0, -1, 2, 1))
        else:
            start = a.pick((-1, INT64_MAX, d0 - 1, 2))
            end = a.pick((-INT64_MAX, 0, -(d0 + 5)))
        lengths = [len(range(d)[slice(start, end, step)]) for d in dims]
        if min(lengths) < 1 or (axis == 1 and len(set(lengths)) > 1):
            raise _Skip
        inputs = [
            x.name,
            self.const(np.array([start], np.int64), "st"),
            self.const(np.array([end], np.int64), "en"),
            self.const(np.array([axis if not a.chance(3) else axis - 4], np.int64), "ax"),
        ]
        if step != 1 or a.chance(2):
            inputs.append(self.const(np.array([step], np.int64), "sp"))
        if axis == 1:
            return self.node("Slice", inputs, lengths[0], x.hw)
        hw = [(n, w) if axis == 2 else (h, n) for (h, w), n in zip(x.hw, lengths)]
        return self.node("Slice", inputs, x.c, hw)

    def pad(self, x: _T, a: _Args) -> _T:
        p = [0, 0, a.int(3), a.int(3), 0, 0, a.int(3), a.int(3)]
        hw = [(h + p[2] + p[6], w + p[3] + p[7]) for h, w in x.hw]
        value = np.float32(a.pick((0.0, 0.0, 0.5)))
        inputs = [x.name, self.const(np.array(p, np.int64), "pads")]
        if value or a.chance(2):
            inputs.append(self.const(value, "pv"))
        mode = a.pick(("constant", "constant", "reflect", "edge"))
        if mode == "reflect" and min(min(hw_) for hw_ in x.hw) <= max(p):
            mode = "constant"
        return self.node("Pad", inputs, x.c, hw, mode=mode)

    def resize(self, x: _T, a: _Args) -> _T:
        """Resize, mostly nearest by an integer factor (rewritable), sometimes not."""
        sh, sw = a.pick((2, 3, 1)), a.pick((None, 2, 1, 3))
        sw = sw or sh
        mode = a.pick(("nearest", "nearest", "linear"))
        attrs: dict = {"mode": mode}
        if mode == "nearest":
            nearest = a.pick((None, "floor", "round_prefer_floor", "ceil"))
            if nearest:
                attrs["nearest_mode"] = nearest
            ctm = a.pick((None, "asymmetric", "half_pixel", "align_corners"))
            if ctm:
                attrs["coordinate_transformation_mode"] = ctm
        scales = self.const(np.array([1, 1, sh, sw], np.float32), "scales")
        roi = "" if self.spec.opset >= 13 else self.const(np.zeros(0, np.float32), "roi")
        hw = [(h * sh, w * sw) for h, w in x.hw]
        return self.node("Resize", [x.name, roi, scales], x.c, hw, **attrs)

    def split(self, x: _T, a: _Args) -> _T:
        """Channel Split into 2-3 parts; one part (or a Concat of parts) goes on."""
        n = min(x.c, 2 + a.int(2))
        if n < 2:
            raise _Skip
        sizes = [x.c // n] * n
        sizes[-1] += x.c - sum(sizes)
        if a.chance(2) and x.c > n:
            sizes = [1] * (n - 1) + [x.c - (n - 1)]
        outs = [self.name("split") for _ in range(n)]
        inputs = [x.name]
        attrs: dict = {"axis": 1}
        if self.spec.opset >= 18 and sizes == [x.c // n] * n and a.chance(2):
            attrs["num_outputs"] = n
        elif self.spec.opset >= 13:
            inputs.append(self.const(np.array(sizes, np.int64), "split"))
        else:
            attrs["split"] = sizes
        self.add_node("Split", inputs, outs, outs[0] + "_node", **attrs)
        parts = [_T(o, c, x.hw) for o, c in zip(outs, sizes)]
        for part in parts:
            self.tensors.append(part)
        if a.chance(2):
            keep = [parts[i] for i in sorted({a.int(n), a.int(n)})]
            return self.node("Concat", [p.name for p in keep], sum(p.c for p in keep), x.hw, axis=1)
        return parts[a.int(n)]

    # motifs
    def chain(self, x: _T, a: _Args) -> _T:
        """[Pad ->] Conv [-> BN | Mul/Add/Sub/Div] [-> activation]: what exporters emit for a conv block."""
        if a.chance(4):
            x = self.pad(x, a)
        y = self.conv(x, a.pick((x.c, 4, 8, 2)), a)
        post = a.int(4)
        if post == 1:
            y = self.bn(y, a)
        elif post >= 2:
            y = self.mul_add(y, a)
        act = a.int(6)
        if act == 1:
            y = self.node("Relu", [y.name], y.c, y.hw)
        elif act == 2:
            y = self.prelu(y, a)
        elif act == 3:
            y = self.leaky(y, a)
        elif act == 4:
            y = self.clip(y, a)
        return y

    def stack(self, x: _T, a: _Args) -> _T:
        """Concat of 2-3 convs of one input (Inception-like), sometimes each activated."""
        act = a.pick((None, "Relu", "PRelu"))
        outs = []
        for _ in range(2 + a.int(2)):
            sub = _Args([a.int(ARG_MAX) for _ in range(10)])
            y = self.conv(x, a.pick((2, 4, 1, 3)), sub, same=not a.chance(4))
            if act == "Relu":
                y = self.node("Relu", [y.name], y.c, y.hw)
            elif act == "PRelu":
                y = self.prelu(y, sub)
            outs.append(y)
        outs = [o for o in outs if o.hw == outs[0].hw]
        return self.node("Concat", [o.name for o in outs], sum(o.c for o in outs), outs[0].hw, axis=1)

    def branches(self, x: _T, a: _Args) -> _T:
        """Add of 2-4 parallel convs of x (RepVGG/ECB), sometimes with x itself and a BN branch."""
        c_out = a.pick((x.c, 4, 8, 2))
        outs = []
        for _ in range(2 + a.int(3)):
            sub = _Args([a.int(ARG_MAX) for _ in range(10)])
            y = self.conv(x, c_out, sub, same=not a.chance(4))
            if a.chance(4):
                y = self.bn(y, sub)
            outs.append(y)
        if c_out == x.c and a.chance(2):
            outs.append(x)
        outs = [o for o in outs if o.hw == outs[0].hw]
        if len(outs) == 1:
            return outs[0]
        if a.chance(3):
            return self.node("Sum", [o.name for o in outs], c_out, outs[0].hw)
        acc = outs[0]
        for o in outs[1:]:
            acc = self.node("Add", [acc.name, o.name], c_out, acc.hw)
        return acc

    def anchor(self, x: _T, a: _Args) -> _T:
        """ABPN: Conv(x) + repeat(x, s²) -> DepthToSpace(s) [-> Clip(0, 1)]."""
        s = a.pick((2, 3))
        body = self.conv(x, a.pick((4, 8, x.c)), a, same=True)
        body = self.node("Relu", [body.name], body.c, body.hw)
        body = self.conv(body, x.c * s * s, a, same=True)
        rep = self.repeat(x, a, s * s, a.pick(("interleave_tile", "interleave_expand", "tile", "concat")))
        y = self.node("Add", [body.name, rep.name] if not a.chance(3) else [rep.name, body.name], rep.c, x.hw)
        mode = a.pick(("CRD", "DCR", None))
        attrs = {"blocksize": s} | ({"mode": mode} if mode else {})
        out = self.node("DepthToSpace", [y.name], x.c, [(h * s, w * s) for h, w in x.hw], **attrs)
        if not a.chance(3):
            zero, one = self.const(np.float32(0), "lo"), self.const(np.float32(1), "hi")
            out = self.node("Clip", [out.name, zero, one], out.c, out.hw)
        return out

    def dual(self, x: _T, a: _Args) -> _T:
        """ETDS: base and residual streams with a cross add, both through Conv+ReLU."""
        c = a.pick((4, 2, 3))
        base = self.node("Relu", [self.conv(x, c, a, same=True).name], c, x.hw)
        res = self.node("Relu", [self.conv(x, c, a, same=True).name], c, x.hw)
        for _ in range(1 + a.int(2)):
            cross = self.node(
                "Add", [self.conv(base, c, a, same=True).name, self.conv(res, c, a, same=True).name], c, x.hw
            )
            res = self.node("Relu", [self.conv(res, c, a, same=True).name], c, x.hw)
            base = self.node("Relu", [cross.name], c, x.hw)
        return self.node("Add", [base.name, res.name], c, x.hw)

    def relu(self, x: _T, a: _Args) -> _T:
        return self.node("Relu", [x.name], x.c, x.hw)

    def conv_layer(self, x: _T, a: _Args) -> _T:
        return self.conv(x, a.pick((x.c, 4, 8, 1, 2, 3, 6)), a)

    def identity(self, x: _T, a: _Args) -> _T:
        return self.node(a.pick(("Identity", "Dropout")), [x.name], x.c, x.hw)

    # border writes and in-place channel writes (the ECB branch as published, PLKSR's
    # x[:, a:b] = f(x[:, a:b]); see etc/passes/fold_border.py, fold_scatter.py)

    def scatter_strips(self, y: _T, pads: list[int], values: np.ndarray, a: _Args) -> _T:
        """ScatterND writes of ``values[ch]`` into the four border strips of the padded ``y`` (static size)."""
        (h, w), c = y.hw[0], y.c
        top, left, bottom, right = pads
        strips = [(range(0, top), range(w)), (range(h - bottom, h), range(w))]
        strips += [(range(h), range(0, left)), (range(h), range(w - right, w))]
        if a.chance(6):  # a strip missing: not the whole border
            del strips[a.int(4)]
        if a.chance(6):  # one row inside the padded region
            strips.append((range(top, top + 1), range(w)))
        for rows, cols in strips:
            if not len(rows) or not len(cols):
                continue
            grid = np.stack(np.meshgrid([0], range(c), rows, cols, indexing="ij"), axis=-1).astype(np.int64)
            upd = np.broadcast_to(values[None, :, None, None], grid.shape[:-1]).astype(np.float32)
            idx = self.const(grid, "idx")
            y = self.node("ScatterND", [y.name, idx, self.const(np.ascontiguousarray(upd), "upd")], c, y.hw)
        return y

    def concat_strips(self, y: _T, pads: list[int], values: np.ndarray) -> _T:
        """Concat(W) of constant columns around ``y``, then Concat(H) of constant rows (static size)."""
        (h, w), c = y.hw[0], y.c
        top, left, bottom, right = pads

        def strip(rows: int, cols: int) -> str:
            return self.const(
                np.ascontiguousarray(np.broadcast_to(values[None, :, None, None], (1, c, rows, cols))),
                "strip",
            )

        cols = [strip(h, n) if n else None for n in (left, right)]
        y = self.node(
            "Concat", [t for t in (cols[0], y.name, cols[1]) if t], c, [(h, w + left + right)], axis=3
        )
        rows = [strip(n, w + left + right) if n else None for n in (top, bottom)]
        hw = [(h + top + bottom, w + left + right)]
        return self.node("Concat", [t for t in (rows[0], y.name, rows[1]) if t], c, hw, axis=2)

    def border_write(self, x: _T, a: _Args) -> _T:
        """Conv1x1(bias b) -> zero Pad -> ScatterND strips holding b (sometimes another value) -> Conv kxk, no pad."""
        if self.spec.dynamic:
            raise _Skip  # constant strip indices exist at one size only
        c = a.pick((x.c, 4, 2, 3))
        weight, bias = self.weights((c, x.c, 1, 1), x.c), self.floats((c,), -0.5, 0.5)
        stride = 1 if not a.chance(6) else 2
        y = self.node(
            "Conv",
            [x.name, self.const(weight, "w"), self.const(bias, "b")],
            c,
            [((h - 1) // stride + 1, (w - 1) // stride + 1) for h, w in x.hw],
            kernel_shape=[1, 1],
            strides=[stride, stride],
        )
        p = a.pick((1, 1, 2))
        pads = [p, p, p, p] if not a.chance(4) else [a.int(3) for _ in range(4)]
        hw = [(h + pads[0] + pads[2], w + pads[1] + pads[3]) for h, w in y.hw]
        values = a.pick((bias, bias, bias + 1.0, np.full(c, 0.25, np.float32)))
        if a.chance(3):  # the border as Concat of constant strips: columns, then rows
            y = self.concat_strips(y, pads, values)
        else:
            full = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]
            y = self.node(
                "Pad", [y.name, self.const(np.array(full, np.int64), "pads")], c, hw, mode="constant"
            )
            y = self.scatter_strips(y, pads, values, a)
        k = a.pick((3, 3, 1, 5))
        if any(h < k or w < k for h, w in y.hw):
            raise _Skip
        weight = self.weights((x.c, c, k, k), c * k * k)
        out_hw = [(h - k + 1, w - k + 1) for h, w in y.hw]
        return self.node("Conv", [y.name, self.const(weight, "w")], x.c, out_hw, kernel_shape=[k, k])

    def channel_write(self, x: _T, a: _Args) -> _T:
        """x[:, s:s+k] = Conv(x[:, s:s+k]) as ScatterND over (batch, channel), plain or between Transposes."""
        if x.c < 2:
            raise _Skip
        k = 1 + a.int(x.c - 1)
        start = a.int(x.c - k + 1)
        bounds = [
            self.const(np.array([v], np.int64), n) for n, v in (("st", start), ("en", start + k), ("ax", 1))
        ]
        part = self.node("Slice", [x.name, *bounds], k, x.hw)
        upd = self.conv(part, k, a, same=True)
        channels = list(range(start, start + k))
        if a.chance(5) and k > 1:  # written in another order: not a plain channel range
            channels = channels[::-1]
        if a.chance(2):  # dynamo's form: channels first, scatter on axis 0, transposed back
            perm = [1, 0, 2, 3]
            data = self.node("Transpose", [x.name], x.c, x.hw, perm=perm)
            upd = self.node("Transpose", [upd.name], k, upd.hw, perm=perm)
            idx = self.const(np.array([[ch] for ch in channels], np.int64), "idx")
            y = self.node("ScatterND", [data.name, idx, upd.name], x.c, x.hw)
            return self.node("Transpose", [y.name], x.c, x.hw, perm=perm)
        idx = self.const(np.array([[[0, ch] for ch in channels]], np.int64), "idx")
        return self.node("ScatterND", [x.name, idx, upd.name], x.c, x.hw)

    def layer(self, layer: Layer) -> None:
        a = _Args(layer.args)
        x = self.pick(layer.src)
        y = LAYER_BUILDERS[layer.op](self, x, a)
        if any(h > 64 or w > 64 for h, w in y.hw) or y.c > 48:
            raise _Skip
        self.tensors.append(y)

    def build(self) -> onnx.ModelProto:
        for layer in self.spec.layers:
            mark = (len(self.nodes), len(self.inits), len(self.tensors))
            try:
                self.layer(layer)
            except _Skip:
                del self.nodes[mark[0] :], self.inits[mark[1] :], self.tensors[mark[2] :]
        if len(self.tensors) == 1:
            x = self.tensors[0]
            self.tensors.append(self.node("Relu", [x.name], x.c, x.hw))
        outs = [self.tensors[-1]]
        k = self.spec.extra_output
        if k and len(self.tensors) > 2:
            extra = self.tensors[-1 - (1 + (k - 1) % (len(self.tensors) - 2))]
            if extra.name != "input":
                outs.append(extra)
        infos = [self._out_info(t, i) for i, t in enumerate(outs)]
        model = self.model(*infos, graph_name="fuzz", producer_name="etc.fuzz", check=False)
        helper.set_model_props(model, {"etc.fuzz.spec": self.spec.to_json()})
        return model

    def _out_info(self, t: _T, i: int) -> onnx.ValueInfoProto:
        # rename through Identity so outputs have stable, distinct names
        name = f"output{i}" if i else "output"
        self.add_node("Identity", [t.name], [name], f"{name}_node")
        shape = [1, t.c, *t.hw[0]] if not self.spec.dynamic else [1, t.c, None, None]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# What each op of OPS builds (every entry takes the builder, the input tensor and the layer's arguments).
LAYER_BUILDERS: dict[str, Callable[[_Builder, _T, _Args], _T]] = {
    "relu": _Builder.relu,
    "conv": _Builder.conv_layer,
    "add": _Builder.add,
    "mul_add": _Builder.mul_add,
    "bn": _Builder.bn,
    "concat": _Builder.concat,
    "repeat": _Builder.repeat,
    "prelu": _Builder.prelu,
    "leaky": _Builder.leaky,
    "sub": _Builder.sub,
    "neg": _Builder.neg,
    "signed": _Builder.signed,
    "leaky_carry": _Builder.leaky_carry,
    "clip": _Builder.clip,
    "max": _Builder.max_op,
    "d2s": _Builder.d2s,
    "convt": _Builder.convt,
    "slice": _Builder.slice,
    "pad": _Builder.pad,
    "border_write": _Builder.border_write,
    "channel_write": _Builder.channel_write,
    "identity": _Builder.identity,
    "resize": _Builder.resize,
    "split": _Builder.split,
    "chain": _Builder.chain,
    "stack": _Builder.stack,
    "branches": _Builder.branches,
    "anchor": _Builder.anchor,
    "dual": _Builder.dual,
}
assert tuple(LAYER_BUILDERS) == OPS, "every op of OPS has exactly one builder, in the same order"


def build(spec: GraphSpec) -> onnx.ModelProto:
    """The ONNX model a spec describes (always valid; layers that do not fit are skipped)."""
    return _Builder(spec).build()


def spec_of(model: onnx.ModelProto) -> GraphSpec | None:
    """The spec a fuzz model was built from (kept in its metadata), if any."""
    for prop in model.metadata_props:
        if prop.key == "etc.fuzz.spec":
            return GraphSpec.from_json(prop.value)
    return None


# ---------------------------------------------------------------- hypothesis strategies


def graph_specs(
    max_layers: int = 6,
    max_size: int = 12,
    max_channels: int = 8,
    ops: Sequence[str] = OPS,
):
    """Hypothesis strategy of GraphSpecs (small: spatial sizes <= max_size, channels <= max_channels)."""
    from hypothesis import strategies as st

    weighted = [op for op in ops for _ in range(OP_WEIGHTS.get(op, 1))]
    layer = st.builds(
        Layer,
        op=st.sampled_from(weighted),
        src=st.integers(0, 3),
        args=st.tuples(*[st.integers(0, ARG_MAX)] * N_ARGS),
    )
    return st.builds(
        GraphSpec,
        layers=st.lists(layer, min_size=1, max_size=max_layers).map(tuple),
        channels=st.integers(1, max_channels),
        height=st.integers(1, max_size),
        width=st.integers(1, max_size),
        dynamic=st.booleans(),
        opset=st.sampled_from(OPSETS),
        input_range=st.sampled_from(RANGES),
        seed=st.integers(0, 2**32 - 1),
        extra_output=st.integers(0, 3),
        prelu=st.booleans(),
        align=st.sampled_from((1, 4, 3)),
    )


# ---------------------------------------------------------------- checking

FAILURES = ("miscompile", "oscillation", "crash", "invalid")


@dataclass
class Outcome:
    """How the pipeline fared on one model."""

    kind: str  # ok | refused | miscompile | oscillation | crash | invalid
    message: str = ""
    pass_name: str | None = None
    where: str = ""  # file:line of a crash
    hits: dict[str, int] = field(default_factory=dict)  # rule hits of a successful run
    optimized: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return self.kind in FAILURES

    @property
    def signature(self) -> tuple[str, str | None, str]:
        """What must stay the same while shrinking: kind, pass and (for crashes) the exception type and place."""
        if self.kind == "crash":
            detail = self.where
        elif "cannot load" in self.message:
            detail = "unloadable"
        elif "checker" in self.message:
            detail = "checker"
        else:
            detail = ""
        return self.kind, self.pass_name, detail


def check(
    model: onnx.ModelProto,
    passes: str = "fold,rep,et",
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    sizes: Sequence[tuple[int, int]] | None = None,
    rtol: float = 1e-5,
    prelu: bool = False,
    align: int = 1,
) -> Outcome:
    """Runs ``passes`` on ``model`` with a numeric check after every pass and classifies the result.

    Tolerance: max abs <= rtol · max(1, output range), onnxruntime with graph optimizations off, seeded inputs
    uniform in ``input_range`` at ``sizes`` (the model's own static size when H/W are fixed).
    """
    from etc import runtime
    from etc.errors import EquivalenceError, EtcError, OscillationError
    from etc.frontends.onnx_io import validate
    from etc.pipeline import NumericCheck, Options, run_pipeline

    try:
        validate(model)
        ranges = {spec.name: input_range for spec in runtime.input_specs(model)}
        sess = runtime.session(model)
        runtime.run(sess, runtime.input_sets(model, ranges, sizes=list(sizes or [(9, 11)]))[0])
    except Exception as exc:
        return Outcome("invalid", _first_line(exc), where=_where(exc))
    numeric = NumericCheck(atol=0.0, rtol=rtol, sizes=list(sizes) if sizes else None, seed=1)
    try:
        options = Options(input_ranges=ranges, prelu_to_relu=prelu, align_channels=align)
        result = run_pipeline(model, passes, options=options, instruments=[numeric])
    except EquivalenceError as exc:
        return Outcome("miscompile", str(exc), exc.pass_name)
    except OscillationError as exc:
        return Outcome("oscillation", str(exc))
    except EtcError as exc:
        return Outcome("refused", str(exc))
    except Exception as exc:
        return Outcome("crash", f"{type(exc).__name__}: {_first_line(exc)}", where=_where(exc))
    try:
        onnx.checker.check_model(result.model, full_check=True)
    except Exception as exc:
        return Outcome("miscompile", f"output fails onnx.checker: {_first_line(exc)}", optimized=result.model)
    return Outcome("ok", optimized=result.model, hits=dict(result.hits))


def check_spec(spec: GraphSpec, passes: str = "fold,rep,et") -> Outcome:
    return check(build(spec), passes, **_check_args(spec))


def _check_args(spec: GraphSpec) -> dict:
    return {"input_range": spec.input_range, "sizes": spec.sizes(), "prelu": spec.prelu, "align": spec.align}


def check_file(path: str | Path, passes: str = "fold,rep,et") -> Outcome:
    """Replays a saved regression model: its spec metadata gives the input range and sizes."""
    model = onnx.load(str(path))
    spec = spec_of(model)
    if spec is None:
        return check(model, passes)
    return check(model, passes, **_check_args(spec))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """The deepest frame of the traceback that is project code (not the standard library or site-packages)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename and "/lib/python" not in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return type(exc).__name__
    return f"{type(exc).__name__} at {Path(f.filename).name}:{f.lineno}"


# ---------------------------------------------------------------- shrinking


def _candidates(spec: GraphSpec):
    """Smaller variants of a spec, most aggressive first."""
    layers = spec.layers
    for i in range(len(layers)):
        if len(layers) > 1:
            yield replace(spec, layers=layers[:i] + layers[i + 1 :])
    for i, layer in enumerate(layers):
        if layer.op not in ("relu", "identity"):
            yield replace(spec, layers=(*layers[:i], replace(layer, op="relu"), *layers[i + 1 :]))
    if spec.extra_output:
        yield replace(spec, extra_output=0)
    if spec.dynamic:
        yield replace(spec, dynamic=False)
    for c in range(1, spec.channels):
        yield replace(spec, channels=c)
    for h in range(1, spec.height):
        yield replace(spec, height=h)
    for w in range(1, spec.width):
        yield replace(spec, width=w)
    if spec.opset != 17:
        yield replace(spec, opset=17)
    if spec.input_range != (0.0, 1.0):
        yield replace(spec, input_range=(0.0, 1.0))
    if spec.seed:
        yield replace(spec, seed=0)
    if spec.prelu:
        yield replace(spec, prelu=False)
    if spec.align != 1:
        yield replace(spec, align=1)
    for i, layer in enumerate(layers):
        if layer.src:
            yield replace(spec, layers=(*layers[:i], replace(layer, src=0), *layers[i + 1 :]))
        for j, v in enumerate(layer.args):
            for smaller in sorted({0, v // 2, v - 1} - {v}):
                if 0 <= smaller < v:
                    args = (*layer.args[:j], smaller, *layer.args[j + 1 :])
                    yield replace(spec, layers=(*layers[:i], replace(layer, args=args), *layers[i + 1 :]))


def shrink(
    spec: GraphSpec,
    still_fails: Callable[[GraphSpec], bool],
    budget: int = 600,
) -> GraphSpec:
    """Greedy shrinking: keeps the first smaller variant that still fails, until none does or budget runs out."""
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for candidate in _candidates(spec):
            tries += 1
            if still_fails(candidate):
                spec = candidate
                improved = True
                break
            if tries >= budget:
                break
    return spec


def shrink_failure(
    spec: GraphSpec, outcome: Outcome, passes: str = "fold,rep,et", budget: int = 600
) -> GraphSpec:
    """The smallest spec found that fails with the same signature as ``outcome``."""
    want = outcome.signature
    return shrink(spec, lambda s: check_spec(s, passes).signature == want, budget)


def save_regression(spec: GraphSpec, outcome: Outcome, folder: str | Path) -> Path:
    """Writes the model of ``spec`` as folder/<kind>_<pass>_<hash>.onnx (spec kept in its metadata)."""
    import hashlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(spec.to_json().encode()).hexdigest()[:10]
    tag = outcome.pass_name or outcome.where.split(" at ")[-1].split(":")[0].removesuffix(".py") or "x"
    path = folder / f"{outcome.kind}_{tag}_{digest}.onnx"
    model = build(spec)
    helper.set_model_props(
        model, {"etc.fuzz.spec": spec.to_json(), "etc.fuzz.failure": f"{outcome.kind}: {outcome.message}"}
    )
    path.write_bytes(model.SerializeToString())
    return path
