"""Border values written into a padded tensor become padding (the ECB 1x1 branch as published).

Two forms: Pad followed by writes into the border (slice assignment, ScatterND), and a border built by
concatenating constant strips around the tensor (BorderStripsAsPadding, below).

    T ─► Pad(p, value v) ─► [Transpose | ScatterND(idx, upd)]* ─► Y      (Y = T padded with c[ch] per channel)
    becomes, when c is the bias b of the 1x1 conv producing T = Conv1x1(x; K, b):
    x ─► Conv1x1(K, b, pads + p) ─► Y
    or, when c is one value for every channel:
    T ─► Pad(p, value c) ─► Y

Algebra. The chain only moves elements (Transpose) and overwrites positions with constants (ScatterND whose
indices and updates are constant), so Y[q] is either P[π(q)] or a constant u[q]. Simulating the chain on an
index array and a value array at the tensor's static shape gives π and u exactly. The rule fires when Y has
P's shape, π is the identity on the interior (the region holding T) and every border position holds c[ch]
(written or left at v). A 1x1 conv at stride 1 whose input is zero-padded outputs exactly its bias b at the
padded positions: Conv1x1(Pad(x, 0))[ch] = Σ_i K[ch, i]·0 + b[ch] = b[ch] on the border and Conv1x1(x) inside,
so Pad_b(Conv1x1(x)) = Conv1x1(Pad_0(x)) = Conv1x1 with pads increased by p. The rep pass then merges the
1x1 with the unpadded 3x3 that follows (compose_sequential), one conv per ECB branch.

Exact when: Pad is constant mode on the spatial axes only with non-negative pads; every ScatterND has no
reduction and indices and updates that are constants, or computed from tensor shapes only (never from tensor
values); the interior is untouched; each channel's border holds one value; and either those values are the
bias of a stride-1 1x1 conv with constant weights producing T, or they are one value for all channels.

Dynamic H/W (the dynamo exporter computes the strip indices from Shape): the indices are shape arithmetic, so
they are evaluated by onnxruntime at the sizes the verifier checks plus a small odd one, and the rule fires only
when every size shows the same full-border write with the same values. This is a check at those sizes, not a
proof for every size; the pipeline's numeric check and the final verification run at the same sizes. Legacy
dynamic exports that baked the traced size into a shape fail the probe and are declined here (the command
line then works at the traced size, where the shapes are static). Anything else is declined with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import (
    const_value,
    constant,
    consumers,
    conv_spec,
    input_at,
    is_graph_output,
    make_conv,
    make_node,
    producer,
    static_shape,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet
from etc.runtime import DEFAULT_SIZES

CHAIN_OPS = ("Transpose", "ScatterND")
PROBE_SIZES = (*DEFAULT_SIZES, (5, 7))  # the verifier's sizes and a small odd one


def constant_pad(node: gs.Node) -> tuple[tuple[int, int, int, int], float] | None:
    """((top, left, bottom, right), value) of a constant-mode spatial Pad, or None if not readable; raises
    Decline when the Pad is not a constant border."""
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise Decline(f"Pad mode '{mode}': the border is not a constant")
    pads = const_value(input_at(node, 1))
    if pads is None or input_at(node, 3) is not None:
        return None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 8:
        return None
    value_t = input_at(node, 2)
    value = const_value(value_t) if value_t is not None else np.zeros(1)
    if value is None or value.size != 1:
        raise Decline("Pad value is not a constant scalar")
    if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[4] or pads[5]:
        raise Decline("Pad crops or touches the batch or channel axis")
    return (pads[2], pads[3], pads[6], pads[7]), float(np.asarray(value).reshape(-1)[0])


def write_chain(graph: gs.Graph, pad: gs.Node) -> list[gs.Node]:
    """The Transpose/ScatterND nodes that carry the padded tensor on, each the sole data reader of the last."""
    chain: list[gs.Node] = []
    tensor = pad.outputs[0]
    while not is_graph_output(graph, tensor):
        users = [u for u in consumers(tensor) if not _feeds_shapes_only(u)]
        if len(users) != 1 or users[0].op not in CHAIN_OPS or users[0].inputs[0] is not tensor:
            break
        if users[0].op == "ScatterND" and tensor in users[0].inputs[1:]:
            break
        chain.append(users[0])
        tensor = users[0].outputs[0]
    return chain[: _last_identity_layout(chain)]


def _feeds_shapes_only(node: gs.Node, depth: int = 3) -> bool:
    """A Shape node, or a node whose outputs only reach Shape nodes (legacy exports slice, then take shapes)."""
    if node.op == "Shape":
        return True
    if depth == 0 or not node.outputs:
        return False
    return all(
        _feeds_shapes_only(user, depth - 1) for tensor in node.outputs for user in consumers(tensor)
    ) and all(consumers(t) for t in node.outputs)


def _last_identity_layout(chain: list[gs.Node]) -> int:
    """Length of the longest prefix of ``chain`` whose Transposes compose to the identity (layout restored)."""
    order = np.arange(4)
    best = 0
    for i, node in enumerate(chain):
        if node.op == "Transpose":
            perm = node.attrs.get("perm")
            if perm is None or len(perm) != 4:
                break
            order = order[np.asarray(perm)]
        if np.array_equal(order, np.arange(4)):
            best = i + 1
    return best


Probe = dict[str, np.ndarray]  # concrete values of the scatter indices/updates at one input size


def simulate(
    chain: list[gs.Node], shape: tuple[int, ...], probe: Probe | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(source index or -1 per output element, written value) of the chain on a tensor of ``shape``; raises
    Decline when the writes cannot be simulated.

    Scatter indices and updates are the constants of the graph, or their values in ``probe`` (dynamic shapes).
    """
    probe = probe or {}
    source = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    value = np.zeros(shape, dtype=np.float32)  # written in place: Transposes are views of these arrays
    for node in chain:
        if node.op == "Transpose":
            perm = node.attrs.get("perm", list(range(source.ndim))[::-1])
            source, value = source.transpose(perm), value.transpose(perm)
            continue
        reduction = node.attrs.get("reduction", "none")
        if (reduction.decode() if isinstance(reduction, bytes) else reduction) != "none":
            raise Decline(f"{node.name} scatters with reduction '{reduction}'")
        indices, updates = (
            probe[t.name] if t.name in probe else const_value(t) for t in (node.inputs[1], node.inputs[2])
        )
        if indices is None:
            raise Decline(
                f"{node.name}: scatter indices are not constant (a dynamic shape, or data-dependent)"
            )
        if updates is None:
            raise Decline(f"{node.name}: scattered values are not constant")
        depth = indices.shape[-1]
        dims = np.asarray(source.shape[:depth])
        if np.any(indices < -dims) or np.any(indices >= dims):
            raise Decline(f"{node.name}: scatter index out of range")
        where = tuple(np.moveaxis(indices % dims, -1, 0))
        try:
            source[where] = -1
            value[where] = updates
        except (ValueError, IndexError):
            raise Decline(f"{node.name}: scatter updates do not fit the indices") from None
    return source, value


