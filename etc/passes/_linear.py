"""Linear views shared by the ``rep`` families: a linear node of one input read as a Conv, and sums of them.

A :class:`LinearBranch` is a Conv, a per-channel affine op (BatchNormalization, Mul/Add/Sub/Div by a per-channel
constant: a diagonal 1x1 kernel with bias), an AvgPool (a depthwise kernel of 1/(kh·kw)) or a tensor itself
(the identity kernel), with its ConvSpec relative to the input x (a zero Pad in front of a conv counts as its
padding). :func:`align` finds the union window of branches read at the same output pixels; the sum helpers read
an Add/Sum/Sub/Neg tree as signed summands. Used by rep_parallel (sums), rep_sequential (compositions) and
rep_concat (stacking); the exactness conditions are stated by those rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import grouped_to_dense, regroup
from etc.graph import (
    ConvSpec,
    batchnorm_affine,
    const_value,
    consumers,
    conv_spec,
    conv_weights,
    explicit_pads,
    input_at,
    is_graph_output,
    pad_operands,
    pads_on_axes,
    per_channel_constant,
    producer,
)
from etc.rules import Decline

AFFINE_OPS = ("BatchNormalization", "Mul", "Add", "Sub", "Div")
IDENTITY_SPEC = ConvSpec((1, 1), (0, 0, 0, 0))


# ---------------------------------------------------------------- linear views


def readers(tensor: gs.Tensor) -> list[gs.Node]:
    """Live nodes reading ``tensor`` (a node dropped from the graph without being disconnected has no outputs)."""
    return [n for n in consumers(tensor) if n.outputs]


@dataclass(eq=False)
class LinearBranch:
    """A linear map of one input read as a Conv: out = Conv(x, kernel, bias) with ``spec`` (pads relative to x).

    ``weight`` is (out, in/group, kh, kw) for a Conv. Depthwise branches with a kernel shared by every channel
    (per-channel affine, AvgPool, identity) keep ``weight`` None and store the shared ``taps`` (kh, kw), a
    per-channel ``scale`` and ``bias`` (length C, or 1 to broadcast); they fit any channel count and grouping.
    """

    x: gs.Tensor
    spec: ConvSpec
    bias: np.ndarray
    weight: np.ndarray | None = None
    taps: np.ndarray | None = None
    scale: np.ndarray | None = None
    nodes: list[gs.Node] = field(default_factory=list)
    kind: str = "conv"  # conv | affine | pool | identity

    @property
    def is_conv(self) -> bool:
        return self.weight is not None

    @property
    def out_channels(self) -> int | None:
        if self.weight is not None:
            return int(self.weight.shape[0])
        sizes = {len(a) for a in (self.scale, self.bias) if a is not None and len(a) > 1}
        return sizes.pop() if sizes else None

    @property
    def in_channels(self) -> int | None:
        if self.weight is not None:
            return int(self.weight.shape[1]) * self.spec.group
        return self.out_channels

    @property
    def kernel(self) -> tuple[int, int]:
        if self.weight is not None:
            return int(self.weight.shape[2]), int(self.weight.shape[3])
        assert self.taps is not None
        return int(self.taps.shape[0]), int(self.taps.shape[1])

    def kernel_at(self, channels: int, group: int) -> np.ndarray:
        """The kernel as (channels, channels/group, kh, kw) with ``group`` groups."""
        if self.weight is not None:
            return regroup(self.weight, self.spec.group, group)
        assert self.taps is not None
        per = channels // group
        scale = np.broadcast_to(self.scale if self.scale is not None else 1.0, (channels,))
        out = np.zeros((channels, per, *self.taps.shape), dtype=np.float64)
        rows = np.arange(channels)
        out[rows, rows % per] = scale[:, None, None] * self.taps
        return out

    def dense(self, channels: int) -> np.ndarray:
        return grouped_to_dense(self.kernel_at(channels, self.groups_or(1)), self.groups_or(1))

    def groups_or(self, default: int) -> int:
        """The branch's groups (a shared-tap branch takes any grouping: ``default``)."""
        return self.spec.group if self.weight is not None else default

    def bias_at(self, channels: int) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.bias, dtype=np.float64), (channels,)).copy()

    def macs(self, channels: int | None) -> int:
        """Multiply-adds per output pixel."""
        kh, kw = self.kernel
        if self.weight is not None:
            return int(self.weight.shape[0] * self.weight.shape[1] * kh * kw)
        return int((channels or 1) * kh * kw)


