"""Channel Slice/Split as convs: rows of the producing Conv, or a 1x1 selection Conv.

    x ── Conv(W, b) ── [pointwise ops] ── z ── Slice(axis 1, start:end:step) ──► y
becomes (the Conv and the pointwise ops feed nothing else)
    x ── Conv(W[idx], b[idx]) ── [pointwise ops] ──► y        idx = the selected channels, in order
otherwise
    z ── Conv1x1(S) ──► y                                      S[o, i] = 1 when i = idx[o]

Split on axis 1 is the same per output: each used output gets its own row-selected Conv (reading the
producer's input; together they cost what the producer cost) or its own selection Conv.

Slices that cut one tensor into disjoint ranges covering all its channels (what ``x[:, :k]`` and ``x[:, k:]``
export as, and what an in-place channel write becomes after fold) are first gathered into one Split, so they
get the Split's row-selected convs and the sliced and split forms of a net compile to the same model:

    z ─┬─ Slice(0:k) ──► a                 z ── Split([k, C-k]) ──► a, b
       └─ Slice(k:C) ──► b

Always exact: selecting rows of a conv is selecting its output channels, a pointwise op (Relu, LeakyRelu,
Clip with scalar bounds, Sigmoid, Tanh, ...) commutes with selecting channels, and a 0/1 1x1 kernel copies
values. Conditions checked: constant starts/ends/steps/axes (Slice) or split sizes (Split), axis 1 of a 4-D
tensor, no other axis cut (start 0, end past the last element, step 1), a known channel count. A grouped
producer Conv is not cut (its groups would break); a selection Conv is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import selection_kernel
from etc.cost import selection_widening
from etc.graph import (
    ConvSpec,
    const_value,
    consumers,
    conv_spec,
    input_at,
    is_empty_input,
    is_graph_output,
    make_conv,
    make_conv_rows,
    make_node,
    only_consumer,
    producer,
    retire,
    shape_or_conv_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

INT_LIMIT = 2**31 - 1


def onnx_slice_indices(dim: int, start: int, end: int, step: int) -> list[int]:
    """Indices ONNX Slice selects along an axis of length ``dim`` (negative indices and clamping as in the spec)."""
    if step == 0:
        raise ValueError("step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return list(range(start, end, step))


def _rank(tensor: gs.Tensor) -> int | None:
    if tensor.shape is not None:
        return len(tensor.shape)
    node = producer(tensor)
    return 4 if node is not None and node.op == "Conv" and conv_spec(node) is not None else None


def _slice_args(node: gs.Node) -> tuple[np.ndarray, ...]:
    """(starts, ends, axes, steps) as int arrays; raises Decline saying why they are unknown."""
    if "starts" in node.attrs:  # Slice-1
        starts = np.asarray(node.attrs["starts"])
        ends = np.asarray(node.attrs["ends"])
        axes = np.asarray(node.attrs.get("axes", range(len(starts))))
        return starts, ends, axes, np.ones_like(starts)
    values = [const_value(input_at(node, i)) for i in range(1, 5)]
    for i, value in enumerate(values):
        if value is None and input_at(node, i + 1) is not None:
            raise Decline(f"{('starts', 'ends', 'axes', 'steps')[i]} are not constant")
    starts, ends, axes, steps = values
    if starts is None or ends is None:
        raise Decline("starts/ends are missing")
    axes = np.arange(len(starts)) if axes is None else axes
    steps = np.ones(len(starts), dtype=np.int64) if steps is None else steps
    return tuple(np.asarray(v, dtype=np.int64).reshape(-1) for v in (starts, ends, axes, steps))


ELEMENTWISE = frozenset(
    {"Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "HardSigmoid", "Softplus", "Clip", "Identity"}
)


@dataclass
class RowSource:
    """A Conv whose output rows can be cut, and the channel-wise ops between it and the sliced tensor."""

    conv: gs.Node
    chain: list[gs.Node]  # from the conv's output towards the sliced tensor


def _pointwise(node: gs.Node) -> bool:
    """A unary op acting on each value alone (Clip only with constant scalar bounds)."""
    if node.op not in ELEMENTWISE or len(node.outputs) != 1:
        return False
    extra = [t for t in node.inputs[1:] if not is_empty_input(t)]
    return all(const_value(t) is not None and const_value(t).size == 1 for t in extra)


def _row_source(ctx: RewriteContext, data: gs.Tensor, node: gs.Node) -> RowSource | None:
    """The producing Conv (through owned pointwise ops) whose rows can be cut: ungrouped, constant weights."""
    chain: list[gs.Node] = []
    reader, tensor = node, data
    while True:
        if not only_consumer(ctx.graph, tensor, reader):
            return None
        source = producer(tensor)
        if source is None:
            return None
        if source.op == "Conv":
            break
        if not _pointwise(source):
            return None
        chain.insert(0, source)
        reader, tensor = source, source.inputs[0]
    spec = conv_spec(source)
    if spec is None or spec.group != 1:
        return None
    if input_at(source, 2) is not None and const_value(input_at(source, 2)) is None:
        return None
    return RowSource(source, chain)


def _emit(
    ctx: RewriteContext, data: gs.Tensor, rows: RowSource | None, pieces, count: int, base: str
) -> None:
    """One Conv per (indices, output tensor): rows of the source conv (then its pointwise ops), else a 1x1
    selection Conv."""
    for idx, out in pieces:
        idx = np.asarray(idx, dtype=np.int64)
        if rows is None:
            spec = ConvSpec(kernel=(1, 1), pads=(0, 0, 0, 0))
            kernel = selection_kernel(idx, count)
            make_conv(ctx.graph, ctx.namer, data, kernel, None, spec, output=out, name=f"{base}_select")
            continue
        conv = rows.conv
        output = None if rows.chain else out
        last = make_conv_rows(
            ctx.graph, ctx.namer, conv, idx, output=output, name=f"{conv.name or 'conv'}_rows"
        )
        for i, op in enumerate(rows.chain):
            last = make_node(
                ctx.graph,
                ctx.namer,
                op.op,
                [last.outputs[0], *op.inputs[1:]],
                attrs=dict(op.attrs),
                output=out if i == len(rows.chain) - 1 else None,
                name=op.name or op.op,
            )


@dataclass(frozen=True)
class SplitSizes:
    """The channel count of each Slice, in channel order, that the Split's outputs take over."""

    sizes: list[int]


