"""Cross-layer equalization: exact per-channel rescaling across Conv -> (ReLU | PReLU | none) -> Conv.

::

    before:  x ─> Conv(W1, b1) ─> Relu ─> t ─> Conv(W2, b2) ─> y
    after:   x ─> Conv(a·W1, a·b1) ─> Relu ─> t' = a·t ─> Conv(W2 / a, b2) ─> y        (a_c > 0 per channel)

ReLU, PReLU and LeakyReLU are positively homogeneous (f(a z) = a f(z) for a > 0, any slope), zero padding of
the second Conv stays zero after scaling, so y is unchanged at every pixel, borders included. Each row c of
W1 (and b1[c], e.g. the constant 1 of a clip conv Conv(-W, 1-b)) is multiplied by a_c and each input column c
of W2 divided by a_c (for a grouped W2: column c mod C/g of the rows of c's group).

Exactness conditions (checked by :func:`find_pairs`): the first Conv has constant weights; its output is read
only by the activation (or directly only by Convs); the activation is Relu, PRelu with a constant slope, or
LeakyRelu; every reader of t is a Conv with constant weights taking t as its data input; neither tensor is a
graph output. Scales are positive and finite.

Choosing a: quantization puts one uint8 scale on t and one int8 scale on each row of W2. Scaling channel c up
spends activation range on it and shrinks its weight column. :func:`choose_scales` searches a two-parameter
family (R_c = calibrated range of channel c, T a target range taken from the sorted channel ranges, α in a
small grid)::

    a_c = T / R_c          if R_c > T     (wide channels brought down to T)
    a_c = (T / R_c)^α      otherwise      (narrow channels raised towards T; α = 0 leaves them)

T = R_max is the classic family (R_max / R_c)^α; smaller T also tames single outlier channels, e.g. the one
feature channel of ECBSR_ET's third layer that reaches 11.5 while the rest stay below 4.6. Scales are kept in
[1/MAX_SCALE, MAX_SCALE]. The candidate with the lowest estimated output noise wins (no change unless it gains
MIN_GAIN): ACT_WEIGHT·S²/12·Σ(W2/a)² for activation rounding plus Σ_o T_o²/12·Σ_c a_c² E[t_c²]·k for weight
rounding (S the tensor step, T_o the row step). Activation noise counts ACT_WEIGHT = 16 times: in plain SR nets
the carried image channels pass it to the output through every later layer (8-bit requantized once per layer),
while a row's weight noise is filtered by the layers after it; with per-channel weight grids and channel
duplication (:mod:`etc.quant.split`) the weight side is cheap. The weights against weight 1 on the trained
models are in bench/RESULTS.md ("Quantizer design measurements").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from etc import proto
from etc.pipeline import FINISH, Pass, PassContext, PassResult
from etc.quant import observe

HOMOGENEOUS = frozenset({"Relu", "PRelu", "LeakyRelu"})
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_GAIN = 0.05  # rescale only when the estimated noise drops by at least 5 % (keeps the pass idempotent)
MAX_SCALE = 64.0
ACT_WEIGHT = 16.0  # weight of activation noise against weight noise in estimated_noise (module doc)


Pair = proto.ConvSite  # a tensor between a Conv (through its activation) and the Convs reading it


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Every Conv -> [homogeneous activation] -> Conv(s) site where rescaling is exact (see module doc)."""
    consts = proto.initializer_names(model)
    readers = proto.readers(model)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for node in model.graph.node:
        if not proto.is_const_conv(node, consts) or node.output[0] in outputs:
            continue
        tensor, act = node.output[0], None
        users = readers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in HOMOGENEOUS:
            act = users[0]
            if act.op_type == "PRelu" and act.input[1] not in consts:
                continue
            tensor = act.output[0]
            if tensor in outputs:
                continue
            users = readers.get(tensor, [])
        if not users or not all(proto.is_const_conv(u, consts) and u.input[0] == tensor for u in users):
            continue
        if any(tensor in u.input[1:] for u in users):
            continue
        pairs.append(
            Pair(tensor, node.name, act.name if act is not None else None, tuple(u.name for u in users))
        )
    return pairs