def zero_pad_amounts(node: gs.Node) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a constant-zero Pad of H/W of a 4-D tensor; raises Decline saying why not."""
    pad = pad_operands(node)
    if pad.mode != "constant":
        raise Decline(f"Pad mode '{pad.mode}' is not zero padding")
    if pad.pads is None:
        raise Decline("Pad amounts are computed at run time (run fold first)")
    if pad.value != 0.0:
        raise Decline("Pad value is not a constant 0")
    if pad.axes_dynamic:
        raise Decline("Pad axes are computed at run time")
    pads = pads_on_axes(pad.pads, pad.axes) if pad.axes is not None else pad.pads
    if len(pads) != 8 or any(p < 0 for p in pads) or pads[0] or pads[1] or pads[4] or pads[5]:
        raise Decline("Pad is not a non-negative padding of H and W of a 4-D tensor")
    return pads[2], pads[3], pads[6], pads[7]


def through_zero_pad(x: gs.Tensor) -> tuple[gs.Tensor, tuple[int, int, int, int]]:
    """The tensor before a zero Pad producing ``x`` and the Pad amounts (x itself and zeros otherwise)."""
    pad = producer(x)
    if pad is not None and pad.op == "Pad":
        try:
            return pad.inputs[0], zero_pad_amounts(pad)
        except Decline:
            pass
    return x, (0, 0, 0, 0)


def _add_pads(spec: ConvSpec, extra: tuple[int, int, int, int]) -> ConvSpec:
    return replace(spec, pads=tuple(p + e for p, e in zip(spec.pads, extra)))  # type: ignore[arg-type]


def conv_branch(node: gs.Node) -> LinearBranch | None:
    """A 2-D Conv with constant weights as a LinearBranch of the tensor before any zero Pad feeding it."""
    if node.op != "Conv" or len(node.outputs) != 1:
        return None
    spec = conv_spec(node)
    if spec is None or (input_at(node, 2) is not None and const_value(input_at(node, 2)) is None):
        return None
    weight, bias = conv_weights(node)
    x, extra = through_zero_pad(node.inputs[0])
    return LinearBranch(x, _add_pads(spec, extra), bias, weight=weight, nodes=[node])


def _is_4d(tensor: gs.Tensor) -> bool | None:
    shape = tensor.shape
    return None if shape is None else len(shape) == 4


def affine_branch(node: gs.Node) -> LinearBranch | None:
    """BatchNormalization (inference) or Mul/Add/Sub/Div by a per-channel constant as a diagonal 1x1 LinearBranch."""
    if len(node.outputs) < 1 or any(o.outputs for o in node.outputs[1:]):
        return None
    if node.op == "BatchNormalization":
        try:
            scale, bias = batchnorm_affine(node)
        except ValueError:
            return None
        x = node.inputs[0]
    elif node.op in ("Mul", "Add", "Sub", "Div") and len(node.inputs) == 2:
        consts = [const_value(t) for t in node.inputs]
        if (consts[0] is None) == (consts[1] is None):
            return None
        k = 0 if consts[0] is None else 1
        x, c = node.inputs[k], per_channel_constant(consts[1 - k])  # type: ignore[arg-type]
        if c is None or _is_4d(x) is False:
            return None
        c = c.astype(np.float64)
        one, zero = np.ones_like(c), np.zeros_like(c)
        if node.op == "Mul":
            scale, bias = c, zero
        elif node.op == "Add":
            scale, bias = one, c
        elif node.op == "Sub":
            scale, bias = (one, -c) if k == 0 else (-one, c)
        elif k == 0 and np.all(c != 0):
            scale, bias = 1.0 / c, zero
        else:
            return None
    else:
        return None
    if _is_4d(x) is False:
        return None
    return LinearBranch(
        x, IDENTITY_SPEC, bias, taps=np.ones((1, 1)), scale=scale, nodes=[node], kind="affine"
    )


def pool_branch(node: gs.Node) -> LinearBranch | None:
    """AvgPool 2-D as a depthwise LinearBranch (1/(kh·kw) taps); raises Decline when it differs from a zero-padded
    conv."""
    if node.op != "AveragePool" or len(node.outputs) != 1:
        return None
    kernel = [int(k) for k in node.attrs.get("kernel_shape", ())]
    if len(kernel) != 2:
        return None
    pads = explicit_pads(node)
    if pads is None:
        raise Decline("AvgPool uses auto_pad SAME")
    strides = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in node.attrs.get("dilations", (1, 1)))
    if any(pads) and not int(node.attrs.get("count_include_pad", 0)):
        raise Decline(
            "AvgPool with pads and count_include_pad=0 divides by fewer taps at the border than a conv"
        )
    if int(node.attrs.get("ceil_mode", 0)) and strides != (1, 1):
        raise Decline("AvgPool ceil_mode changes the output size")
    x, extra = through_zero_pad(node.inputs[0])
    spec = _add_pads(ConvSpec(tuple(kernel), pads, strides, dilations), extra)  # type: ignore[arg-type]
    taps = np.full(kernel, 1.0 / (kernel[0] * kernel[1]))
    return LinearBranch(x, spec, np.zeros(1), taps=taps, scale=np.ones(1), nodes=[node], kind="pool")


def linear_branch(node: gs.Node | None) -> LinearBranch | None:
    """Any node ``rep`` reads as a conv of its input (Conv, per-channel affine, AvgPool); None for other nodes,
    Decline for an AvgPool that is not a zero-padded conv."""
    if node is None:
        return None
    if node.op == "Conv":
        return conv_branch(node)
    if node.op == "AveragePool":
        return pool_branch(node)
    if node.op in AFFINE_OPS:
        return affine_branch(node)
    return None


def linear_branch_or_none(node: gs.Node | None) -> LinearBranch | None:
    """:func:`linear_branch`, with a node it declines read as no branch."""
    try:
        return linear_branch(node)
    except Decline:
        return None


def identity_branch(x: gs.Tensor) -> LinearBranch:
    return LinearBranch(
        x, IDENTITY_SPEC, np.zeros(1), taps=np.ones((1, 1)), scale=np.ones(1), kind="identity"
    )


# ---------------------------------------------------------------- alignment


@dataclass
class Alignment:
    """The union window of several branches: the merged spec (group 1) and each branch's tap offset."""

    spec: ConvSpec
    offsets: list[tuple[int, int]]


