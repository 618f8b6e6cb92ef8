"""Channel duplication: an exact widening that buys int8 weight precision where one channel dominates a row.

::

    before:  x ─> Conv(W1, b1) ─> act ─> t  (C channels)              ─> Conv(W2, b2) ─> y
    after:   x ─> Conv(W1', b1') ─> act ─> t' (C + Σ_c (k_c - 1) ch.)  ─> Conv(W2', b2) ─> y

Row c of W1 and b1[c] are repeated k_c times, so t' holds k_c identical copies of t_c (the activation is
elementwise). Column c of every consumer W2 is cut into k_c equal parts W2[:, c] / k_c, one per copy, so
Σ_j (W2[:, c] / k_c)·t_c = W2[:, c]·t_c at every pixel, borders included (zero padding pads every copy with
zeros). Then the channels are permuted (producer rows and consumer columns alike, also exact) so that each
copy sits next to an ordinary channel: the u8s8 kernel adds the products of channels 2i and 2i + 1 of one tap
in int16 (:mod:`etc.quant.qdq`), and copies of a dominant channel must not share such a pair.

Why it helps: int8 weights have one scale per output row, set by the row's largest weight. In plain SR nets
the carried image channels (the ETDS residual stream, ABPN/ECBSR anchors) meet rows like "1.03 at the centre,
±0.05 around it": the centre spends the whole grid and the corrections get five levels. After the split the
largest weight is 1.03 / k, the step shrinks k times, and error-compensating rounding (GPTQ, which sees the
copies as identical inputs) spreads the centre over k integer columns while the corrections use the finer
step. Activation quantization is unchanged: the copies are identical, quantized with the same parameters.

Exactness conditions (checked by :func:`find_sites`): the producer is a Conv with constant weights (and bias),
group 1, whose output is read only by the activation (Relu, LeakyRelu) or directly only by the consumers;
every reader of t is a Conv with constant weights, group 1, taking t as its data input; neither tensor is a
graph output. Copies are whole numbers >= 1.

:func:`choose_copies`: for every consumer row whose largest weight lies in one channel's column and is at
least ``min_ratio`` times the largest weight of every other channel, that channel gets
max(2, ceil(ratio / ``per_copy``)) copies, at most ``max_copies``: each copy's weight stays within
``per_copy`` (2) times the runner-up. Channels dominated 2-4x get two copies; the carried image channels (read
with ~1 against ~0.1) get the most, which :mod:`etc.quant.stagger` turns into activation precision as well.
``per_copy`` = 2 rather than 1 buys the same drop with fewer channels (bench/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from etc import proto
from etc.pipeline import FINISH, Pass, PassContext, PassResult

ELEMENTWISE = frozenset({"Relu", "LeakyRelu"})
MAX_COPIES = 3
MIN_RATIO = 2.0
PER_COPY = 2.0  # after the split the dominant channel's weight is at most this times the runner-up's


Site = proto.ConvSite  # a tensor made by a Conv (through its activation) and read by Convs


@dataclass(frozen=True)
class NoSite:
    """Why a Conv's output cannot be widened."""

    producer: str
    reason: str


def check_site(model: onnx.ModelProto, node: onnx.NodeProto) -> Site | NoSite:
    """The site rooted at Conv ``node``, or why the exactness conditions of the module doc fail."""
    consts = proto.initializer_names(model)
    readers = proto.readers(model)
    outputs = {o.name for o in model.graph.output}
    if not proto.is_const_conv(node, consts):
        return NoSite(node.name, "producer is not a Conv with constant weights")
    if proto.conv_attrs(node).group != 1:
        return NoSite(node.name, "producer is a grouped Conv")
    tensor, act = node.output[0], None
    if tensor in outputs:
        return NoSite(node.name, "producer output is a graph output")
    users = readers.get(tensor, [])
    if len(users) == 1 and users[0].op_type not in ("Conv",):
        if users[0].op_type not in ELEMENTWISE:
            return NoSite(node.name, f"activation {users[0].op_type} is not Relu/LeakyRelu")
        act = users[0]
        tensor = act.output[0]
        if tensor in outputs:
            return NoSite(node.name, "activation output is a graph output")
        users = readers.get(tensor, [])
    if not users:
        return NoSite(node.name, "no readers")
    for user in users:
        if not proto.is_const_conv(user, consts):
            return NoSite(
                node.name, f"reader {user.name or user.op_type} is not a Conv with constant weights"
            )
        if user.input[0] != tensor or tensor in user.input[1:]:
            return NoSite(node.name, f"reader {user.name} does not take the tensor as its data input")
        if proto.conv_attrs(user).group != 1:
            return NoSite(node.name, f"reader {user.name} is a grouped Conv")
    return Site(tensor, node.name, act.name if act is not None else None, tuple(u.name for u in users))


