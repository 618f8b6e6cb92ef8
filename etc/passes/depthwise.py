"""``depthwise``: a Conv whose channels never mix becomes a depthwise Conv (opt-in: name the pass).

    x(C) ──> Conv(W: C x C x kh x kw, W[o, c] = 0 for o != c) ──>   ==>   x(C) ──> Conv(group=C, W[o, o]) ──>

The clamp of ETDS, ABPN and ECBSR ends in such a conv (Conv1x1(-I, 1), see et_clip): dense it costs C² MACs per
pixel, depthwise C. Exact: only zero products are dropped, every kept product and the bias are the same (a 1x1
depthwise conv is bit-identical; a larger kernel adds the same nonzero terms, possibly in another order). Pads,
strides and dilations are kept, so the borders are the same too.

Not part of ``et``: some NPU compilers handle grouped convs poorly, so the dense form stays the default and
``--passes fold,rep,et,depthwise`` asks for this one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import ConvSpec, conv_spec, conv_weights, input_at, make_conv
from etc.pipeline import FINISH
from etc.rules import Decline, Match, RewriteContext, Rule, RulePass, RuleSet


def diagonal_kernel(weight: np.ndarray) -> np.ndarray | None:
    """The (C, 1, kh, kw) depthwise kernel of a (C, C, kh, kw) kernel that never mixes channels, else None."""
    out_ch, in_ch = weight.shape[:2]
    if out_ch != in_ch or out_ch < 2:
        return None
    mixing = weight.copy()
    index = np.arange(out_ch)
    mixing[index, index] = 0
    if np.any(mixing):
        return None
    return weight[index, index][:, None].copy()


@dataclass(frozen=True)
class Depthwise:
    """The depthwise form of a matched Conv: its (C, 1, kh, kw) kernel and its spec with group C."""

    kernel: np.ndarray
    spec: ConvSpec


class DiagonalToDepthwise(Rule):
    """Replaces a group-1 Conv with a diagonal channel matrix by the depthwise Conv with the same taps."""

    name = "diagonal_to_depthwise"
    ops = ("Conv",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        spec = conv_spec(node)
        if spec is None or spec.group != 1:
            return None
        bias = input_at(node, 2)
        if bias is not None and not isinstance(bias, gs.Constant):
            raise Decline("the bias is not constant")
        weight, _ = conv_weights(node)
        kernel = diagonal_kernel(weight)
        if kernel is None:
            return None
        return Match([node], Depthwise(kernel, dataclasses.replace(spec, group=weight.shape[0])))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        (node,) = match.nodes
        _, bias = conv_weights(node)
        make_conv(
            ctx.graph,
            ctx.namer,
            node.inputs[0],
            match.data.kernel,
            bias,
            match.data.spec,
            output=node.outputs[0],
            name="Conv",
        )


rules = RuleSet([DiagonalToDepthwise()])


class DepthwisePass(RulePass):
    """Lowers convs that never mix channels to depthwise convs (C instead of C² MACs per pixel for 1x1)."""

    name = "depthwise"
    phase = FINISH
    rank = 0
    summary = "convs that never mix channels (e.g. the clamp's Conv1x1(-I)) -> depthwise Conv (opt-in)"
    rules = rules
