"""An in-place write of a channel range becomes Slice + Concat (PLKSR's ``x[:, :k] = conv(x[:, :k])``).

    X ─► [Transpose p] ─► ScatterND(const idx, U) ─► [Transpose p⁻¹] ─► Y        U = [Transpose p](V)
    becomes
    X ─► Slice(channels 0:a) ─┐
    V ───────────────────────├─► Concat(axis 1) ─► Y
    X ─► Slice(channels b:C) ─┘

Algebra. ScatterND copies whole slices of U into the data at the constant index tuples, which address only
the batch and channel axes (in X's layout); every other axis is copied whole. So Y[:, c] = V[:, c - a] for the
written channels and X[:, c] elsewhere, which is the channel concat above. The mapping is found by running
the Transposes and the scatter on index arrays at a small size: since the index tuples address only batch and
channel, the mapping on H and W is the identity at every size.

Exact when: no reduction; the indices are constant and address only the batch and channel axes (both static
when addressed); the Transposes around the scatter are inverse to each other and U is V under the same
Transpose as the data; the written channels are one contiguous range [a, b), every batch entry written, and
channel c of Y is channel c - a of V. Anything else is declined with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import (
    SHAPE_PRESERVING,
    const_value,
    constant,
    consumers,
    conv_spec,
    is_graph_output,
    make_node,
    producer,
    static_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

IDENTITY = (0, 1, 2, 3)


def _perm(node: gs.Node | None) -> tuple[int, ...] | None:
    if node is None or node.op != "Transpose":
        return None
    perm = node.attrs.get("perm")
    return tuple(int(p) for p in perm) if perm is not None and len(perm) == 4 else None


def _layout(ctx: RewriteContext, scatter: gs.Node) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor, tuple]:
    """(X, V, Y, perm): the untransposed data, updates and result around ``scatter``; raises Decline saying
    why they cannot be read."""
    data, updates, out = scatter.inputs[0], scatter.inputs[2], scatter.outputs[0]
    before = producer(data)
    perm = _perm(before)
    if perm is None:
        return data, updates, out, IDENTITY
    users = consumers(out)
    after = users[0] if len(users) == 1 and not is_graph_output(ctx.graph, out) else None
    back = _perm(after)
    if back is None or tuple(perm[i] for i in back) != IDENTITY:
        raise Decline("the data is transposed before the scatter but not transposed back after it")
    if _perm(producer(updates)) != perm:
        raise Decline("the updates are not transposed like the data")
    return before.inputs[0], producer(updates).inputs[0], after.outputs[0], perm


def _same_size_as(tensor: gs.Tensor, x: gs.Tensor, depth: int = 8) -> bool:
    """True when ``tensor`` is computed from ``x`` by ops that keep batch, H and W (same-padded stride-1 Convs,
    elementwise unary ops, channel Slices), so the two agree on every axis but the channels."""
    for _ in range(depth):
        if tensor is x:
            return True
        node = producer(tensor)
        if node is None:
            return False
        if node.op == "Conv":
            spec = conv_spec(node)
            if spec is None or not spec.is_same_padded:
                return False
        elif node.op == "Slice":
            axes = const_value(node.inputs[3]) if len(node.inputs) > 3 else None
            if axes is None or [int(a) % 4 for a in np.asarray(axes).reshape(-1)] != [1]:
                return False
        elif node.op not in SHAPE_PRESERVING:
            return False
        tensor = node.inputs[0]
    return False


def _peel_shape_noops(updates: gs.Tensor, x: gs.Tensor) -> gs.Tensor:
    """The tensor under Reshape/Expand on the updates when it already has the updates' batch, H and W.

    ScatterND requires the updates to have exactly the shape the indices call for; a tensor with that batch,
    H and W and the channel count the Reshape gives it cannot be enlarged by the Expand (the Reshape would
    then see too many elements), so the Expand and Reshape leave it unchanged.
    """
    tensor = updates
    while (node := producer(tensor)) is not None and node.op in ("Reshape", "Expand"):
        tensor = node.inputs[0]
    if (
        tensor is updates
        or static_channels(tensor) != static_channels(updates)
        or not _same_size_as(tensor, x)
    ):
        return updates
    return tensor


def _dims(tensor: gs.Tensor, fallback: int) -> tuple[int, int] | None:
    """(batch, channels) of a 4-D tensor; an unknown batch becomes ``fallback``, unknown channels None."""
    shape = tensor.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[1], (int, np.integer)) or shape[1] <= 0:
        return None
    batch = int(shape[0]) if isinstance(shape[0], (int, np.integer)) and shape[0] > 0 else fallback
    return batch, int(shape[1])


def channel_range(
    indices: np.ndarray, perm: tuple, data: tuple[int, int], update: tuple[int, int]
) -> tuple[int, int]:
    """[a, b) when the scatter writes V's channels to X's channels a..b-1 one to one; raises Decline saying
    why not."""
    shape = (*data, 2, 3)  # H and W are never addressed: any size shows the mapping
    source = np.arange(int(np.prod(shape))).reshape(shape).transpose(perm)
    upd_shape = (*update, 2, 3)
    upd = -1 - np.arange(int(np.prod(upd_shape))).reshape(upd_shape).transpose(perm)
    depth = indices.shape[-1]
    dims = np.asarray(source.shape[:depth])
    if np.any(indices < -dims) or np.any(indices >= dims):
        raise Decline("scatter index out of range")
    result = source.copy()
    try:
        result[tuple(np.moveaxis(indices % dims, -1, 0))] = upd
    except (ValueError, IndexError):
        raise Decline("the updates do not fit the indices") from None
    result = result.transpose(np.argsort(perm))
    written = np.nonzero(np.all(result < 0, axis=(0, 2, 3)))[0]
    kept = np.all(result >= 0, axis=(0, 2, 3))
    if not np.all(kept | np.isin(np.arange(data[1]), written)):
        raise Decline("the scatter writes part of a channel (not whole channels for every batch entry)")
    if written.size != update[1] or np.any(np.diff(written) != 1):
        raise Decline("the written channels are not one contiguous range the size of the update")
    a = int(written[0])
    identity = np.arange(int(np.prod(shape))).reshape(shape)
    expected = identity.copy()
    expected[:, a : a + update[1]] = -1 - np.arange(int(np.prod(upd_shape))).reshape(upd_shape)
    if not np.array_equal(result, expected):
        raise Decline("the written channels are reordered or the kept channels move")
    return a, a + update[1]


@dataclass(frozen=True)
class ChannelWrite:
    """A scatter read in the untransposed layout: Y = X with channels [a, b) = ``range`` replaced by V; X has
    ``channels`` channels."""

    x: gs.Tensor
    v: gs.Tensor
    y: gs.Tensor
    range: tuple[int, int]
    channels: int


class ChannelWriteAsConcat(Rule):
    """Replaces a ScatterND writing a whole channel range with Slice + Concat."""

    name = "channel_write_as_concat"
    ops = ("ScatterND",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        reduction = node.attrs.get("reduction", "none")
        if (reduction.decode() if isinstance(reduction, bytes) else reduction) != "none":
            raise Decline(f"scatter with reduction '{reduction}' is not a plain write")
        indices = const_value(node.inputs[1])
        if indices is None:
            return None  # written positions computed at run time: fold_border's business, or nobody's
        x, v, y, perm = _layout(ctx, node)
        if perm == IDENTITY:
            v = _peel_shape_noops(v, x)
        depth = indices.shape[-1]
        if not set(perm[:depth]) <= {0, 1} or 1 not in perm[:depth]:
            return None  # addresses spatial positions: a border write (fold_border) or a write no rule reads
        data = _dims(x, 1)
        if data is None or (0 in perm[:depth] and not _static_batch(x)):
            raise Decline("the written tensor's batch or channel count is not static")
        update = _dims(v, data[0])
        if update is None:
            raise Decline("the update's channel count is not static")
        return Match([node], ChannelWrite(x, v, y, channel_range(indices, perm, data, update), data[1]))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        write = match.data
        x, v, y = write.x, write.v, write.y
        a, b = write.range
        parts = []
        for start, end in ((0, a), (b, write.channels)):
            if start < end:
                bounds = [constant(ctx.namer, f"channels_{k}", [k], np.int64) for k in (start, end, 1)]
                parts.append(
                    make_node(ctx.graph, ctx.namer, "Slice", [x, *bounds], name="channel_slice").outputs[0]
                )
        parts.insert(1 if a > 0 else 0, v)
        make_node(ctx.graph, ctx.namer, "Concat", parts, attrs={"axis": 1}, output=y, name="channel_concat")


def _static_batch(tensor: gs.Tensor) -> bool:
    shape = tensor.shape
    return shape is not None and isinstance(shape[0], (int, np.integer)) and shape[0] > 0


rules = RuleSet([ChannelWriteAsConcat()])
