"""Per-channel constant Mul/Add/Sub/Div fold into the neighbouring Conv.

After the conv (always exact, per output channel o):
    Conv(W, b) ─► Mul(c)   ─►  Conv(c·W, c·b)
    Conv(W, b) ─► Div(c)   ─►  Conv(W/c, b/c)          (c ≠ 0)
    Conv(W, b) ─► Add(c)   ─►  Conv(W, b + c)
    Conv(W, b) ─► Sub(c)   ─►  Conv(W, b - c)          (x - c)
    Conv(W, b) ─► c - x    ─►  Conv(-W, c - b)         (negation is exact; zero padding stays zero)

Before the conv (per input channel i):
    Mul(c) ─► Conv(W, b)   ─►  Conv(W·c_i, b)          exact: zero padding stays zero (0·c = 0)
    Add(c) ─► Conv(W, b)   ─►  Conv(W, b + Σ W·c)      only without padding: a zero-padded border would see
                                                       c, not 0, in the original (refused otherwise)

The constant must broadcast along the channel axis only (shape (C,1,1), (1,C,1,1) or a scalar), and the
intermediate tensor must have no other reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import (
    const_value,
    conv_spec,
    conv_weights,
    make_conv,
    only_consumer,
    per_channel_constant,
    producer,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _data_and_constant(node: gs.Node) -> tuple[gs.Tensor, np.ndarray, int] | None:
    """(data tensor, constant, index of data) for a binary op with one constant operand."""
    if len(node.inputs) != 2:
        return None
    for data in (0, 1):
        value = const_value(node.inputs[1 - data])
        if value is not None and const_value(node.inputs[data]) is None:
            return node.inputs[data], value, data
    return None


def _channel_vector(value: np.ndarray, count: int) -> np.ndarray | None:
    flat = per_channel_constant(value)
    if flat is None or flat.size not in (1, count):
        return None
    return np.broadcast_to(flat.astype(np.float64), (count,)).copy()


def _replace_conv(ctx: RewriteContext, conv: gs.Node, weight, bias, output: gs.Tensor, x: gs.Tensor) -> None:
    spec = conv_spec(conv)
    make_conv(ctx.graph, ctx.namer, x, weight, bias, spec, output=output, name=conv.name)


@dataclass(frozen=True)
class AffineAfter:
    """The per-channel constant after a Conv, and whether it is subtracted from (c - conv) rather than applied."""

    vector: np.ndarray
    negated: bool


@dataclass(frozen=True)
class AffineBefore:
    """The per-channel constant before a Conv and the tensor it was applied to."""

    vector: np.ndarray
    x: gs.Tensor


class AffineAfterConv(Rule):
    """Replaces Conv -> Mul/Div/Add/Sub(per-channel constant) with one Conv."""

    name = "affine_after_conv"
    ops = ("Mul", "Div", "Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        found = _data_and_constant(node)
        if found is None:
            return None
        x, value, data = found
        conv = producer(x)
        if conv is None or conv.op != "Conv" or conv_spec(conv) is None:
            return None
        if node.op == "Div" and data != 0:
            raise Decline("constant Div x is not affine in x per channel")
        weight, _ = conv_weights(conv)
        vector = _channel_vector(value, weight.shape[0])
        if vector is None:
            raise Decline("constant does not broadcast along the channel axis only")
        if node.op == "Div" and np.any(vector == 0):
            raise Decline("division by zero")
        if not only_consumer(ctx.graph, x, node):
            raise Decline("the conv output is also read elsewhere")
        return Match([conv, node], AffineAfter(vector, node.op == "Sub" and data != 0))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        conv, node = match.nodes
        c = match.data.vector
        weight, bias = conv_weights(conv)
        if node.op == "Mul":
            weight, bias = weight * c.reshape(-1, 1, 1, 1), bias * c
        elif node.op == "Div":
            weight, bias = weight / c.reshape(-1, 1, 1, 1), bias / c
        elif node.op == "Add":
            bias = bias + c
        elif match.data.negated:
            weight, bias = -weight, c - bias
        else:
            bias = bias - c
        _replace_conv(ctx, conv, weight, bias, node.outputs[0], conv.inputs[0])


class AffineBeforeConv(Rule):
    """Replaces Mul/Add(per-channel constant) -> Conv with one Conv (Add only when the Conv has no padding)."""

    name = "affine_before_conv"
    ops = ("Conv",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        pre = producer(node.inputs[0])
        if pre is None or pre.op not in ("Mul", "Add", "Sub", "Div"):
            return None
        spec = conv_spec(node)
        found = _data_and_constant(pre)
        if spec is None or found is None:
            return None
        x, value, data = found
        if pre.op in ("Sub", "Div") and data != 0:
            return None
        weight, _ = conv_weights(node)
        vector = _channel_vector(value, weight.shape[1] * spec.group)
        if vector is None:
            raise Decline("constant does not broadcast along the channel axis only")
        if pre.op == "Div" and np.any(vector == 0):
            raise Decline("division by zero")
        if pre.op in ("Add", "Sub") and any(spec.pads):
            raise Decline(
                f"{pre.op} before a zero-padded Conv is not exact: the border would see the constant, not 0"
            )
        if not only_consumer(ctx.graph, pre.outputs[0], node):
            raise Decline("the scaled tensor is also read elsewhere")
        return Match([pre, node], AffineBefore(vector, x))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        pre, conv = match.nodes
        c = match.data.vector
        spec = conv_spec(conv)
        weight, bias = conv_weights(conv)
        per_group = weight.shape[1]
        out_per_group = weight.shape[0] // spec.group
        columns = np.empty((weight.shape[0], per_group))  # c seen by each (output row, input column)
        for g in range(spec.group):
            columns[g * out_per_group : (g + 1) * out_per_group] = c[g * per_group : (g + 1) * per_group]
        if pre.op == "Mul":
            weight = weight * columns[:, :, None, None]
        elif pre.op == "Div":
            weight = weight / columns[:, :, None, None]
        else:
            sign = 1.0 if pre.op == "Add" else -1.0
            bias = bias + sign * np.einsum("oihw,oi->o", weight, columns)
        _replace_conv(ctx, conv, weight, bias, conv.outputs[0], match.data.x)


rules = RuleSet([AffineAfterConv(), AffineBeforeConv()])
