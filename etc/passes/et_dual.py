"""Dual streams (ETDS): a Concat of activated convs becomes one block conv over the union of their inputs.

    a ──> Conv_1 ──> Relu ──┐                       ┌──────────── Concat(a, b) ──> Conv ──> Relu
    b ──> Conv_2 ──> Relu ──┴─> Concat       ==>    W = [[W_1 on a, 0     ],      b = [b_1; b_2]
                                                         [0,        W_2 on b]]

Inputs are flattened through channel Concats and shared, so ETDS's cross-stream block, after et_add turned
``Conv_b(x) + Conv_r2b(r)`` into ``Conv([W_b | W_r2b])(Concat(x, r))``, merges with the residual stream
``Conv_r(r)`` into the block-triangular conv [[W_b, W_r2b], [0, W_r]] on Concat(x, r); repeated from the last
block upward, the two streams become one plain chain.

Exact when every conv is stride 1, dilation 1 and same-padded (odd kernel, pads k//2): smaller kernels are centred
in the largest with zero taps and every branch zero-pads its own input exactly as the merged conv pads the union.
Every branch has the same activation (Relu, PRelu with per-channel slopes, LeakyRelu, or none; LeakyRelu mixed
with Relu/PRelu or another alpha becomes a PRelu with each branch's slopes); each merged node is read only by the
Concat (nothing is computed twice). Grouped convs are merged as their dense equivalent.

The operand machinery (etc.passes._merge: :class:`MergeOperand`, :func:`merge_kernels`, :func:`union_input`) is
shared with et_carry (a bare tensor as an identity operand) and et_add (rows summed instead of stacked).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from etc.cost import concat_merge_widening
from etc.passes._merge import match_concat_merge, rewrite_concat_merge
from etc.rules import Match, RewriteContext, Rule, RuleSet


class MergeDualStream(Rule):
    """Replaces a Concat of activated convs (ETDS streams) with one block conv over the union of their inputs."""

    name = "dual_stream"
    ops = ("Concat",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        found = match_concat_merge(ctx, node, carry=False)
        if found is not None:  # cost declaration: zero blocks and grouped -> dense (etc.cost)
            found.widening = concat_merge_widening(ctx, node, found.data, carry=False)
        return found

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        rewrite_concat_merge(ctx, match)


rules = RuleSet([MergeDualStream()])
