"""The erf GELU in the order onnxruntime fuses: ``* x`` before ``* 0.5``.

The dynamo exporter writes GELU as ``0.5 * (1 + erf(x / sqrt2))`` times ``x``; onnxruntime's Gelu fusion matches
only ``x * (1 + erf(x / sqrt2))`` times ``0.5`` (the legacy exporter's order), so the dynamo form stays five
elementwise nodes that also break the NCHWc layout between the convs around them.

    x ─► Div(√2) ─► Erf ─► Add(1) ─► Mul(0.5) ─► Mul(x)    ─►    x ─► Div(√2) ─► Erf ─► Add(1) ─► Mul(x) ─► Mul(0.5)

Exact in floating point: multiplying by 0.5 is exact (``1 + erf`` is 0 or at least 2^-24, never subnormal), so
``x · (0.5·a)`` and ``(x·a) · 0.5`` both round ``x·a·0.5`` once, unless ``x·a`` falls below 2^-125 where halving
can round a subnormal. Conditions: the constants are √2 (a Div: onnxruntime fuses no Gelu from ``* (1/√2)``, so
that form is left alone), 1 and 0.5 within float32 rounding, scalars; every intermediate has one reader; ``x`` is the same tensor at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import const_value, constant, make_node, only_consumer, producer
from etc.rules import Match, RewriteContext, Rule, RuleSet

SQRT2 = float(np.sqrt(2.0))


@dataclass(frozen=True)
class HalfFirstGelu:
    """The GELU's input and the ``1 + erf(x / √2)`` tensor."""

    x: gs.Tensor
    erf_plus_one: gs.Tensor


def _scalar(node: gs.Node, data: gs.Tensor) -> float | None:
    """The scalar constant operand of a binary ``node`` whose other operand is ``data``, or None."""
    if len(node.inputs) != 2 or not any(t is data for t in node.inputs):
        return None
    other = node.inputs[1] if node.inputs[0] is data else node.inputs[0]
    value = const_value(other)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _close(value: float | None, want: float) -> bool:
    return value is not None and abs(value - want) <= 1e-6 * abs(want)


def _is_x_over_sqrt2(node: gs.Node | None, x: gs.Tensor) -> bool:
    """A Div by √2 only: onnxruntime fuses no Gelu from ``x * (1/√2)``, so reordering that form gains nothing."""
    return node is not None and node.op == "Div" and node.inputs[0] is x and _close(_scalar(node, x), SQRT2)


class GeluHalfLast(Rule):
    """Reorders ``x * (0.5 * (1 + erf(x / √2)))`` to ``(x * (1 + erf(x / √2))) * 0.5``."""

    name = "gelu_half_last"
    ops = ("Mul",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2:
            return None
        for x, half_out in (node.inputs, node.inputs[::-1]):
            half = producer(half_out)
            if half is None or half.op != "Mul" or not only_consumer(ctx.graph, half_out, node):
                continue
            chain = self._erf_chain(ctx, half, x)
            if chain is not None:
                return Match([*chain, half, node], HalfFirstGelu(x, chain[-1].outputs[0]))
        return None

    def _erf_chain(self, ctx: RewriteContext, half: gs.Node, x: gs.Tensor) -> list[gs.Node] | None:
        """[x / √2, Erf, + 1] feeding ``half`` (one reader each), or None."""
        for a in half.inputs:
            add = producer(a)
            if add is None or add.op != "Add" or not _close(_scalar(half, a), 0.5):
                continue
            if not only_consumer(ctx.graph, a, half):
                continue
            erf = next(
                (producer(t) for t in add.inputs if producer(t) is not None and producer(t).op == "Erf"), None
            )
            if erf is None or not _close(_scalar(add, erf.outputs[0]), 1.0):
                continue
            scaled = producer(erf.inputs[0])
            if _is_x_over_sqrt2(scaled, x) and only_consumer(ctx.graph, erf.outputs[0], add):
                return [scaled, erf, add]
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        gate = match.nodes[-1]
        found: HalfFirstGelu = match.data
        product = make_node(ctx.graph, ctx.namer, "Mul", [found.x, found.erf_plus_one], name=f"{gate.name}_x")
        make_node(
            ctx.graph,
            ctx.namer,
            "Mul",
            [product.outputs[0], constant(ctx.namer, f"{gate.name}.half", np.array(0.5))],
            output=gate.outputs[0],
            name=f"{gate.name}_half",
        )


rules = RuleSet([GeluHalfLast()])
