"""Convs of one input concatenated along channels become one Conv with stacked output channels.

    x ─┬─► Conv_a (k, pads p) ─┐
       └─► Conv_b (k, pads p) ─┴─► Concat(axis=1) ─► y      becomes      x ─► Conv([W_a; W_b], [b_a; b_b]) ─► y

Weight algebra: output rows are stacked in Concat order; biases likewise.

Exact when the convs read the same input (a zero Pad in front counts as padding), have equal strides and
dilations and align on the same output pixels (etc.passes._linear.align), and are dense (group 1; the
stacked rows of grouped convs are not a grouped conv). Only adjacent Concat inputs are stacked, so the channel
order is kept. Convs whose windows differ (3x3 next to 1x1) are left alone: stacking them would zero-pad the
small kernels and raise the multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import embed_kernel
from etc.graph import is_graph_output, make_conv, make_node, producer, retire
from etc.passes._linear import LinearBranch, align, conv_branch, readers
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def _channel_axis(node: gs.Node) -> bool:
    axis = int(node.attrs.get("axis", 0))
    rank = next((len(t.shape) for t in node.inputs if t.shape is not None), None)
    return axis == 1 or (axis == -3 and rank == 4)


def _stackable(ctx: RewriteContext, node: gs.Node, tensor: gs.Tensor) -> LinearBranch | None:
    conv = producer(tensor)
    if conv is None or conv.op != "Conv" or is_graph_output(ctx.graph, tensor) or len(readers(tensor)) != 1:
        return None
    if sum(t is tensor for t in node.inputs) != 1:
        return None
    return conv_branch(conv)


def _check_joinable(run: list[LinearBranch], branch: LinearBranch | None) -> None:
    """Raises Decline unless ``branch`` is a conv that can be stacked under ``run``."""
    if branch is None:
        raise Decline("not a conv")
    if branch.x is not run[0].x:
        raise Decline("different inputs")
    if branch.spec.group != 1 or run[0].spec.group != 1:
        raise Decline("grouped convs cannot be stacked into one grouped conv")
    aligned = align([*run, branch])
    if aligned.spec.kernel != branch.kernel or any(b.kernel != branch.kernel for b in run):
        raise Decline(
            f"kernels differ ({run[0].kernel} vs {branch.kernel}); stacking would raise multiply-adds"
        )


@dataclass(frozen=True)
class StackedRun:
    """The adjacent Concat inputs [start, start + len(run)) made by convs that stack into one."""

    start: int
    run: list[LinearBranch]


class StackConcatConvs(Rule):
    """Replaces a channel Concat of convs of one input with one Conv producing all their channels."""

    name = "stack_concat"
    ops = ("Concat",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if not _channel_axis(node):
            return None
        branches = [_stackable(ctx, node, t) for t in node.inputs]
        reason = ""
        for start, first in enumerate(branches):
            if first is None:
                continue
            run = [first]
            for nxt in branches[start + 1 :]:
                try:
                    _check_joinable(run, nxt)
                except Decline as why:
                    if nxt is not None and nxt.x is first.x:
                        reason = reason or why.reason
                    break
                run.append(nxt)  # type: ignore[arg-type]
            if len(run) > 1:
                return Match([node], StackedRun(start, run))
        if reason:
            raise Decline(reason)
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node = match.nodes[0]
        stacked: StackedRun = match.data
        start, run = stacked.start, stacked.run
        aligned = align(run)
        kh, kw = aligned.spec.kernel
        weight = np.concatenate(
            [embed_kernel(b.weight, kh, kw, *off) for b, off in zip(run, aligned.offsets)]
        )
        bias = np.concatenate([b.bias for b in run])
        inputs = list(node.inputs)
        whole = len(run) == len(inputs)
        output = node.outputs[0] if whole else None
        conv = make_conv(
            ctx.graph, ctx.namer, run[0].x, weight, bias, aligned.spec, output=output, name="rep_conv"
        )
        retire([n for b in run for n in b.nodes])
        if whole:
            retire([node])
            return
        inputs[start : start + len(run)] = [conv.outputs[0]]
        make_node(
            ctx.graph,
            ctx.namer,
            "Concat",
            inputs,
            attrs=dict(node.attrs),
            output=node.outputs[0],
            name="rep_concat",
        )
        retire([node])


rules = RuleSet([StackConcatConvs()])
