"""Convs over the union of their inputs, shared by the ``et`` merge families (et_dual, et_carry, et_add).

A :class:`MergeOperand` is one operand of a channel Concat or an Add read as ``act(conv(source))``: a Conv that
merges exactly (stride 1, dilation 1, same-padded; grouped kernels made dense), optionally followed by
Relu/PRelu/LeakyRelu, or a bare tensor as the identity conv on itself. Operands are merged into one conv over the
union of the leaves they read (:func:`union_sources`, :func:`merge_kernels`, :func:`union_input`): kernels are
centred in the largest one and their columns placed per leaf. :func:`match_concat_merge` and
:func:`rewrite_concat_merge` are the Concat merge of et_dual (conv operands only) and et_carry (bare operands
ride along); the exactness conditions are stated by those rules.

It is not :class:`etc.passes._linear.LinearBranch` (the rep side): a LinearBranch is a purely linear map of one
tensor, possibly grouped or a shared-tap depthwise (affine, pooling), merged by summing; a MergeOperand may
carry an activation after its conv and is merged by stacking rows over concatenated sources. Their builders are
named apart (``conv_operand``/``identity_operand`` here, ``conv_branch``/``identity_branch`` there) and raise
Decline here where the rep side returns None (a rep candidate that is not linear is none of its business).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import grouped_to_dense, identity_kernel, pad_kernel
from etc.cost import MERGE_ACTIVATIONS
from etc.graph import (
    ConvSpec,
    channels_of,
    concat_leaves,
    const_value,
    constant,
    conv_spec,
    conv_weights,
    input_at,
    is_channel_concat,
    is_graph_output,
    make_conv,
    make_node,
    only_consumer,
    producer,
    retire,
    set_channels,
)
from etc.rules import Decline, Match, RewriteContext

ACTIVATIONS = MERGE_ACTIVATIONS


@dataclass
class MergeOperand:
    """One part of a Concat or Add: ``act(conv(input))``; a bare tensor is an identity conv on itself."""

    part: gs.Tensor
    source: gs.Tensor  # the tensor the conv reads (a bare part reads itself)
    weight: np.ndarray  # dense (O, C_source, kh, kw)
    bias: np.ndarray
    act: str | None = None
    slope: np.ndarray | None = None  # PRelu slopes per output channel
    nodes: list[gs.Node] = field(default_factory=list)  # replaced by the merge

    @property
    def bare(self) -> bool:
        return not self.nodes

    @property
    def has_conv(self) -> bool:
        return any(n.op == "Conv" for n in self.nodes)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


def plain_conv_spec(node: gs.Node) -> ConvSpec:
    """The spec of a Conv that merges exactly (stride 1, dilation 1, same-padded); raises Decline otherwise."""
    spec = conv_spec(node)
    if spec is None or const_value(input_at(node, 1)) is None:
        raise Decline("weights are not constant or the conv is not 2-D with explicit padding")
    if input_at(node, 2) is not None and const_value(input_at(node, 2)) is None:
        raise Decline("bias is not constant")
    if spec.strides != (1, 1) or spec.dilations != (1, 1):
        raise Decline(f"stride {spec.strides} / dilation {spec.dilations} is not 1")
    if not spec.is_same_padded:
        raise Decline(f"pads {spec.pads} are not k//2 on every side (kernel {spec.kernel})")
    return spec


def merges_exactly(node: gs.Node) -> bool:
    """Whether a Conv merges exactly (:func:`plain_conv_spec` does not decline)."""
    try:
        plain_conv_spec(node)
    except Decline:
        return False
    return True


def conv_operand(node: gs.Node) -> MergeOperand:
    """A MergeOperand for a Conv node (dense kernel, zero bias when absent); raises Decline naming the conv and
    why it cannot merge."""
    try:
        spec = plain_conv_spec(node)
    except Decline as why:
        raise Decline(f"{node.name}: {why.reason}") from None
    weight, bias = conv_weights(node)
    return MergeOperand(
        node.outputs[0], node.inputs[0], grouped_to_dense(weight, spec.group), bias, nodes=[node]
    )


def identity_operand(part: gs.Tensor) -> MergeOperand:
    count = channels_of(part)
    if count is None:
        raise Decline(f"channel count of '{part.name}' is unknown")
    return MergeOperand(part, part, identity_kernel(count), np.zeros(count))


def _slopes(node: gs.Node, count: int) -> np.ndarray | None:
    slope = const_value(input_at(node, 1))
    if slope is None:
        return None
    slope = np.asarray(slope, dtype=np.float64).reshape(-1)
    if slope.size == 1:
        return np.full(count, float(slope[0]))
    return slope if slope.size == count else None


def branch_of(
    ctx: RewriteContext, part: gs.Tensor, owner: gs.Node, *, activations: bool = True
) -> MergeOperand:
    """How ``part`` (an input of ``owner``) enters a merge: act(conv(x)), act(x), conv(x) or bare.

    A node is absorbed only when ``owner`` (or the absorbed node after it) is its sole reader; otherwise the part
    is carried bare. Raises Decline when a conv that would be absorbed cannot merge exactly.
    """
    graph = ctx.graph
    node = producer(part)
    if node is None or not only_consumer(graph, part, owner):
        return identity_operand(part)
    act, slope = None, None
    if activations and node.op in ACTIVATIONS:
        inner = node.inputs[0]
        count = channels_of(inner)
        if count is None:
            return identity_operand(part)
        if node.op == "PRelu":
            slope = _slopes(node, count)
            if slope is None:
                return identity_operand(part)
        elif node.op == "LeakyRelu":
            slope = np.full(count, float(node.attrs.get("alpha", 0.01)))
        act = node.op
        conv = producer(inner)
        if conv is None or conv.op != "Conv" or not only_consumer(graph, inner, node):
            found = identity_operand(inner)
        else:
            found = conv_operand(conv)
        found.part, found.act, found.slope = part, act, slope
        found.nodes = [*found.nodes, node]
        return found
    if node.op == "Conv":
        found = conv_operand(node)
        return found
    return identity_operand(part)


def union_sources(branches: list[MergeOperand]) -> list[gs.Tensor]:
    """The distinct leaves every branch reads, in first-seen order."""
    out: list[gs.Tensor] = []
    for branch in branches:
        for leaf in concat_leaves(branch.source):
            if not any(leaf is t for t in out):
                out.append(leaf)
    return out


def merge_kernels(
    branches: list[MergeOperand], sources: list[gs.Tensor]
) -> tuple[list[np.ndarray], int, int]:
    """Each branch's kernel over the union ``sources`` (columns placed per leaf, padded to the largest kernel)."""
    kh = max(b.weight.shape[2] for b in branches)
    kw = max(b.weight.shape[3] for b in branches)
    counts = [channels_of(t) for t in sources]
    if any(c is None for c in counts):
        raise ValueError("unknown channel count")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    total = int(offsets[-1])
    out = []
    for branch in branches:
        weight = pad_kernel(branch.weight, kh, kw)
        full = np.zeros((weight.shape[0], total, kh, kw))
        col = 0
        for leaf in concat_leaves(branch.source):
            j = next(i for i, t in enumerate(sources) if t is leaf)
            n = counts[j]
            full[:, offsets[j] : offsets[j] + n] += weight[:, col : col + n]
            col += n
        if col != weight.shape[1]:
            raise ValueError("kernel columns do not match the input channels")
        out.append(full)
    return out, kh, kw


