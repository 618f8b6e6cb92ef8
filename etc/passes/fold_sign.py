"""Signs fold away: Neg into the conv that produces it, or into the Add/Sub that reads it.

    x ─► Conv(W, b) ─► Neg            ==>   x ─► Conv(-W, -b)
    a ──────────┐                          a ──┐
    b ─► Neg ───┴─► Add               ==>   b ──┴─► Sub          (a + (-b) = a - b; Add(-b, a) likewise)
    a ──────────┐                          a ──┐
    b ─► Neg ───┴─► Sub               ==>   b ──┴─► Add          (a - (-b) = a + b)
    a, b ─► Sub ─► Neg                ==>   b, a ─► Sub          (-(a - b) = b - a)
    x ─► Neg ─► Neg                   ==>   x

Every rule removes one node and keeps the others, so a sign never costs an op: Sub stays Sub (rep and et_add
read ``a - b`` as the signed sum ``a + (-1)·b`` directly, see rep_parallel and et_add) and only a Neg that
nothing absorbs is left in place.

Exact: negation is exact in floating point (it flips the sign bit), -(W*x + b) = (-W)*x + (-b) at every pixel
(zero padding gives 0 either way), and a + (-b), a - (-b), -(a - b) round as a - b, a + b, b - a. The Neg (or the
Sub under a Neg) must have no other reader and must not be a graph output, so nothing else sees the removed value.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from etc.graph import (
    bypass,
    can_bypass,
    const_value,
    conv_spec,
    conv_weights,
    input_at,
    make_conv,
    make_node,
    only_consumer,
    producer,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _absorbed(ctx: RewriteContext, tensor: gs.Tensor, reader: gs.Node, op: str) -> gs.Node | None:
    """The ``op`` node producing ``tensor`` when ``reader`` is its sole reader (so it can be folded away)."""
    node = producer(tensor)
    if (
        node is None
        or node.op != op
        or len(node.outputs) != 1
        or not only_consumer(ctx.graph, tensor, reader)
    ):
        return None
    return node


class NegIntoConv(Rule):
    """Replaces Conv(W, b) -> Neg with Conv(-W, -b)."""

    name = "neg_into_conv"
    ops = ("Neg",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        conv = producer(node.inputs[0])
        if conv is None or conv.op != "Conv":
            return None
        if conv_spec(conv) is None or const_value(input_at(conv, 1)) is None:
            raise Decline("the conv's weights are not constant")
        bias = input_at(conv, 2)
        if bias is not None and const_value(bias) is None:
            raise Decline("the conv's bias is not constant")
        if _absorbed(ctx, node.inputs[0], node, "Conv") is None:
            raise Decline("the conv output is also read elsewhere")
        return Match([conv, node])

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        conv, node = match.nodes
        weight, bias = conv_weights(conv)
        spec = conv_spec(conv)
        assert spec is not None
        x, out = conv.inputs[0], node.outputs[0]
        make_conv(ctx.graph, ctx.namer, x, -weight, -bias, spec, output=out, name=conv.name or "Conv")


@dataclass(frozen=True)
class NegatedOperand:
    """Which operand of the Add/Sub the Neg produces."""

    index: int


class NegIntoSum(Rule):
    """Replaces Add(a, Neg(b)) with Sub(a, b) and Sub(a, Neg(b)) with Add(a, b)."""

    name = "neg_into_sum"
    ops = ("Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2 or len(node.outputs) != 1 or node.inputs[0] is node.inputs[1]:
            return None
        for index in (1, 0) if node.op == "Add" else (1,):
            neg = _absorbed(ctx, node.inputs[index], node, "Neg")
            if neg is not None:
                return Match([node, neg], NegatedOperand(index))
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, neg = match.nodes
        index = match.data.index
        other = node.inputs[1 - index]
        op = "Sub" if node.op == "Add" else "Add"
        out = node.outputs[0]
        inputs = [other, neg.inputs[0]]
        make_node(ctx.graph, ctx.namer, op, inputs, output=out, name=op)


class NegOfSub(Rule):
    """Replaces Neg(Sub(a, b)) with Sub(b, a) and Neg(Neg(x)) with x."""

    name = "neg_of_sub"
    ops = ("Neg",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        for op in ("Sub", "Neg"):
            inner = _absorbed(ctx, node.inputs[0], node, op)
            if inner is not None and len(inner.inputs) == (2 if op == "Sub" else 1):
                if op == "Neg" and not can_bypass(ctx.graph, inner.inputs[0], node.outputs[0]):
                    raise Decline("Neg(Neg(x)) maps a graph input straight to a graph output")
                return Match([node, inner])
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, inner = match.nodes
        out = node.outputs[0]
        if inner.op == "Neg":  # both go; can_bypass checked that they can
            bypass(ctx.graph, node)
            bypass(ctx.graph, inner)
            return
        a, b = inner.inputs
        make_node(ctx.graph, ctx.namer, "Sub", [b, a], output=out, name="Sub")


rules = RuleSet([NegIntoConv(), NegIntoSum(), NegOfSub()])