def align(branches: Sequence[LinearBranch]) -> Alignment:
    """Common window for branches read at the same output pixels; raises Decline saying why they are not aligned."""
    strides = {b.spec.strides for b in branches}
    if len(strides) > 1:
        raise Decline(f"strides differ ({', '.join(str(s) for s in sorted(strides))})")
    kernel, dil, begin, end = [], [], [], []
    offsets = [[0, 0] for _ in branches]
    for axis in (0, 1):
        taps = [b.kernel[axis] for b in branches]
        dils = {b.spec.dilations[axis] for b, k in zip(branches, taps) if k > 1}
        if len(dils) > 1:
            raise Decline(f"dilations differ ({sorted(dils)})")
        d = dils.pop() if dils else 1
        deltas = {b.spec.pads[axis] + b.spec.pads[axis + 2] - d * (k - 1) for b, k in zip(branches, taps)}
        if len(deltas) > 1:
            pads = ", ".join(f"{b.kernel[0]}x{b.kernel[1]} pads {list(b.spec.pads)}" for b in branches)
            raise Decline(f"padding mismatch: the branches' output sizes differ ({pads})")
        top = max(b.spec.pads[axis] for b in branches)
        for i, b in enumerate(branches):
            shift = top - b.spec.pads[axis]
            if shift % d:
                raise Decline(f"padding mismatch: taps fall off the dilation-{d} grid")
            offsets[i][axis] = shift // d
        size = max(off[axis] + k for off, k in zip(offsets, taps))
        kernel.append(size)
        dil.append(d)
        begin.append(top)
        end.append(deltas.pop() + d * (size - 1) - top)
    spec = ConvSpec(
        (kernel[0], kernel[1]), (begin[0], begin[1], end[0], end[1]), strides.pop(), (dil[0], dil[1]), 1
    )
    return Alignment(spec, [(o[0], o[1]) for o in offsets])


