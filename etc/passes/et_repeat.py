"""Anchors and repeats become 1x1 selection convs.

    x ──> Unsqueeze ──> Tile | Expand ──> Reshape ──> a          x ──> Conv1x1(K) ──> a
          (Shape / Slice / Concat / Constant shape chains)  ==>  K[o, c] = 1 where output channel o copies c

    repeat_interleave(x, n, dim=1): o copies o // n        Tile / Concat([x] * n): o copies o % C

Any region of linear data-movement ops between two tensors is handled by ``etc.passes._region``: the
whitelist proves linearity, probing in onnxruntime reads K (both exporters' spellings, static and dynamic H/W, with
shape chains that cannot be constant-folded). K is reproduced exactly, so Tile and repeat_interleave, which differ
and which DepthToSpace(CRD) turns into colour mixing versus nearest upsampling, each keep their own map.

    Add(h, g)  with g of 1 channel broadcast over h's C channels  ==>  Add(h, Conv1x1(ones(C, 1))(g))

Exact: a selection conv computes exactly the copies (0/1 weights, no bias); the broadcast rule needs both operands
4-D with equal spatial dims, only the channel dim broadcasting.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from etc.cost import copy_widening
from etc.graph import ConvSpec, channels_of, const_value, make_conv, same_spatial, set_channels
from etc.passes._region import DATA_OPS, RegionError, channel_map, find_region, is_region_exit
from etc.rules import Match, NoMatch, RewriteContext, Rule, RuleSet

ONE_BY_ONE = ConvSpec((1, 1), (0, 0, 0, 0))


class RepeatToConv(Rule):
    """Replaces a channel-only data-movement region (Tile, repeat_interleave, Concat([x]*n), ...) with a 1x1 conv."""

    name = "repeat_to_conv"
    ops = tuple(DATA_OPS)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | NoMatch | None:
        for out in node.outputs:
            shape = out.shape
            if shape is not None and len(shape) != 4:
                continue
            if not is_region_exit(ctx.graph, out):
                continue
            found = self._region(ctx, out)
            if found is not None:
                return found
        return None

    def _region(self, ctx: RewriteContext, out: gs.Tensor) -> Match | NoMatch | None:
        cache = ctx.__dict__.setdefault("_repeat_cache", {})
        key = (out.name, id(producer_of(out)))
        if key in cache:
            return cache[key]
        result = self._probe(ctx, out)
        cache[key] = result
        return result

    def _probe(self, ctx: RewriteContext, out: gs.Tensor) -> Match | NoMatch | None:
        try:
            region = find_region(out)
        except RegionError as err:
            return NoMatch(str(err))
        if region is None:
            return None
        channels = channels_of(region.source)
        if channels is None:
            return NoMatch(f"channel count of '{region.source.name}' is unknown")
        try:
            kernel = channel_map(region, channels, int(ctx.graph.opset or 17))
        except RegionError as err:
            return NoMatch(str(err))
        if kernel.shape[0] == kernel.shape[1] and np.array_equal(kernel, np.eye(channels)):
            return NoMatch("the region is the identity (fold removes it)")
        found = Match([producer_of(out)], {"region": region, "kernel": kernel})
        found.data["widening"] = copy_widening(out, *kernel.shape[:2])  # cost declaration (etc.cost)
        return found

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        region, kernel = match.data["region"], match.data["kernel"]
        conv = make_conv(
            ctx.graph,
            ctx.namer,
            region.source,
            kernel[:, :, None, None],
            None,
            ONE_BY_ONE,
            output=region.output,
            name="etc_select",
        )
        set_channels(conv.outputs[0], region.source, kernel.shape[0])
        ctx.__dict__.pop("_repeat_cache", None)


def producer_of(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


class BroadcastAnchor(Rule):
    """Replaces the 1-channel operand of a channel-broadcasting Add with a 1x1 conv copying it to every channel."""

    name = "broadcast_anchor"
    ops = ("Add",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | NoMatch | None:
        if len(node.inputs) != 2 or any(const_value(t) is not None for t in node.inputs):
            return None
        counts = [channels_of(t) for t in node.inputs]
        if None in counts or sorted(counts)[0] != 1 or max(counts) == 1:  # type: ignore[type-var]
            return None
        if same_spatial(*node.inputs) is not True:
            return NoMatch("cannot prove both operands have the same spatial size")
        narrow = 0 if counts[0] == 1 else 1
        return Match([node], {"index": narrow, "channels": max(counts)})  # type: ignore[type-var]

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, index, channels = match.nodes[0], match.data["index"], match.data["channels"]
        source = node.inputs[index]
        conv = make_conv(
            ctx.graph, ctx.namer, source, np.ones((channels, 1, 1, 1)), None, ONE_BY_ONE, name="etc_broadcast"
        )
        set_channels(conv.outputs[0], source, channels)
        node.inputs[index] = conv.outputs[0]


rules = RuleSet([RepeatToConv(), BroadcastAnchor()])
