"""BatchNormalization folds into the Conv before it, or becomes a 1x1 depthwise Conv.

    Conv(W, b) ─► BN(γ, β, μ, σ²)     ─►   Conv(a·W, a·(b - μ) + β)         a = γ / sqrt(σ² + ε) per channel
    ConvTranspose(W, b) ─► BN          ─►   ConvTranspose with W[:, j] scaled by a of output channel j
    x ─► BN  (no conv before it)       ─►   Conv 1x1, group = C, W = a, b = β - a·μ

Exact for inference-mode BN (training_mode 0, one output): it is a per-channel affine map. The Conv must have no
other reader, or the unscaled value would be lost.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import (
    ConvSpec,
    batchnorm_affine,
    channels,
    const_value,
    conv_weights,
    input_at,
    make_conv,
    only_consumer,
    producer,
)
from etc.rules import Match, NoMatch, RewriteContext, Rule, RuleSet


def bn_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray] | NoMatch:
    """(a, c) with BN(x) = a·x + c per channel, or the reason it is not an inference affine."""
    try:
        return batchnorm_affine(node)
    except ValueError as err:
        return NoMatch(str(err))


class BatchNormIntoConv(Rule):
    """Replaces Conv/ConvTranspose -> BatchNormalization with one scaled Conv/ConvTranspose."""

    name = "bn_into_conv"
    ops = ("BatchNormalization",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | NoMatch | None:
        conv = producer(node.inputs[0])
        if conv is None or conv.op not in ("Conv", "ConvTranspose"):
            return None
        if const_value(input_at(conv, 1)) is None:
            return NoMatch("conv weights are not constant")
        if not only_consumer(ctx.graph, conv.outputs[0], node):
            return NoMatch("the conv output is also read elsewhere")
        affine = bn_affine(node)
        if isinstance(affine, NoMatch):
            return affine
        return Match([conv, node], {"affine": affine})

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        conv, bn = match.nodes
        a, c = match.data["affine"]
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
            gs.Constant(ctx.namer(f"{conv.name}.weight"), weight.astype(np.float32)),
            gs.Constant(ctx.namer(f"{conv.name}.bias"), bias.astype(np.float32)),
        ]
        merged = gs.Node(conv.op, ctx.namer(conv.name), dict(conv.attrs), inputs, [])
        out = bn.outputs[0]
        bn.outputs.remove(out)
        merged.outputs.append(out)
        ctx.graph.nodes.append(merged)
        bn.inputs.clear()
        bn.outputs.clear()
        conv.outputs.clear()
        conv.inputs.clear()


class BatchNormToDepthwiseConv(Rule):
    """Replaces a BatchNormalization that follows no conv with a 1x1 depthwise Conv."""

    name = "bn_to_conv"
    ops = ("BatchNormalization",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | NoMatch | None:
        feeder = producer(node.inputs[0])
        if feeder is not None and feeder.op in ("Conv", "ConvTranspose"):
            return None  # BatchNormIntoConv's business
        shape = node.inputs[0].shape
        if shape is None or len(shape) != 4:
            return NoMatch("BatchNormalization input is not known to be 4-D")
        affine = bn_affine(node)
        if isinstance(affine, NoMatch):
            return affine
        count = channels(node.inputs[0]) or affine[0].size
        if count != affine[0].size:
            return NoMatch("channel count differs from the BN parameters")
        return Match([node], {"affine": affine})

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node = match.nodes[0]
        a, c = match.data["affine"]
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
        node.inputs.clear()
        node.outputs.clear()


rules = RuleSet([BatchNormIntoConv(), BatchNormToDepthwiseConv()])