def _column_view(weight: np.ndarray, group: int) -> np.ndarray:
    """Dense (O, C, kh, kw) view of a grouped kernel (zeros outside the groups)."""
    if group == 1:
        return weight
    from etc.convmath import grouped_to_dense

    return grouped_to_dense(weight, group)


def estimated_noise(
    weights: list[np.ndarray],
    ch_range: np.ndarray,
    ch_sq: np.ndarray,
    scales: np.ndarray,
    act_weight: float | None = None,
) -> float:
    """Output noise energy of quantizing t (one uint8 step) and W2 (int8 per row) after scaling by ``scales``,
    the activation part counted ``act_weight`` times (default :data:`ACT_WEIGHT`)."""
    act_weight = ACT_WEIGHT if act_weight is None else act_weight
    step = float((ch_range * scales).max()) / 255.0
    total = 0.0
    for w in weights:
        ws = w / scales.reshape(1, -1, 1, 1)
        taps = w.shape[2] * w.shape[3]
        act = step**2 / 12.0 * float((ws**2).sum())
        row_step = np.abs(ws).reshape(ws.shape[0], -1).max(1) / 127.0
        wt = float((row_step**2 / 12.0).sum() * (scales**2 * ch_sq).sum() * taps)
        total += act_weight * act + wt
    return total


def candidate_scales(ch_range: np.ndarray, alphas=ALPHAS):
    """Yields (scales, α, T) over the family of the module docstring; dead channels keep scale 1."""
    alive = ch_range > 1e-6 * max(float(ch_range.max()), 1e-12)
    safe = np.where(alive, ch_range, 1.0)
    for target in np.unique(ch_range[alive])[::-1]:
        for alpha in alphas:
            scales = np.where(safe > target, target / safe, (target / safe) ** alpha)
            scales = np.where(alive, np.clip(scales, 1.0 / MAX_SCALE, MAX_SCALE), 1.0)
            if not np.all(scales == 1.0):
                yield scales, float(alpha), float(target)


def choose_scales(
    weights: list[np.ndarray],
    ch_range: np.ndarray,
    ch_sq: np.ndarray,
    alphas=ALPHAS,
    act_weight: float | None = None,
) -> tuple[np.ndarray, float]:
    """Per-channel scales a_c > 0 (and the chosen α) minimising :func:`estimated_noise`; α = 0 and all
    scales 1 when no candidate gains MIN_GAIN."""
    ch_range = np.asarray(ch_range, dtype=np.float64)
    best, best_alpha = np.ones_like(ch_range), 0.0
    if not np.any(ch_range > 0):
        return best, best_alpha
    best_noise = estimated_noise(weights, ch_range, ch_sq, best, act_weight) * (1 - MIN_GAIN)
    for scales, alpha, _ in candidate_scales(ch_range, alphas):
        noise = estimated_noise(weights, ch_range, ch_sq, scales, act_weight)
        if noise < best_noise:
            best, best_alpha, best_noise = scales, alpha, noise
    if np.all(best == 1.0):
        return best, 0.0
    return best, best_alpha