@dataclass(frozen=True)
class Selection:
    """What a channel Slice or Split becomes: the (indices, output tensor) pieces, the input's channel count
    and the Conv whose rows are cut (None: 1x1 selection Convs)."""

    pieces: list[tuple[list[int], gs.Tensor]]
    count: int
    rows: RowSource | None


def _selection_nodes(node: gs.Node, rows: RowSource | None) -> list[gs.Node]:
    """The matched node and the row source's Conv and pointwise ops, which the rewrite replaces too."""
    return [node] if rows is None else [node, *reversed(rows.chain), rows.conv]


class ChannelSliceToConv(Rule):
    """Replaces a channel Slice with the producer Conv's selected rows or a 1x1 selection Conv."""

    name = "channel_slice_to_conv"
    ops = ("Slice",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        data = node.inputs[0]
        if _rank(data) != 4:
            return None
        starts, ends, axes, steps = _slice_args(node)
        axes = [int(a) + 4 if a < 0 else int(a) for a in axes]
        if 1 not in axes:
            return None
        if 0 in steps:
            raise Decline("step 0")
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if axis != 1 and not (start == 0 and step == 1 and end >= INT_LIMIT):
                dim = (data.shape or [None] * 4)[axis]
                if not (start == 0 and step == 1 and isinstance(dim, (int, np.integer)) and end >= dim):
                    raise Decline(f"the Slice also cuts axis {axis}")
        count = shape_or_conv_channels(data)
        if count is None:
            raise Decline("channel count of the input is unknown")
        k = axes.index(1)
        idx = onnx_slice_indices(count, int(starts[k]), int(ends[k]), int(steps[k]))
        if not idx:
            raise Decline("the Slice selects no channel")
        if idx == list(range(count)):
            return None  # a full slice is a no-op (fold removes it)
        rows = _row_source(ctx, data, node)
        # cost declaration without rows to cut: a selection conv (etc.cost)
        widening = selection_widening(node, [len(idx)], count) if rows is None else None
        return Match(_selection_nodes(node, rows), Selection([(idx, node.outputs[0])], count, rows), widening)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, selection = match.nodes[0], match.data
        _emit(ctx, node.inputs[0], selection.rows, selection.pieces, selection.count, node.name or "slice")


def _channel_range(node: gs.Node, count: int) -> tuple[int, int] | None:
    """(start, end) of a Slice that cuts only axis 1 into a contiguous, step-1 range, else None."""
    try:
        starts, ends, axes, steps = _slice_args(node)
    except Decline:
        return None
    axes = [int(a) + 4 if a < 0 else int(a) for a in axes]
    if axes != [1] or int(steps[0]) != 1:
        return None
    idx = onnx_slice_indices(count, int(starts[0]), int(ends[0]), 1)
    return (idx[0], idx[-1] + 1) if idx else None


class ChannelSlicesToSplit(Rule):
    """Replaces channel Slices that partition a tensor's channels with one Split."""

    name = "channel_slices_to_split"
    ops = ("Slice",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        data = node.inputs[0]
        readers = consumers(data)
        if _rank(data) != 4 or len(readers) < 2 or any(r.op != "Slice" for r in readers):
            return None
        count = shape_or_conv_channels(data)
        if count is None:
            return None
        ranges = [_channel_range(r, count) for r in readers]
        if any(r is None for r in ranges):
            return None
        ordered = sorted(zip(ranges, readers), key=lambda pair: pair[0])  # the same match from any of them
        bounds = [start for (start, _), _ in ordered] + [ordered[-1][0][1]]
        if (
            bounds[0] != 0
            or bounds[-1] != count
            or any(e != s for ((_, e), _), s in zip(ordered, bounds[1:]))
        ):
            raise Decline(f"the channel Slices of {data.name} do not cut it into disjoint ranges covering it")
        return Match([r for _, r in ordered], SplitSizes([e - s for (s, e), _ in ordered]))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        data = match.nodes[0].inputs[0]
        outputs = [s.outputs[0] for s in match.nodes]
        name = match.nodes[0].name or "slices"
        retire(match.nodes)
        sizes = np.asarray(match.data.sizes, dtype=np.int64)
        split = gs.Node(
            "Split", ctx.namer(f"{name}_split"), attrs={"axis": 1}, inputs=[data], outputs=outputs
        )
        if (ctx.graph.opset or 13) >= 13:
            split.inputs.append(gs.Constant(ctx.namer(f"{name}_sizes"), sizes))
        else:
            split.attrs["split"] = [int(v) for v in sizes]
        ctx.graph.nodes.append(split)


def _split_sizes(node: gs.Node, count: int) -> list[int]:
    """The channel count of each output of a channel Split; raises Decline when unknown or inconsistent."""
    sizes_in = input_at(node, 1)
    sizes = const_value(sizes_in)
    if sizes_in is not None and sizes is None:
        raise Decline("split sizes are not constant")
    if sizes is None and "split" in node.attrs:
        sizes = np.asarray(node.attrs["split"])
    parts = len(node.outputs)
    if sizes is None:
        chunk = -(-count // parts)
        sizes = [chunk] * (parts - 1) + [count - chunk * (parts - 1)]
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    if len(sizes) != parts or sum(sizes) != count or min(sizes) < 0:
        raise Decline(f"split sizes {sizes} do not cover {count} channels in {parts} outputs")
    return sizes


class ChannelSplitToConvs(Rule):
    """Replaces a channel Split with one row-selected (or 1x1 selection) Conv per used output."""

    name = "channel_split_to_convs"
    ops = ("Split",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        data = node.inputs[0]
        if _rank(data) != 4 or int(node.attrs.get("axis", 0)) not in (1, -3):
            return None
        count = shape_or_conv_channels(data)
        if count is None:
            raise Decline("channel count of the input is unknown")
        sizes = _split_sizes(node, count)
        pieces, start = [], 0
        for size, out in zip(sizes, node.outputs):
            if size and (consumers(out) or is_graph_output(ctx.graph, out)):
                pieces.append((list(range(start, start + size)), out))
            elif size == 0 and (consumers(out) or is_graph_output(ctx.graph, out)):
                raise Decline("an empty split output is used")
            start += size
        rows = _row_source(ctx, data, node)
        # cost declaration without rows to cut: selection convs (etc.cost)
        widening = selection_widening(node, [len(idx) for idx, _ in pieces], count) if rows is None else None
        return Match(_selection_nodes(node, rows), Selection(pieces, count, rows), widening)

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, selection = match.nodes[0], match.data
        data = node.inputs[0]
        retire([node])  # a Split handing over its outputs one by one would get fresh tensors in their slots
        _emit(ctx, data, selection.rows, selection.pieces, selection.count, node.name or "split")


rules = RuleSet([ChannelSlicesToSplit(), ChannelSliceToConv(), ChannelSplitToConvs()])
