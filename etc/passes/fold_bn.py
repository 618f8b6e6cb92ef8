"""BatchNormalization folds into the Conv before it, or becomes a 1x1 depthwise Conv.

    Conv(W, b) ─► BN(γ, β, μ, σ²)     ─►   Conv(a·W, a·(b - μ) + β)         a = γ / sqrt(σ² + ε) per channel
    ConvTranspose(W, b) ─► BN          ─►   ConvTranspose with W[:, j] scaled by a of output channel j
    x ─► BN  (no conv before it)       ─►   Conv 1x1, group = C, W = a, b = β - a·μ

Exact for inference-mode BN (training_mode 0, one output): it is a per-channel affine map. The Conv must have no
other reader, or the unscaled value would be lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import (
    ConvSpec,
    batchnorm_affine,
    const_value,
    constant,
    conv_weights,
    input_at,
    make_conv,
    only_consumer,
    producer,
    retire,
    static_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class ChannelAffine:
    """BN(x) = a·x + c per channel."""

    a: np.ndarray
    c: np.ndarray


def bn_affine(node: gs.Node) -> ChannelAffine:
    """The per-channel affine map of an inference BatchNormalization; raises Decline saying why it is not one."""
    try:
        return ChannelAffine(*batchnorm_affine(node))
    except ValueError as err:
        raise Decline(str(err)) from None


class BatchNormIntoConv(Rule):
    """Replaces Conv/ConvTranspose -> BatchNormalization with one scaled Conv/ConvTranspose."""

    name = "bn_into_conv"
    ops = ("BatchNormalization",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        conv = producer(node.inputs[0])
        if conv is None or conv.op not in ("Conv", "ConvTranspose"):
            return None
        if const_value(input_at(conv, 1)) is None:
            raise Decline("conv weights are not constant")
        if not only_consumer(ctx.graph, conv.outputs[0], node):
            raise Decline("the conv output is also read elsewhere")
        return Match([conv, node], bn_affine(node))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        conv, bn = match.nodes
        a, c = match.data.a, match.data.c
        weight, bias = conv_weights(conv)
        if conv.op == "Conv":
            weight = weight * a.reshape(-1, 1, 1, 1)
        else:
            group = int(conv.attrs.get("group", 1))
            per_out = weight.shape[1]
            per_in = weight.shape[0] // group
            for g in range(group):
                weight[g * per_in : (g + 1) * per_in] *= a[g * per_out : (g + 1) * per_out].reshape(
                    1, -1, 1, 1
                )
        bias = a * bias + c
        inputs = [
            conv.inputs[0],
            constant(ctx.namer, f"{conv.name}.weight", weight),
            constant(ctx.namer, f"{conv.name}.bias", bias),
        ]
        merged = gs.Node(conv.op, ctx.namer(conv.name), dict(conv.attrs), inputs, [])
        out = bn.outputs[0]
        bn.outputs.remove(out)  # the merged node takes over the BN's output tensor
        merged.outputs.append(out)
        ctx.graph.nodes.append(merged)
        retire([bn, conv])


class BatchNormToDepthwiseConv(Rule):
    """Replaces a BatchNormalization that follows no conv with a 1x1 depthwise Conv."""

    name = "bn_to_conv"
    ops = ("BatchNormalization",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        feeder = producer(node.inputs[0])
        if feeder is not None and feeder.op in ("Conv", "ConvTranspose"):
            return None  # BatchNormIntoConv's business
        shape = node.inputs[0].shape
        if shape is None or len(shape) != 4:
            raise Decline("BatchNormalization input is not known to be 4-D")
        affine = bn_affine(node)
        count = static_channels(node.inputs[0]) or affine.a.size
        if count != affine.a.size:
            raise Decline("channel count differs from the BN parameters")
        return Match([node], affine)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node = match.nodes[0]
        a, c = match.data.a, match.data.c
        spec = ConvSpec((1, 1), (0, 0, 0, 0), group=a.size)
        make_conv(
            ctx.graph,
            ctx.namer,
            node.inputs[0],
            a.reshape(-1, 1, 1, 1),
            c,
            spec,
            output=node.outputs[0],
            name=f"{node.name}_conv",
        )
        retire([node])


rules = RuleSet([BatchNormIntoConv(), BatchNormToDepthwiseConv()])
