"""Carry a skip tensor through Conv+ReLU layers as extra identity channels (ETDS Eq. 8/9).

    y ──> Conv ──> Relu ──┐                              ┌ W  0 ┐
                          ├─> Concat      ==>   Concat(y, s) ──> Conv │      │ ──> Relu
    s ────────────────────┘                              └ 0  I ┘   (I: 1 at the centre tap, bias 0)

A skip ``s`` read next to the output of a Conv+Relu becomes extra output rows of that conv reading ``s`` with the
identity kernel, so the Concat moves one layer up; repeated, it reaches the layer that reads ``s`` itself, where
the inputs unify and the Concat disappears (ABPN/ECBSR anchors: et_add first turns ``Conv(h) + anchor(x)`` into a
conv over Concat(h, x)).

Exactness: the identity rows read only the centre tap, so the merged conv's zero padding never reaches them; the
other rows are the original conv (same-padded, stride 1, see et_dual). Relu leaves the carried rows unchanged only
when s >= 0, proved by interval analysis (``ctx.ranges``); otherwise s rides as relu(s) and relu(-s) (rows
[I; -I]) and every reader of the Concat, which must be a Conv, recombines it with columns [V, -V]
(s = relu(s) - relu(-s) holds at every pixel, and zero padding gives 0 = 0 - 0). Under PRelu the carried rows get
slope 0 when s >= 0 (as the official ECBSR_ET) and slope 1 (exactly the identity) otherwise. Under LeakyRelu(alpha)
the carried rows pass unchanged when s >= 0 (leaky_relu(s) = s); a skip not proved >= 0 is refused, with the reason.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from etc.cost import concat_merge_widening
from etc.passes._merge import match_concat_merge, rewrite_concat_merge
from etc.rules import Match, RewriteContext, Rule, RuleSet


class CarrySkip(Rule):
    """Replaces Concat(act(Conv(y)), s) with act(Conv'(Concat(y, s))), s riding along as identity channels."""

    name = "carry_skip"
    ops = ("Concat",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        found = match_concat_merge(ctx, node, carry=True)
        if found is not None:  # cost declaration: the whole chain's added MACs (etc.cost)
            found.widening = concat_merge_widening(ctx, node, found.data, carry=True)
        return found

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        rewrite_concat_merge(ctx, match)


rules = RuleSet([CarrySkip()])
