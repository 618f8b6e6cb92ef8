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

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.cost import add_merge_widening, copy_widening
from etc.graph import (
    ConvSpec,
    channels_of,
    const_value,
    is_graph_output,
    make_conv,
    producer,
    same_spatial,
    set_channels,
)
from etc.passes._merge import MergeOperand, branch_of, union_sources
from etc.passes._region import DATA_OPS, Region, RegionError, channel_map, find_region, is_region_exit
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

ONE_BY_ONE = ConvSpec((1, 1), (0, 0, 0, 0))


@dataclass(frozen=True)
class ChannelSelection:
    """The data-movement region and its channel map K (out x in): output channel o is sum_c K[o, c] input c."""

    region: Region
    kernel: np.ndarray


@dataclass(frozen=True)
class AnchorCopy:
    """Which operand of the Add has one channel, and how many channels the other has."""

    index: int
    channels: int


class RepeatToConv(Rule):
    """Replaces a channel-only data-movement region (Tile, repeat_interleave, Concat([x]*n), ...) with a 1x1 conv."""

    name = "repeat_to_conv"
    ops = tuple(DATA_OPS)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
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

    def _region(self, ctx: RewriteContext, out: gs.Tensor) -> Match | None:
        """The probed match of the region ending at ``out``, cached per tensor (a decline too) until a rewrite."""
        cache = ctx.__dict__.setdefault("_repeat_cache", {})
        key = (out.name, id(producer(out)))
        if key not in cache:
            try:
                cache[key] = self._probe(ctx, out)
            except Decline as declined:
                cache[key] = declined
        found = cache[key]
        if isinstance(found, Decline):
            raise Decline(found.reason, found.node)
        return found

    def _probe(self, ctx: RewriteContext, out: gs.Tensor) -> Match | None:
        try:
            region = find_region(out)
        except RegionError as err:
            raise Decline(str(err)) from None
        if region is None:
            return None
        channels = channels_of(region.source)
        if channels is None:
            raise Decline(f"channel count of '{region.source.name}' is unknown")
        try:
            kernel = channel_map(region, channels, int(ctx.graph.opset or 17))
        except RegionError as err:
            raise Decline(str(err)) from None
        if kernel.shape[0] == kernel.shape[1] and np.array_equal(kernel, np.eye(channels)):
            raise Decline("the region is the identity (fold removes it)")
        follow_up = anchor_merge_widening(ctx, out, region.source, kernel)
        widening = copy_widening(out, *kernel.shape[:2], follow_up)  # cost declaration (etc.cost)
        return Match([producer(out)], ChannelSelection(region, kernel), widening)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        selection: ChannelSelection = match.data
        region, kernel = selection.region, selection.kernel
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


def anchor_merge_widening(ctx: RewriteContext, out: gs.Tensor, source: gs.Tensor, kernel: np.ndarray):
    """The widening of the merge a copy conv at ``out`` would be the first step of, or None.

    That is an anchor: ``Add(Conv(h), copy(x))``, the copy's only reader, which et_add merges into one conv over
    Concat(h, x) and et_carry then carries x up h's chain (a merge seeded by x). The copy is judged with it
    (etc.cost.copy_widening), so a declined carry leaves no lone copy conv behind. A merge that carries nothing
    is judged on its own by et_add (None here)."""
    readers = out.outputs
    if len(readers) != 1 or readers[0].op not in ("Add", "Sub") or is_graph_output(ctx.graph, out):
        return None
    add = readers[0]
    if len(add.inputs) != 2 or sum(t is out for t in add.inputs) != 1:
        return None
    other = next(t for t in add.inputs if t is not out)
    if channels_of(other) != kernel.shape[0] or same_spatial(source, other) is not True:  # the copy's size
        return None
    try:
        conv = branch_of(ctx, other, add, activations=False)
    except Decline:
        return None
    if not conv.has_conv or channels_of(source) is None:
        return None
    copy = MergeOperand(out, source, kernel[:, :, None, None].astype(np.float64), np.zeros(kernel.shape[0]))
    branches = [conv, copy] if add.inputs[0] is other else [copy, conv]
    found = add_merge_widening(ctx, add, branches, union_sources(branches))
    return found if found.seeds else None


class BroadcastAnchor(Rule):
    """Replaces the 1-channel operand of a channel-broadcasting Add with a 1x1 conv copying it to every channel."""

    name = "broadcast_anchor"
    ops = ("Add",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2 or any(const_value(t) is not None for t in node.inputs):
            return None
        counts = [channels_of(t) for t in node.inputs]
        if None in counts or sorted(counts)[0] != 1 or max(counts) == 1:  # type: ignore[type-var]
            return None
        if same_spatial(*node.inputs) is not True:
            raise Decline("cannot prove both operands have the same spatial size")
        narrow = 0 if counts[0] == 1 else 1
        return Match([node], AnchorCopy(narrow, max(counts)))  # type: ignore[type-var]

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        copy: AnchorCopy = match.data
        node, index, channels = match.nodes[0], copy.index, copy.channels
        source = node.inputs[index]
        conv = make_conv(
            ctx.graph, ctx.namer, source, np.ones((channels, 1, 1, 1)), None, ONE_BY_ONE, name="etc_broadcast"
        )
        set_channels(conv.outputs[0], source, channels)
        node.inputs[index] = conv.outputs[0]


rules = RuleSet([RepeatToConv(), BroadcastAnchor()])