def border_values(
    source: np.ndarray, value: np.ndarray, pads: tuple[int, int, int, int], fill: float
) -> np.ndarray:
    """The per-channel value of the border ring; raises Decline saying why the chain is not a border write."""
    _, c, h, w = source.shape
    top, left, bottom, right = pads
    interior = np.zeros((h, w), dtype=bool)
    interior[top : h - bottom, left : w - right] = True
    identity = np.arange(source.size).reshape(source.shape)
    if np.any(source[:, :, interior] != identity[:, :, interior]):
        raise Decline("the writes reach inside the padded region (or move elements)")
    ring = value[:, :, ~interior]
    kept = source[:, :, ~interior]
    if np.any((kept != -1) & (kept != identity[:, :, ~interior])):
        raise Decline("the border is moved, not written")
    ring = np.where(kept == -1, ring, fill).astype(np.float32)
    per_channel = ring[0, :, :1]
    if ring.size and np.any(ring != per_channel[None]):
        raise Decline(
            "the border does not hold one value per channel (a strip is missing or the values vary)"
        )
    return per_channel.reshape(c)


def shape_only(tensors: list[gs.Tensor]) -> bool:
    """True when the tensors are computed from constants and tensor shapes only (never from tensor values)."""
    stack, seen = list(tensors), set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen or const_value(tensor) is not None:
            continue
        seen.add(id(tensor))
        node = producer(tensor)
        if node is None:
            return False
        if node.op != "Shape":
            stack.extend(t for t in node.inputs if t.name)
    return True