def union_input(ctx: RewriteContext, branches: list[MergeOperand], sources: list[gs.Tensor]) -> gs.Tensor:
    """One tensor holding ``sources`` on channels: the only source, an existing Concat of them, or a new Concat."""
    if len(sources) == 1:
        return sources[0]
    for branch in branches:
        got = concat_leaves(branch.source)
        if len(got) == len(sources) and all(a is b for a, b in zip(got, sources)):
            return branch.source
    node = make_node(ctx.graph, ctx.namer, "Concat", sources, attrs={"axis": 1}, name="etc_concat")
    total = sum(channels_of(t) or 0 for t in sources)
    set_channels(node.outputs[0], sources[0], total)
    return node.outputs[0]


def merged_spec(kh: int, kw: int) -> ConvSpec:
    return ConvSpec((kh, kw), (kh // 2, kw // 2, kh // 2, kw // 2))


def branches_of_concat(ctx: RewriteContext, node: gs.Node) -> list[MergeOperand] | None:
    """Operands of a channel Concat, None when it is not one; raises Decline when an operand cannot merge."""
    if not is_channel_concat(node) or len(node.inputs) < 2:
        return None
    out = []
    for part in node.inputs:
        if const_value(part) is not None:
            return None
        out.append(branch_of(ctx, part, node))
    return out


@dataclass(frozen=True)
class ActivationPlan:
    """The merged conv's activation and how each operand passes it: unchanged, doubled as (z, -z) (Relu
    target), or with its own slopes (PRelu target)."""

    act: str | None
    doubled: tuple[bool, ...]
    slopes: tuple[np.ndarray, ...] | None = None


def _activation_plan(ctx: RewriteContext, branches: list[MergeOperand]) -> ActivationPlan:
    """The target activation and what each operand needs to pass through it.

    Relu target: an operand without activation passes unchanged when its values are proved >= 0, otherwise it is
    carried as relu(z) and relu(-z) (rows [W; -W], recombined by the Concat's Conv consumers).
    PRelu target: Relu operands get slope 0, operands without activation slope 0 when >= 0, else slope 1.
    LeakyRelu target (every activation is LeakyRelu with one alpha): an operand without activation passes when
    proved >= 0 (leaky_relu(z) = z there); otherwise it declines (one alpha serves every channel).
    """
    acts = {b.act for b in branches}
    alphas = {float(b.slope[0]) for b in branches if b.act == "LeakyRelu" and b.slope is not None}
    unchanged = (False,) * len(branches)
    if acts - {None} == {"LeakyRelu"} and len(alphas) == 1:
        signed = [b.part.name for b in branches if b.act is None and not ctx.ranges[b.part].nonnegative]
        if signed:
            raise Decline(f"{signed} may be negative: LeakyRelu would scale it (one alpha for every channel)")
        return ActivationPlan("LeakyRelu", unchanged)
    if "PRelu" in acts or "LeakyRelu" in acts:
        slopes = []
        for b in branches:
            if b.act in ("PRelu", "LeakyRelu"):
                slopes.append(b.slope)
            elif b.act == "Relu":
                slopes.append(np.zeros(b.out_channels))
            else:
                nonneg = ctx.ranges[b.part].nonnegative
                slopes.append(np.zeros(b.out_channels) if nonneg else np.ones(b.out_channels))
        return ActivationPlan("PRelu", unchanged, tuple(slopes))  # type: ignore[arg-type]
    if "Relu" in acts:
        doubled = tuple(not (b.act == "Relu" or ctx.ranges[b.part].nonnegative) for b in branches)
        return ActivationPlan("Relu", doubled)
    return ActivationPlan(None, unchanged)


def _doubling_consumers(ctx: RewriteContext, tensor: gs.Tensor) -> list[gs.Node]:
    """The Conv readers that recombine relu(s) - relu(-s) of ``tensor``; raises Decline when one cannot."""
    if is_graph_output(ctx.graph, tensor):
        raise Decline("it is a graph output")
    readers = list(tensor.outputs)
    if not readers:
        raise Decline("it has no reader")
    for reader in readers:
        if reader.op != "Conv" or reader.inputs[0] is not tensor or not merges_exactly(reader):
            raise Decline(
                f"reader {reader.name} ({reader.op}) is not a Conv that can recombine relu(s) - relu(-s)"
            )
        if int(reader.attrs.get("group", 1)) != 1:
            raise Decline(f"reader {reader.name} is a grouped Conv")
    return readers


@dataclass(frozen=True)
class ConcatMerge:
    """What a Concat merge (et_dual, et_carry) found: the operands, the union of their inputs, the activation
    plan and, when operands are doubled, the Conv readers that recombine them."""

    branches: list[MergeOperand]
    sources: list[gs.Tensor]
    plan: ActivationPlan
    readers: list[gs.Node]


def match_concat_merge(ctx: RewriteContext, node: gs.Node, *, carry: bool) -> Match | None:
    """Shared matcher: ``carry`` selects Concats with bare parts (et_carry) or only conv parts (et_dual)."""
    branches = branches_of_concat(ctx, node)
    if branches is None:
        return None
    if not any(b.has_conv for b in branches):
        return None
    has_bare = any(b.bare and b.act is None for b in branches)
    if has_bare != carry:
        return None
    plan = _activation_plan(ctx, branches)
    readers: list[gs.Node] = []
    if any(plan.doubled):
        try:
            readers = _doubling_consumers(ctx, node.outputs[0])
        except Decline as why:
            names = [b.part.name for b, d in zip(branches, plan.doubled) if d]
            raise Decline(
                f"{names} may be negative and cannot be carried as relu(s), relu(-s): {why.reason}"
            ) from None
    sources = union_sources(branches)
    if any(channels_of(t) is None for t in sources):
        raise Decline("channel count of an input is unknown")
    return Match([node], ConcatMerge(branches, sources, plan, readers))


def rewrite_concat_merge(ctx: RewriteContext, match: Match) -> None:
    node = match.nodes[0]
    merge: ConcatMerge = match.data
    branches, sources, plan, readers = merge.branches, merge.sources, merge.plan, merge.readers
    act = plan.act
    kernels, kh, kw = merge_kernels(branches, sources)
    rows, biases, slopes, layout = [], [], [], []  # layout: (channels, doubled) per branch, in order
    for i, (branch, kernel, doubled) in enumerate(zip(branches, kernels, plan.doubled)):
        rows.append(kernel)
        biases.append(branch.bias)
        if doubled:
            rows.append(-kernel)
            biases.append(-branch.bias)
        if act == "PRelu":
            slopes.append(np.asarray(plan.slopes[i]))  # type: ignore[index]
        layout.append((branch.out_channels, doubled))
    x = union_input(ctx, branches, sources)
    weight, bias = np.concatenate(rows), np.concatenate(biases)
    out = node.outputs[0]
    total = weight.shape[0]
    conv = make_conv(
        ctx.graph,
        ctx.namer,
        x,
        weight,
        bias,
        merged_spec(kh, kw),
        output=None if act else _target(ctx, out, readers),
    )
    set_channels(conv.outputs[0], out, total)
    result = conv.outputs[0]
    if act == "Relu":
        relu = make_node(
            ctx.graph, ctx.namer, "Relu", [result], output=_target(ctx, out, readers), name="Relu"
        )
        result = relu.outputs[0]
    elif act == "LeakyRelu":
        alpha = float(next(b.slope[0] for b in branches if b.act == "LeakyRelu"))  # type: ignore[index]
        leaky = make_node(
            ctx.graph,
            ctx.namer,
            "LeakyRelu",
            [result],
            attrs={"alpha": alpha},
            output=_target(ctx, out, readers),
            name="LeakyRelu",
        )
        result = leaky.outputs[0]
    elif act == "PRelu":
        slope = np.concatenate(slopes).reshape(-1, 1, 1)
        prelu = make_node(
            ctx.graph,
            ctx.namer,
            "PRelu",
            [result, constant(ctx.namer, "etc_slope", slope)],
            output=_target(ctx, out, readers),
            name="PRelu",
        )
        result = prelu.outputs[0]
    set_channels(result, out, total)
    if readers:
        _recombine(ctx, readers, result, layout)
    retire([node, *[n for b in branches for n in b.nodes]])


def _target(ctx: RewriteContext, out: gs.Tensor, readers: list[gs.Node]) -> gs.Tensor | None:
    """Adopt the Concat's output unless doubling changes its channels (then readers are rewired)."""
    return None if readers else out


def _recombine(
    ctx: RewriteContext, readers: list[gs.Node], x: gs.Tensor, layout: list[tuple[int, bool]]
) -> None:
    """Rewrites each reader Conv to read the widened tensor: columns V of a doubled part become [V, -V]."""
    for reader in readers:
        spec = conv_spec(reader)
        weight, bias = conv_weights(reader)
        cols, start = [], 0
        for count, doubled in layout:
            block = weight[:, start : start + count]
            cols.append(block)
            if doubled:
                cols.append(-block)
            start += count
        make_conv(ctx.graph, ctx.namer, x, np.concatenate(cols, axis=1), bias, spec, output=reader.outputs[0])
        retire([reader])