def apply_scales(model: onnx.ModelProto, pair: Pair, scales: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` with rows of the producer multiplied and columns of the consumers divided by scales."""
    scales = np.asarray(scales, dtype=np.float64)
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        raise ValueError("equalization scales must be positive and finite")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = {n.name: n for n in out.graph.node}
    update = proto.initializer_updater(out, "_eq")

    prod = nodes[pair.producer]
    prod.input[1] = update(prod.input[1], lambda w: w * scales.reshape(-1, 1, 1, 1))
    if len(prod.input) > 2 and prod.input[2]:
        prod.input[2] = update(prod.input[2], lambda b: b * scales)
    for name in pair.consumers:
        cons = nodes[name]
        group = proto.conv_attrs(cons).group

        def divide(w, group=group):
            cpg = w.shape[1]
            out_w = w.copy()
            per_out = w.shape[0] // group
            for c, a in enumerate(scales):
                g = c // cpg
                out_w[g * per_out : (g + 1) * per_out, c % cpg] /= a
            return out_w

        cons.input[1] = update(cons.input[1], divide)
    proto.drop_unused_initializers(out)
    return out


@dataclass
class EqualizeRecord:
    tensor: str
    alpha: float
    max_scale: float
    min_scale: float = 1.0


def equalize(
    model: onnx.ModelProto,
    stats: Mapping[str, object],
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    act_weight: float | None = None,
) -> tuple[onnx.ModelProto, list[EqualizeRecord]]:
    """Rescales every pair whose tensor has statistics (``TensorStats`` by name) and is not in ``skip``
    (``act_weight``: see :func:`estimated_noise`)."""
    records = []
    for pair in find_pairs(model):
        st = stats.get(pair.tensor)
        if st is None or pair.tensor in skip:
            continue
        inits = {i.name: i for i in model.graph.initializer}
        nodes = {n.name: n for n in model.graph.node}
        weights = []
        for name in pair.consumers:
            cons = nodes[name]
            group = proto.conv_attrs(cons).group
            weights.append(
                _column_view(numpy_helper.to_array(inits[cons.input[1]]).astype(np.float64), group)
            )
        ch_range = np.asarray(st.ch_max, dtype=np.float64) - np.minimum(
            np.asarray(st.ch_min, np.float64), 0.0
        )
        scales, alpha = choose_scales(
            weights, ch_range, np.asarray(st.ch_sq, dtype=np.float64), act_weight=act_weight
        )
        if np.all(scales == 1.0):
            continue
        model = apply_scales(model, pair, scales)
        records.append(EqualizeRecord(pair.tensor, alpha, float(scales.max()), float(scales.min())))
    return model, records


class EqualizePass(Pass):
    """Replaces Conv -> Relu -> Conv with an equivalent per-channel rescaled pair that quantizes better.

    Scales come from per-channel activation ranges measured on calibration inputs: ``feeds`` when the quantizer
    passes them, else seeded 64x64 patches of the bundled calibration photos. Tensors in ``skip`` (e.g. the
    input of a clip conv, whose exact 8-bit grid must not move) are left alone. ``modified=False`` when no pair
    changed."""

    name = "equalize"
    phase = FINISH
    rank = 1
    summary = "cross-layer equalization across Conv-ReLU/PReLU-Conv (exact in FP32; helps INT8)"

    def __init__(
        self,
        feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
        skip: frozenset[str] = frozenset(),
        progress: Callable[[int], None] | None = None,
        act_weight: float | None = None,
    ) -> None:
        self.feeds = feeds
        self.skip = skip
        self.progress = progress
        self.act_weight = act_weight  # None: ACT_WEIGHT
        self.records: list = []

    def _feeds(self, model: onnx.ModelProto, ctx: PassContext) -> list[dict[str, np.ndarray]]:
        if self.feeds is not None:
            return [dict(f) for f in self.feeds]
        from etc.quant.calib import calibration_patches
        from etc.runtime import input_specs

        specs = input_specs(model)
        if len(specs) != 1 or specs[0].shape[1] not in (None, 3):
            from etc.runtime import input_sets

            return input_sets(model, ctx.options.input_ranges, sizes=((32, 32), (48, 40)))
        patches = calibration_patches("samples", 2, num=8, patch=64)
        return [{specs[0].name: p} for p in patches]

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        pairs = [p for p in find_pairs(model) if p.tensor not in self.skip]
        if not pairs:
            return PassResult(model, False)
        stats = observe.collect(model, self._feeds(model, ctx), [p.tensor for p in pairs], self.progress)
        out, records = equalize(model, stats, skip=set(self.skip), act_weight=self.act_weight)
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"equalize": len(records)})
