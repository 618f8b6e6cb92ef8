"""Staggered copies: exact per-copy rescaling that gives identical channel copies different uint8 roundings.

::

    before:  Conv(W1) ─> act ─> t = [.., t_c, t_c, t_c, ..]          ─> Conv(W2: w/3, w/3, w/3) ─> y
    after:   Conv(W1') ─> act ─> t' = [.., t_c, a_1·t_c, a_2·t_c, ..] ─> Conv(W2': w/3, w/(3a_1), w/(3a_2))

Channel duplication (:mod:`etc.quant.split`) leaves k identical copies of a channel that dominates a weight
row. In plain SR nets those are the carried image channels (the ETDS residual, ABPN/ECBSR anchors): they reach
the output through every later layer with gain ~1, and each layer requantizes them on the one per-tensor uint8
grid.
Identical copies round identically, so copying buys weight precision but no activation precision. Copy j
scaled by a_j = 1 - j·``spread`` rounds on a grid that drifts against the others' (its steps are 1/a_j times
as wide in t_c units), so where copy 0 rounds up copy j may round down: averaged over the values a channel
takes, the k rounding errors are nearly uncorrelated and their mean has about 1/k of one copy's variance
(times the mean 1/a_j², at most 1.2 for k = 4 and spread 0.03). With spread 0.03 adjacent copies drift
0.03·255 ≈ 7.6 steps apart over the range, enough to decorrelate on real images; the copy with a_0 = 1 keeps
the range the equalizer chose, the others stay inside it.

Identical copies gain nothing; staggered ones do (bench/RESULTS.md, "Quantizer design measurements"). Offset
copies (relu(z + step/2)) would halve the grid exactly, but a ReLU
does not commute with an offset: keeping them exact needs two correction channels per copy plus a constant
channel for the zero-padded borders, which measured no better per added channel.

Exactness: this is cross-layer equalization restricted to copies (:func:`etc.quant.equalize.apply_scales`):
row c of the producer and its bias are multiplied by a_c > 0, column c of every consumer divided by a_c,
through a positively homogeneous activation (Relu, PRelu, LeakyRelu) whose output is read only by Convs with
constant weights and is not a graph output (:func:`etc.quant.equalize.find_pairs`). Copies are producer rows
whose weights and bias are bitwise equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from etc.pipeline import Pass, PassContext, PassResult
from etc.quant.equalize import apply_scales, find_pairs

SPREAD = 0.03  # a_j = 1 - j·SPREAD for copy j of a group (module doc)


@dataclass
class StaggerRecord:
    """One tensor whose copies were staggered: how many groups and the largest group."""

    tensor: str
    groups: int
    max_copies: int
    min_scale: float


def copy_groups(weight: np.ndarray, bias: np.ndarray | None = None) -> list[list[int]]:
    """Output channels of a Conv whose weights (and bias) are bitwise equal: groups of 2+, in order."""
    rows = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1))
    if bias is not None:
        rows = np.concatenate([rows, np.asarray(bias, np.float32).reshape(-1, 1)], axis=1)
    seen: dict[bytes, list[int]] = {}
    for c, row in enumerate(rows):
        seen.setdefault(row.tobytes(), []).append(c)
    return [g for g in seen.values() if len(g) > 1]


def stagger_scales(channels: int, groups: list[list[int]], spread: float = SPREAD) -> np.ndarray:
    """Per-channel scales: 1 for the first channel of each group and for the rest, 1 - j·spread for copy j."""
    scales = np.ones(channels, dtype=np.float64)
    for group in groups:
        for j, c in enumerate(group[1:], 1):
            scales[c] = 1.0 - j * spread
    if not np.all(scales > 0):
        raise ValueError(f"spread {spread} makes a copy scale non-positive; use spread < 1 / (copies - 1)")
    return scales


def stagger(
    model: onnx.ModelProto,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    spread: float = SPREAD,
) -> tuple[onnx.ModelProto, list[StaggerRecord]]:
    """Rescales the copies at every exact site (module doc) whose tensor is not in ``skip``."""
    records: list[StaggerRecord] = []
    if spread <= 0:
        return model, records
    for pair in find_pairs(model):
        if pair.tensor in skip:
            continue
        inits: Mapping[str, onnx.TensorProto] = {i.name: i for i in model.graph.initializer}
        producer = next(n for n in model.graph.node if n.name == pair.producer)
        weight = numpy_helper.to_array(inits[producer.input[1]])
        has_bias = len(producer.input) > 2 and bool(producer.input[2])
        bias = numpy_helper.to_array(inits[producer.input[2]]) if has_bias else None
        groups = copy_groups(weight, bias)
        if not groups:
            continue
        scales = stagger_scales(weight.shape[0], groups, spread)
        model = apply_scales(model, pair, scales)
        records.append(
            StaggerRecord(pair.tensor, len(groups), max(len(g) for g in groups), float(scales.min()))
        )
    return model, records


class StaggerPass(Pass):
    """Rescales identical channel copies so their uint8 roundings differ (exact in FP32; module doc)."""

    name = "stagger"
    summary = "rescale identical channel copies by 1 - j·spread (exact in FP32; finer effective int8 grid)"

    def __init__(self, skip: frozenset[str] = frozenset(), spread: float = SPREAD) -> None:
        self.skip = skip
        self.spread = spread
        self.records: list[StaggerRecord] = []

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        out, records = stagger(model, skip=set(self.skip), spread=self.spread)
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"stagger": len(records)})
