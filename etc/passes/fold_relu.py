"""ReLU spellings become one Relu.

    Relu(Relu(x))          ─► Relu(x)
    Max(x, 0)              ─► Relu(x)      (0 a scalar constant; Max(0, x) too)
    Clip(x, 0, +inf|none)  ─► Relu(x)

Exact: each is max(x, 0) elementwise. Max with a constant that is not a zero scalar, or Clip with a finite
upper bound, is left alone (Clip with both bounds is et's business).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import bypass, const_value, input_at, make_node, producer
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _replace_with_relu(ctx: RewriteContext, node: gs.Node, x: gs.Tensor) -> None:
    make_node(ctx.graph, ctx.namer, "Relu", [x], output=node.outputs[0], name=f"{node.name}_relu")


class ReluOfRelu(Rule):
    """Replaces Relu(Relu(x)) with Relu(x)."""

    name = "relu_relu"
    ops = ("Relu",)

    def match(self, ctx, node):
        inner = producer(node.inputs[0])
        if inner is None or inner.op != "Relu":
            return None
        return Match([node])

    def rewrite(self, ctx, match):
        node = match.nodes[0]
        if not bypass(ctx.graph, node):
            _replace_with_relu(ctx, node, producer(node.inputs[0]).inputs[0])


@dataclass(frozen=True)
class MaxZero:
    """The data input of a Max(x, 0)."""

    x: gs.Tensor


class MaxZeroToRelu(Rule):
    """Replaces Max(x, 0) with Relu(x)."""

    name = "max_zero"
    ops = ("Max",)

    def match(self, ctx, node):
        if len(node.inputs) != 2:
            return None
        for data in (0, 1):
            value = const_value(node.inputs[1 - data])
            if value is None or const_value(node.inputs[data]) is not None:
                continue
            if value.size != 1 or float(np.asarray(value).reshape(-1)[0]) != 0.0:
                raise Decline("Max with a non-zero constant is not ReLU")
            if value.ndim > len(node.inputs[data].shape or ()):
                raise Decline("the constant would broadcast the input to a higher rank")
            return Match([node], MaxZero(node.inputs[data]))
        return None

    def rewrite(self, ctx, match):
        _replace_with_relu(ctx, match.nodes[0], match.data.x)


class ClipZeroToRelu(Rule):
    """Replaces Clip(x, 0, +inf) with Relu(x)."""

    name = "clip_zero_inf"
    ops = ("Clip",)

    def match(self, ctx, node):
        low_t, high_t = input_at(node, 1), input_at(node, 2)
        low = const_value(low_t) if low_t is not None else node.attrs.get("min")
        if low is None or float(np.asarray(low).reshape(-1)[0]) != 0.0:
            return None
        if high_t is not None:
            high = const_value(high_t)
            if high is None or np.isfinite(np.asarray(high, dtype=np.float64)).any():
                return None
        elif "max" in node.attrs and abs(node.attrs["max"]) < 3e38:
            return None
        return Match([node])

    def rewrite(self, ctx, match):
        node = match.nodes[0]
        _replace_with_relu(ctx, node, node.inputs[0])


rules = RuleSet([ReluOfRelu(), MaxZeroToRelu(), ClipZeroToRelu()])