def probe_sides(
    graph: gs.Graph, pad: gs.Node, chain: list[gs.Node], sizes: tuple[tuple[int, int], ...]
) -> list[tuple[tuple[int, ...], Probe]]:
    """(padded shape, scatter indices/updates) at each input size, computed by onnxruntime; raises Decline
    saying why not."""
    from etc import runtime

    sides = [t for n in chain if n.op == "ScatterND" for t in n.inputs[1:3]]
    if not shape_only(sides):
        raise Decline("scatter indices or values depend on tensor values, not only on shapes")
    sub = graph.copy()
    tensors = sub.tensors()
    outputs = [tensors[pad.outputs[0].name], *(tensors[t.name] for t in sides)]
    for tensor, like in zip(outputs, [pad.outputs[0], *sides]):
        tensor.dtype = like.dtype if like.dtype is not None else np.float32
    sub.outputs = outputs
    sub.cleanup(remove_unused_graph_inputs=False)
    model = gs.export_onnx(sub, do_type_check=False)
    probes = []
    try:
        sess = runtime.session(model, quiet=True)
        for size in sizes:
            feeds = runtime.make_inputs(runtime.input_specs(model), size=size)
            values = sess.run(None, feeds)
            probes.append((tuple(values[0].shape), {t.name: v for t, v in zip(sides, values[1:])}))
    except Exception as err:  # onnxruntime rejects the shape arithmetic at this size
        first = str(err).strip().splitlines()[0][:200]
        raise Decline(
            f"the shape arithmetic of the writes does not run at {size[0]}x{size[1]}: {first}"
        ) from None
    return probes


def bias_conv(tensor: gs.Variable) -> gs.Node:
    """The stride-1 1x1 Conv with constant weights producing ``tensor``; raises Decline saying why not."""
    conv = producer(tensor)
    if conv is None or conv.op != "Conv":
        raise Decline("the padded tensor is not the output of a Conv")
    spec = conv_spec(conv)
    if spec is None or spec.kernel != (1, 1):
        raise Decline("the padded tensor is not the output of a 1x1 Conv with constant weights")
    if spec.strides != (1, 1):
        raise Decline("the 1x1 Conv is strided; padding its input is not padding its output")
    return conv


@dataclass(frozen=True)
class BorderPadding:
    """What a border write becomes: ``pads`` (top, left, bottom, right) added to the 1x1 ``conv`` whose bias the
    border holds, or, without a conv, a constant Pad with ``fill``."""

    pads: tuple[int, int, int, int]
    conv: gs.Node | None = None
    fill: float = 0.0


