"""Clip after a conv becomes two Conv+ReLU pairs (ETDS Eq. 12).

    y ──> Conv(W, b) ──> Clip(0, M)   ==>   y ──> Conv(-W, M - b) ──> Relu ──> Conv1x1(-I, M) ──> Relu

    clip(z, 0, M) = relu(M - relu(M - z))     (z > M: relu(M) = M;  0 <= z <= M: z;  z < 0: relu(z) = 0)

Clip bounds come as Constant nodes, initializers, empty inputs (unbounded) or, before opset 11, attributes.
Exact for a lower bound 0 and a finite upper bound M > 0 whenever the Clip reads a Conv read by nothing else (its
weights are negated in place; the 1x1 conv has no padding to worry about). Clip(z, 0, inf) is a plain Relu (fold
rewrites it); other lower bounds would need a third conv and are left alone with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import identity_kernel
from etc.graph import (
    ConvSpec,
    const_value,
    conv_spec,
    conv_weights,
    input_at,
    make_conv,
    make_node,
    only_consumer,
    producer,
    retire,
    set_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class ClipBound:
    """The Clip's finite upper bound M (its lower bound is 0)."""

    hi: float


def clip_bounds(node: gs.Node) -> tuple[float, float] | None:
    """(lo, hi) of a Clip with constant bounds (missing = unbounded), or None when a bound is not constant."""
    lo, hi = float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    for index in (1, 2):
        tensor = input_at(node, index)
        if tensor is None:
            continue
        value = const_value(tensor)
        if value is None or value.size != 1:
            return None
        if index == 1:
            lo = float(value.reshape(-1)[0])
        else:
            hi = float(value.reshape(-1)[0])
    return lo, hi


class ClipToRelu(Rule):
    """Replaces Clip(Conv(y), 0, M) with Relu(Conv1x1(-I, M)(Relu(Conv(-W, M - b)(y))))."""

    name = "clip_to_relu"
    ops = ("Clip",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        bounds = clip_bounds(node)
        if bounds is None:
            raise Decline("Clip bounds are not constant scalars")
        lo, hi = bounds
        if lo == 0 and hi == np.inf:
            return None
        if lo != 0:
            raise Decline(f"lower bound {lo:g} is not 0")
        if not np.isfinite(hi) or hi <= 0:
            raise Decline(f"upper bound {hi:g} is not a finite positive number")
        conv = producer(node.inputs[0])
        if conv is None or conv.op != "Conv":
            raise Decline("the Clip does not read a Conv")
        if not only_consumer(ctx.graph, node.inputs[0], node):
            raise Decline("the Conv output is read by other nodes too")
        if conv_spec(conv) is None or (
            input_at(conv, 2) is not None and const_value(input_at(conv, 2)) is None
        ):
            raise Decline("the Conv weights or bias are not constant")
        return Match([node, conv], ClipBound(hi))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, conv = match.nodes
        hi = match.data.hi
        spec = conv_spec(conv)
        weight, bias = conv_weights(conv)
        out = conv.outputs[0]
        first = make_conv(ctx.graph, ctx.namer, conv.inputs[0], -weight, hi - bias, spec, name="Conv")
        count = weight.shape[0]
        set_channels(first.outputs[0], out, count)
        relu = make_node(ctx.graph, ctx.namer, "Relu", [first.outputs[0]], name="Relu")
        set_channels(relu.outputs[0], out, count)
        one = ConvSpec((1, 1), (0, 0, 0, 0))
        second = make_conv(
            ctx.graph,
            ctx.namer,
            relu.outputs[0],
            -identity_kernel(count),
            np.full(count, hi),
            one,
            name="Conv",
        )
        set_channels(second.outputs[0], out, count)
        make_node(ctx.graph, ctx.namer, "Relu", [second.outputs[0]], output=node.outputs[0], name="Relu")
        retire([node, conv])


rules = RuleSet([ClipToRelu()])