def find_sites(model: onnx.ModelProto) -> list[Site]:
    """Every Conv -> [Relu | LeakyRelu] -> Conv(s) site where duplication is exact."""
    found = [check_site(model, n) for n in model.graph.node if n.op_type == "Conv"]
    return [s for s in found if isinstance(s, Site)]


def choose_copies(
    weights: list[np.ndarray],
    max_copies: int = MAX_COPIES,
    min_ratio: float = MIN_RATIO,
    per_copy: float = PER_COPY,
) -> np.ndarray:
    """Copies per input channel of the consumer weights (O, C, kh, kw), see the module docstring."""
    channels = weights[0].shape[1]
    copies = np.ones(channels, dtype=np.int64)
    if channels < 2 or max_copies < 2:
        return copies
    for w in weights:
        a = np.abs(np.asarray(w, np.float64)).max(axis=(2, 3))
        for row in a:
            c = int(np.argmax(row))
            other = float(np.delete(row, c).max())
            if row[c] <= 0 or row[c] < min_ratio * other:
                continue
            ratio = row[c] / other if other > 0 else float(max_copies)
            copies[c] = max(copies[c], min(max_copies, max(2, math.ceil(ratio / per_copy))))
    return copies


def channel_order(copies: np.ndarray) -> list[int]:
    """Source channel of every widened channel: the copies of each duplicated channel interleaved with
    ordinary channels, so no two copies share a (2i, 2i + 1) kernel pair while ordinary channels remain."""
    heavy = [c for c, k in enumerate(copies) for _ in range(int(k)) if k > 1]
    light = [c for c, k in enumerate(copies) if k == 1]
    order: list[int] = []
    while heavy or light:
        if heavy:
            order.append(heavy.pop(0))
        if light:
            order.append(light.pop(0))
    return order


def duplicate(model: onnx.ModelProto, site: Site, copies: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` with the channels of ``site.tensor`` duplicated ``copies`` times (module doc)."""
    copies = np.asarray(copies)
    if copies.dtype.kind not in "iu" or np.any(copies < 1):
        raise ValueError("copies must be whole numbers >= 1")
    order = channel_order(copies)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = {n.name: n for n in out.graph.node}
    update = proto.initializer_updater(out, "_dup")

    prod = nodes[site.producer]
    prod.input[1] = update(prod.input[1], lambda w: w[order])
    if len(prod.input) > 2 and prod.input[2]:
        prod.input[2] = update(prod.input[2], lambda b: b[order])
    share = 1.0 / copies[order].astype(np.float64)
    for name in site.consumers:
        cons = nodes[name]
        cons.input[1] = update(cons.input[1], lambda w: w[:, order] * share.reshape(1, -1, 1, 1))
    changed = {prod.output[0], site.tensor}
    keep = [v for v in out.graph.value_info if v.name not in changed]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    proto.drop_unused_initializers(out)
    return out


@dataclass
class SplitRecord:
    tensor: str
    channels: int
    added: int
    max_copies: int


def split_channels(
    model: onnx.ModelProto,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    max_copies: int = MAX_COPIES,
    min_ratio: float = MIN_RATIO,
) -> tuple[onnx.ModelProto, list[SplitRecord]]:
    """Duplicates the dominant channels of every site whose tensor is not in ``skip``."""
    records = []
    for site in find_sites(model):
        if site.tensor in skip:
            continue
        inits = {i.name: i for i in model.graph.initializer}
        nodes = {n.name: n for n in model.graph.node}
        weights = [numpy_helper.to_array(inits[nodes[c].input[1]]) for c in site.consumers]
        copies = choose_copies(weights, max_copies, min_ratio)
        if np.all(copies == 1):
            continue
        model = duplicate(model, site, copies)
        records.append(
            SplitRecord(site.tensor, len(copies), int(copies.sum() - len(copies)), int(copies.max()))
        )
    return model, records


class SplitPass(Pass):
    """Replaces Conv -> Relu -> Conv with an equivalent wider pair whose dominant input channels are copied."""

    name = "split"
    phase = FINISH
    rank = 2
    summary = "duplicate channels that dominate a consumer row (exact in FP32; finer int8 weight grids)"

    def __init__(self, skip: frozenset[str] = frozenset(), max_copies: int = 3) -> None:
        self.skip = skip
        self.max_copies = max_copies
        self.records: list = []

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        out, records = split_channels(model, skip=set(self.skip), max_copies=self.max_copies)
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"split": len(records)})