class BorderWriteAsPadding(Rule):
    """Replaces Pad followed by constant border writes with a padded 1x1 Conv (values = bias) or a Pad."""

    name = "border_write_as_padding"
    ops = ("Pad",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        chain = write_chain(ctx.graph, node)
        if not any(n.op == "ScatterND" for n in chain):
            return None
        pad = constant_pad(node)
        if pad is None:
            return None
        pads, fill = pad
        if not any(pads):
            return None  # nothing padded: the writes are not a border
        shape = static_shape(node.outputs[0])
        source_shape = static_shape(node.inputs[0])
        if source_shape is not None and len(source_shape) == 4:
            n, c, h, w = source_shape
            shape = (n, c, h + pads[0] + pads[2], w + pads[1] + pads[3])
        border = self.border(ctx, node, chain, shape, pads, fill)
        if border is None:
            return None
        try:
            conv = bias_conv(node.inputs[0])
        except Decline as declined:
            why = declined.reason
        else:
            bias = const_value(input_at(conv, 2))
            bias = np.zeros(border.shape, np.float32) if bias is None else bias.astype(np.float32).reshape(-1)
            if bias.shape == border.shape and np.array_equal(bias, border):
                return Match([node, *chain], BorderPadding(pads, conv=conv))
            why = "the border values are not the bias of the 1x1 Conv"
        if np.all(border == border[0]):
            return Match([node, *chain], BorderPadding(pads, fill=float(border[0])))
        raise Decline(f"per-channel border values need a 1x1 Conv whose bias they are: {why}")

    @staticmethod
    def border(
        ctx: RewriteContext,
        pad: gs.Node,
        chain: list[gs.Node],
        shape: tuple[int, ...] | None,
        pads: tuple[int, int, int, int],
        fill: float,
    ) -> np.ndarray | None:
        """The per-channel border values, the same at every probed size when the shape is dynamic (raises Decline
        otherwise).

        None while a static-input graph still has shape arithmetic to fold (the rule looks again after it).
        """
        sides = [t for n in chain if n.op == "ScatterND" for t in n.inputs[1:3]]
        static_input = all(static_shape(t) is not None for t in ctx.graph.inputs)
        if static_input and (shape is None or any(const_value(t) is None for t in sides)):
            if shape_only(sides):
                return None
            raise Decline("the written values depend on tensor values")
        if shape is not None and len(shape) == 4:
            probes: list[tuple[tuple[int, ...], Probe]] = [(shape, {})]
        else:
            probes = probe_sides(ctx.graph, pad, chain, PROBE_SIZES)
        found = None
        for probe_shape, probe in probes:
            result = simulate(chain, probe_shape, probe)
            if result[0].shape != probe_shape:
                raise Decline("the written tensor does not end in the padded layout")
            border = border_values(*result, pads, fill)
            if found is not None and not np.array_equal(found, border):
                raise Decline("the border values change with the input size")
            found = border
        return found

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        pad, *chain = match.nodes  # the old nodes lose their output and are cleaned up
        out = chain[-1].outputs[0]
        top, left, bottom, right = match.data.pads
        conv = match.data.conv
        if conv is not None:
            _padded_conv(ctx, conv, (top, left, bottom, right), out)
        else:
            pads_t = constant(ctx.namer, "border_pads", [0, 0, top, left, 0, 0, bottom, right], np.int64)
            fill = constant(ctx.namer, "border_fill", match.data.fill)
            inputs = [pad.inputs[0], pads_t, fill]
            make_node(
                ctx.graph, ctx.namer, "Pad", inputs, attrs={"mode": "constant"}, output=out, name="border_pad"
            )


def _padded_conv(
    ctx: RewriteContext, conv: gs.Node, extra: tuple[int, int, int, int], out: gs.Tensor
) -> None:
    """``conv`` (a stride-1 1x1) again, with ``extra`` (top, left, bottom, right) added to its pads, into ``out``."""
    spec = conv_spec(conv)
    pads = tuple(p + q for p, q in zip(spec.pads, extra))
    new_spec = type(spec)(spec.kernel, pads, spec.strides, spec.dilations, spec.group)
    weight, bias = const_value(conv.inputs[1]), const_value(input_at(conv, 2))
    make_conv(ctx.graph, ctx.namer, conv.inputs[0], weight, bias, new_spec, output=out, name="border_conv")


class BorderStripsAsPadding(Rule):
    """Replaces Concat(const strips, Conv1x1(x), const strips) along H or W, strips = the bias, with a padded Conv1x1.

        x ─► Conv1x1(K, b) ─► T ;  Concat(axis 2|3)[B_before, T, B_after] ─► Y      (B[n, ch, ...] = b[ch])
        becomes
        x ─► Conv1x1(K, b, pads + strip widths on that axis) ─► Y

    Same algebra as BorderWriteAsPadding: the padded rows/columns of a 1x1 conv over zero-padded x hold b.
    Exact when: exactly one input is not constant, it is the output of a stride-1 1x1 Conv with constant
    weights, and every constant input holds its channel's bias at every position. A border built of nested
    Concats (columns, then rows) folds one Concat at a time.
    """

    name = "border_strips_as_padding"
    ops = ("Concat",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        axis = int(node.attrs.get("axis", 0))
        rank = len(node.outputs[0].shape or ()) or 4
        if axis % rank not in (2, 3) or rank != 4 or len(node.inputs) < 2:
            return None
        values = [const_value(t) for t in node.inputs]
        middle = [i for i, v in enumerate(values) if v is None]
        if len(middle) != 1 or any(v is None or v.ndim != 4 for i, v in enumerate(values) if i != middle[0]):
            return None
        conv = bias_conv(node.inputs[middle[0]])
        bias = const_value(input_at(conv, 2))
        channels = const_value(conv.inputs[1]).shape[0]
        bias = np.zeros(channels, np.float32) if bias is None else bias.astype(np.float32).reshape(-1)
        for i, value in enumerate(values):
            if i == middle[0]:
                continue
            if value.shape[1] != channels or not np.array_equal(
                value.astype(np.float32), np.broadcast_to(bias[None, :, None, None], value.shape)
            ):
                raise Decline("a constant strip does not hold the 1x1 Conv's bias in every channel")
        before = sum(values[i].shape[axis % 4] for i in range(middle[0]))
        after = sum(values[i].shape[axis % 4] for i in range(middle[0] + 1, len(values)))
        extra = (before, 0, after, 0) if axis % 4 == 2 else (0, before, 0, after)
        return Match([node], BorderPadding(extra, conv=conv))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        _padded_conv(ctx, match.data.conv, match.data.pads, match.nodes[0].outputs[0])


rules = RuleSet([BorderWriteAsPadding(), BorderStripsAsPadding()])