# ---------------------------------------------------------------- sums


SUM_ARITY = {"Add": 2, "Sub": 2, "Neg": 1}


def is_sum(node: gs.Node | None) -> bool:
    """Add/Sum/Sub/Neg of non-constant tensors (a node of a signed summation tree)."""
    if node is None or node.op not in ("Add", "Sum", "Sub", "Neg") or len(node.outputs) != 1:
        return False
    arity = SUM_ARITY.get(node.op)
    if (len(node.inputs) != arity) if arity else not node.inputs:
        return False
    return all(const_value(t) is None for t in node.inputs)


def term_signs(node: gs.Node) -> list[int]:
    """The sign each input of a sum node enters with: Sub's subtrahend and Neg's operand are negated."""
    if node.op == "Neg":
        return [-1]
    if node.op == "Sub":
        return [1, -1]
    return [1] * len(node.inputs)


def sum_parent(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    """The Add/Sum that is the only reader of ``tensor`` (once), if any."""
    users = readers(tensor)
    if len(users) != 1 or is_graph_output(graph, tensor) or not is_sum(users[0]):
        return None
    if sum(t is tensor for t in users[0].inputs) != 1:
        return None
    return users[0]


def sum_tree(graph: gs.Graph, root: gs.Node) -> tuple[list[gs.Node], list[gs.Tensor], list[int]]:
    """The sum nodes of the tree under ``root``, its leaves in order and the sign (+1/-1) of each leaf."""
    nodes: list[gs.Node] = [root]
    leaves: list[gs.Tensor] = []
    signs: list[int] = []

    def visit(tensor: gs.Tensor, sign: int) -> None:
        node = producer(tensor)
        if is_sum(node) and sum_parent(graph, tensor) is not None:
            nodes.append(node)
            for t, s in zip(node.inputs, term_signs(node)):
                visit(t, sign * s)
        else:
            leaves.append(tensor)
            signs.append(sign)

    for t, s in zip(root.inputs, term_signs(root)):
        visit(t, s)
    return nodes, leaves, signs


def reads(graph: gs.Graph, tensor: gs.Tensor, x: gs.Tensor, depth: int = 4) -> bool:
    """True when ``tensor`` is ``x`` or a chain of at most ``depth`` linear nodes computes it from ``x``."""
    for _ in range(depth + 1):
        if tensor is x:
            return True
        branch = linear_branch_or_none(producer(tensor))
        if branch is None:
            return False
        tensor = branch.x
    return False


def joins_sum_with(graph: gs.Graph, tensor: gs.Tensor, x: gs.Tensor) -> bool:
    """True when ``tensor`` (through linear nodes) is a summand next to another summand computed from ``x``."""
    path = tensor
    while True:
        users = readers(path)
        if len(users) != 1 or is_graph_output(graph, path):
            return False
        branch = linear_branch_or_none(users[0])
        if branch is None or branch.x is not path:
            break
        path = users[0].outputs[0]
    root = sum_parent(graph, path)
    if root is None:
        return False
    while (parent := sum_parent(graph, root.outputs[0])) is not None:
        root = parent
    _, leaves, _ = sum_tree(graph, root)
    return any(leaf is not path and reads(graph, leaf, x) for leaf in leaves)
