"""Adds of convs become one conv over the concatenated inputs.

    a ──> Conv_a ──┐                                  Concat(a, b) ──> Conv([W_a | W_b], b_a + b_b)
                   ├─> Add          ==>
    b ──> Conv_b ──┘                 (a bare operand s enters as the identity kernel: Conv_a(a) + s -> [W_a | I])

Sub is a signed Add: ``Conv_a(a) - Conv_b(b)`` becomes ``Conv([W_a | -W_b], b_a - b_b)`` and ``s - Conv(h)``
(DnCNN's ``x - f(x)``) becomes ``Conv([-W | I], -b)`` over Concat(h, s); negating a kernel and its bias is exact
at every pixel (zero padding stays zero).

When both convs read the same tensor (or the same channels through a Concat) the columns add up, so this also
merges parallel branches. Kernels are centred in the largest one; ABPN's ``body(x) + anchor(x)``, once the anchor is
a 1x1 selection conv (et_repeat), becomes one conv over Concat(h, x) that et_carry then pushes up the body.

Exact when both operands have the same shape (no broadcasting: equal channel counts and equal spatial dims) and
every conv is stride 1, dilation 1, same-padded (see et_dual): each conv's zero padding of its own input equals the
merged conv's padding of the union, and the identity kernel reads only the centre tap. A conv is absorbed only
when the Add is its sole reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.cost import add_merge_widening
from etc.graph import channels_of, const_value, make_conv, retire, same_spatial
from etc.passes._merge import MergeOperand, branch_of, merge_kernels, merged_spec, union_input, union_sources
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class AddMerge:
    """The two operands of the Add/Sub as convs and the union of the tensors they read."""

    branches: list[MergeOperand]
    sources: list[gs.Tensor]


class AddToConv(Rule):
    """Replaces Add/Sub(Conv_a(a), Conv_b(b)) (or with a bare s) with one Conv over Concat(a, b)."""

    name = "add_to_conv"
    ops = ("Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2 or any(const_value(t) is not None for t in node.inputs):
            return None
        a, b = node.inputs
        ca, cb = channels_of(a), channels_of(b)
        if ca is None or cb is None or ca != cb:
            return None
        branches = [branch_of(ctx, part, node, activations=False) for part in node.inputs]
        if not any(b.has_conv for b in branches):
            return None
        same = same_spatial(a, b)
        if same is not True:
            why = "differ" if same is False else "cannot be proved equal"
            raise Decline(f"the operands' spatial sizes {why} (Add may broadcast)")
        sources = union_sources(branches)
        if any(channels_of(t) is None for t in sources):
            raise Decline("channel count of an input is unknown")
        widening = add_merge_widening(ctx, node, branches, sources)  # cost declaration (etc.cost)
        return Match([node], AddMerge(branches, sources), widening)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node = match.nodes[0]
        merge: AddMerge = match.data
        branches, sources = merge.branches, merge.sources
        kernels, kh, kw = merge_kernels(branches, sources)
        signs = (1.0, -1.0) if node.op == "Sub" else (1.0, 1.0)
        weight = np.sum([s * k for s, k in zip(signs, kernels)], axis=0)
        bias = np.sum([s * np.asarray(b.bias) for s, b in zip(signs, branches)], axis=0)
        x = union_input(ctx, branches, sources)
        make_conv(
            ctx.graph, ctx.namer, x, weight, bias, merged_spec(kh, kw), output=node.outputs[0], name="Conv"
        )
        retire([node, *[n for b in branches for n in b.nodes]])


rules = RuleSet([AddToConv()])
