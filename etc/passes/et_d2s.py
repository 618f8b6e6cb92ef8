"""Elementwise ops commute with DepthToSpace, which only moves values.

    a ──> D2S ──┐                                a ──┐
                ├─> Add | Sub  ==>                   ├─> Add | Sub ──> D2S
    b ──> D2S ──┘                                b ──┘

    a ──> D2S ──> Relu | Clip | LeakyRelu | Neg   ==>   a ──> Relu | Clip | LeakyRelu | Neg ──> D2S

So ETDS's ``PS(W_L x) + PS(W_RL r)`` becomes one add before the shuffle (then one conv, et_add) and a final clamp
reaches the conv that produces it (et_clip).

Exact when both DepthToSpace nodes have the same blocksize and mode (a missing mode is DCR), the op is elementwise
with scalar parameters (Clip bounds, LeakyRelu alpha) and each DepthToSpace output is read only by the op.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from etc.graph import const_value, input_at, make_node, only_consumer, producer
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _mode(node: gs.Node) -> str:
    mode = node.attrs.get("mode", "DCR")
    return mode.decode() if isinstance(mode, bytes) else str(mode)


def _d2s(ctx: RewriteContext, tensor: gs.Tensor, reader: gs.Node) -> gs.Node | None:
    node = producer(tensor)
    if node is None or node.op != "DepthToSpace" or not only_consumer(ctx.graph, tensor, reader):
        return None
    return node


def _new_d2s(ctx: RewriteContext, like: gs.Node, x: gs.Tensor, output: gs.Tensor) -> None:
    attrs = {"blocksize": int(like.attrs["blocksize"]), "mode": _mode(like)}
    make_node(ctx.graph, ctx.namer, "DepthToSpace", [x], attrs=attrs, output=output, name="DepthToSpace")


class AddThroughDepthToSpace(Rule):
    """Replaces Add/Sub(D2S(a), D2S(b)) with D2S(Add/Sub(a, b))."""

    name = "add_through_d2s"
    ops = ("Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2 or node.inputs[0] is node.inputs[1]:
            return None
        first, second = (_d2s(ctx, t, node) for t in node.inputs)
        if first is None or second is None:
            return None
        if int(first.attrs["blocksize"]) != int(second.attrs["blocksize"]) or _mode(first) != _mode(second):
            raise Decline("the DepthToSpace nodes differ in blocksize or mode")
        return Match([node, first, second])

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, first, second = match.nodes
        add = make_node(ctx.graph, ctx.namer, node.op, [first.inputs[0], second.inputs[0]], name=node.op)
        _new_d2s(ctx, first, add.outputs[0], node.outputs[0])


class ActivationThroughDepthToSpace(Rule):
    """Replaces Relu/Clip/LeakyRelu/Neg(D2S(a)) with D2S(Relu/Clip/LeakyRelu/Neg(a))."""

    name = "activation_through_d2s"
    ops = ("Relu", "Clip", "LeakyRelu", "Neg")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        d2s = _d2s(ctx, node.inputs[0], node)
        if d2s is None:
            return None
        for i in (1, 2):
            bound = input_at(node, i)
            if bound is not None:
                value = const_value(bound)
                if value is None or value.size != 1:
                    raise Decline(f"Clip bound '{bound.name}' is not a constant scalar")
        return Match([node, d2s])

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, d2s = match.nodes
        inputs = [d2s.inputs[0], *node.inputs[1:]]
        op = make_node(ctx.graph, ctx.namer, node.op, inputs, attrs=dict(node.attrs), name=node.op)
        _new_d2s(ctx, d2s, op.outputs[0], node.outputs[0])


rules = RuleSet([AddThroughDepthToSpace(), ActivationThroughDepthToSpace()])
