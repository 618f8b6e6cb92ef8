"""``--align-channels N``: conv widths rounded up to a multiple of N with zero channels (as the official ETDS/ABPN
converters do with N = 4).

    x ──> Conv(O) ──> [Relu | PRelu | LeakyRelu] ──> Conv_1, Conv_2, ...     ==>
    x ──> Conv([W; 0], [b; 0]) ──> [Relu | PRelu(slopes; 0) | LeakyRelu] ──> Conv_k([V_k | 0]) ...

Exact always: the extra channels are 0 everywhere (zero rows, zero bias, relu(0) = prelu(0) = leaky_relu(0) = 0)
and every reader gives them zero columns. Only convs whose output (after an optional activation read by nothing
else) is read exclusively by ungrouped Convs are widened: a conv feeding DepthToSpace or a graph output keeps its
exact width, so no Slice is ever needed (the official x3 models instead widen the last convs to 28 and slice one channel off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.cost import align_widening
from etc.graph import (
    const_value,
    constant,
    conv_spec,
    conv_weights,
    input_at,
    is_graph_output,
    make_conv,
    make_node,
    retire,
    set_channels,
)
from etc.passes._merge import ACTIVATIONS
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _conv_readers(ctx: RewriteContext, tensor: gs.Tensor, width: int) -> list[gs.Node]:
    """The ungrouped Convs reading ``tensor`` (of ``width`` channels); raises Decline when another node reads it."""

    def kept(why: str) -> Decline:
        return Decline(f"width {width} kept: {why}")

    if is_graph_output(ctx.graph, tensor):
        raise kept("its output is a graph output")
    readers = list(tensor.outputs)
    if not readers:
        raise kept("its output is unused")
    for node in readers:
        if node.op != "Conv" or node.inputs[0] is not tensor:
            raise kept(f"reader {node.name} is {node.op}, not a Conv")
        if int(node.attrs.get("group", 1)) != 1 or conv_spec(node) is None:
            raise kept(f"reader {node.name} is grouped or has non-constant weights")
    return readers


@dataclass(frozen=True)
class WidthPlan:
    """The activation after the conv (or None), the Convs reading it and the rounded-up width."""

    act: gs.Node | None
    readers: list[gs.Node]
    width: int


class AlignChannels(Rule):
    """Replaces a Conv of O outputs with one of ceil(O/N)*N (zero channels), giving its readers zero columns."""

    name = "align_channels"
    ops = ("Conv",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        n = int(ctx.options.align_channels or 1)
        if n <= 1:
            return None
        weight = const_value(input_at(node, 1))
        if weight is None or weight.ndim != 4 or weight.shape[0] % n == 0:
            return None
        if int(node.attrs.get("group", 1)) != 1 or conv_spec(node) is None:
            raise Decline("grouped or non-constant conv")
        out, act = node.outputs[0], None
        users = list(out.outputs)
        if len(users) == 1 and users[0].op in ACTIVATIONS and not is_graph_output(ctx.graph, out):
            act = users[0]
            if act.op == "PRelu" and const_value(input_at(act, 1)) is None:
                raise Decline("PRelu slope is not constant")
            out = act.outputs[0]
        readers = _conv_readers(ctx, out, weight.shape[0])
        width = -(-weight.shape[0] // n) * n
        widening = align_widening(node, readers, width)  # cost declaration (etc.cost)
        return Match([node], WidthPlan(act, readers, width), widening)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        plan: WidthPlan = match.data
        node, act, readers, width = match.nodes[0], plan.act, plan.readers, plan.width
        weight, bias = conv_weights(node)
        extra = width - weight.shape[0]
        wide_w = np.concatenate([weight, np.zeros((extra, *weight.shape[1:]))])
        wide_b = np.concatenate([bias, np.zeros(extra)])
        conv = make_conv(ctx.graph, ctx.namer, node.inputs[0], wide_w, wide_b, conv_spec(node), name="Conv")
        out = conv.outputs[0]
        set_channels(out, node.outputs[0], width)
        done = [node]
        if act is not None:
            inputs = [out]
            if act.op == "PRelu":
                slope = np.asarray(const_value(input_at(act, 1)), dtype=np.float64).reshape(-1)
                slope = np.full(weight.shape[0], slope[0]) if slope.size == 1 else slope
                slope = np.concatenate([slope, np.zeros(extra)]).reshape(-1, 1, 1)
                inputs.append(constant(ctx.namer, "etc_slope", slope))
            new_act = make_node(ctx.graph, ctx.namer, act.op, inputs, attrs=dict(act.attrs), name=act.op)
            set_channels(new_act.outputs[0], node.outputs[0], width)
            out = new_act.outputs[0]
            done.append(act)
        for reader in readers:
            w, b = conv_weights(reader)
            cols = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]))], axis=1)
            make_conv(
                ctx.graph, ctx.namer, out, cols, b, conv_spec(reader), output=reader.outputs[0], name="Conv"
            )
            done.append(reader)
        retire(done)


rules = RuleSet([AlignChannels()])
