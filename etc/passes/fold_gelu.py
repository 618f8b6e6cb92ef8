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
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

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


def _producer_of(node: gs.Node, op: str) -> gs.Node | None:
    """The first input of ``node`` produced by an ``op`` node."""
    return next((p for t in node.inputs if (p := producer(t)) is not None and p.op == op), None)


def _gelu_shaped_chain(x: gs.Tensor, half_out: gs.Tensor) -> tuple[gs.Node, ...] | None:
    """(x / c, Erf, + c, * c) computing ``half_out`` from ``x``, constants unchecked; None when not that shape."""
    half = producer(half_out)
    if half is None or half.op != "Mul":
        return None
    add = _producer_of(half, "Add")
    erf = _producer_of(add, "Erf") if add is not None else None
    scaled = producer(erf.inputs[0]) if erf is not None else None
    if scaled is None or scaled.op not in ("Div", "Mul") or scaled.inputs[0] is not x:
        return None
    return scaled, erf, add, half


class GeluHalfLast(Rule):
    """Reorders ``x * (0.5 * (1 + erf(x / √2)))`` to ``(x * (1 + erf(x / √2))) * 0.5``."""

    name = "gelu_half_last"
    ops = ("Mul",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2:
            return None
        for x, half_out in (node.inputs, node.inputs[::-1]):
            chain = _gelu_shaped_chain(x, half_out)
            if chain is None:
                continue
            scaled, erf, add, half = chain
            if scaled.op != "Div":
                raise Decline("x * (1/√2): onnxruntime fuses no Gelu from this form in either order")
            constants = (_scalar(scaled, x), _scalar(add, erf.outputs[0]), _scalar(half, add.outputs[0]))
            if not all(_close(c, want) for c, want in zip(constants, (SQRT2, 1.0, 0.5), strict=True)):
                raise Decline("the constants are not GELU's (x / √2, + 1, * 0.5)")
            readers = ((erf, add), (add, half), (half, node))
            if not all(only_consumer(ctx.graph, a.outputs[0], b) for a, b in readers):
                raise Decline("an intermediate of the GELU chain is also read elsewhere")
            return Match([scaled, erf, add, half, node], HalfFirstGelu(x, add.outputs[0]))
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
