"""Convs over the union of their inputs, shared by the ``et`` merge families (et_dual, et_carry, et_add).

A :class:`MergeOperand` is one operand of a channel Concat or an Add read as ``act(conv(source))``: a Conv that
merges exactly (stride 1, dilation 1, same-padded; grouped kernels made dense), optionally followed by
Relu/PRelu/LeakyRelu, or a bare tensor as the identity conv on itself. Operands are merged into one conv over the
union of the leaves they read (:func:`union_sources`, :func:`merge_kernels`, :func:`union_input`): kernels are
centred in the largest one and their columns placed per leaf. :func:`match_concat_merge` and
:func:`rewrite_concat_merge` are the Concat merge of et_dual (conv operands only) and et_carry (bare operands
ride along); the exactness conditions are stated by those rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import grouped_to_dense, identity_kernel, pad_kernel
from etc.graph import (
    ConvSpec,
    channels_of,
    const_value,
    constant,
    conv_spec,
    conv_weights,
    input_at,
    is_graph_output,
    make_conv,
    make_node,
    only_consumer,
    producer,
    retire,
    set_channels,
)
from etc.rules import Match, NoMatch, RewriteContext

ACTIVATIONS = ("Relu", "PRelu", "LeakyRelu")


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


def is_channel_concat(node: gs.Node | None) -> bool:
    if node is None or node.op != "Concat":
        return False
    axis = int(node.attrs.get("axis", 0))
    return axis == 1 or (axis == -3 and all(t.shape is not None and len(t.shape) == 4 for t in node.outputs))


def leaves(tensor: gs.Tensor) -> list[gs.Tensor]:
    """The tensors a channel Concat joins, flattened through nested channel Concats (else [tensor])."""
    node = producer(tensor)
    if not is_channel_concat(node):
        return [tensor]
    return [leaf for t in node.inputs for leaf in leaves(t)]


def plain_conv_spec(node: gs.Node) -> ConvSpec | str:
    """The spec of a Conv that merges exactly (stride 1, dilation 1, same-padded), else the reason it does not."""
    spec = conv_spec(node)
    if spec is None or const_value(input_at(node, 1)) is None:
        return "weights are not constant or the conv is not 2-D with explicit padding"
    if input_at(node, 2) is not None and const_value(input_at(node, 2)) is None:
        return "bias is not constant"
    if spec.strides != (1, 1) or spec.dilations != (1, 1):
        return f"stride {spec.strides} / dilation {spec.dilations} is not 1"
    if not spec.is_same_padded:
        return f"pads {spec.pads} are not k//2 on every side (kernel {spec.kernel})"
    return spec


def conv_branch(node: gs.Node) -> MergeOperand | str:
    """A MergeOperand for a Conv node (dense kernel, zero bias when absent) or the reason it cannot merge."""
    spec = plain_conv_spec(node)
    if isinstance(spec, str):
        return f"{node.name}: {spec}"
    weight, bias = conv_weights(node)
    return MergeOperand(
        node.outputs[0], node.inputs[0], grouped_to_dense(weight, spec.group), bias, nodes=[node]
    )


def identity_branch(part: gs.Tensor) -> MergeOperand | str:
    count = channels_of(part)
    if count is None:
        return f"channel count of '{part.name}' is unknown"
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
) -> MergeOperand | str:
    """How ``part`` (an input of ``owner``) enters a merge: act(conv(x)), act(x), conv(x) or bare.

    A node is absorbed only when ``owner`` (or the absorbed node after it) is its sole reader; otherwise the part
    is carried bare. Returns a reason string when a conv that would be absorbed cannot merge exactly.
    """
    graph = ctx.graph
    node = producer(part)
    if node is None or not only_consumer(graph, part, owner):
        return identity_branch(part)
    act, slope = None, None
    if activations and node.op in ACTIVATIONS:
        inner = node.inputs[0]
        count = channels_of(inner)
        if count is None:
            return identity_branch(part)
        if node.op == "PRelu":
            slope = _slopes(node, count)
            if slope is None:
                return identity_branch(part)
        elif node.op == "LeakyRelu":
            slope = np.full(count, float(node.attrs.get("alpha", 0.01)))
        act = node.op
        conv = producer(inner)
        if conv is None or conv.op != "Conv" or not only_consumer(graph, inner, node):
            found = identity_branch(inner)
        else:
            found = conv_branch(conv)
        if isinstance(found, str):
            return found
        found.part, found.act, found.slope = part, act, slope
        found.nodes = [*found.nodes, node]
        return found
    if node.op == "Conv":
        found = conv_branch(node)
        return found
    return identity_branch(part)


def union_sources(branches: list[MergeOperand]) -> list[gs.Tensor]:
    """The distinct leaves every branch reads, in first-seen order."""
    out: list[gs.Tensor] = []
    for branch in branches:
        for leaf in leaves(branch.source):
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
        for leaf in leaves(branch.source):
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
        got = leaves(branch.source)
        if len(got) == len(sources) and all(a is b for a, b in zip(got, sources)):
            return branch.source
    node = make_node(ctx.graph, ctx.namer, "Concat", sources, attrs={"axis": 1}, name="etc_concat")
    total = sum(channels_of(t) or 0 for t in sources)
    set_channels(node.outputs[0], sources[0], total)
    return node.outputs[0]


def merged_spec(kh: int, kw: int) -> ConvSpec:
    return ConvSpec((kh, kw), (kh // 2, kw // 2, kh // 2, kw // 2))


def branches_of_concat(ctx: RewriteContext, node: gs.Node) -> list[MergeOperand] | str | None:
    """Branches of a channel Concat, None when it is not one, or the reason a branch cannot merge."""
    if not is_channel_concat(node) or len(node.inputs) < 2:
        return None
    out = []
    for part in node.inputs:
        if const_value(part) is not None:
            return None
        found = branch_of(ctx, part, node)
        if isinstance(found, str):
            return found
        out.append(found)
    return out


def _activation_plan(ctx: RewriteContext, branches: list[MergeOperand]) -> tuple[str | None, list] | str:
    """(target activation, per-branch plan): each branch passes as is, doubles as (z, -z), or gets a slope.

    Relu target: a branch without activation passes unchanged when its values are proved >= 0, otherwise it is
    carried as relu(z) and relu(-z) (rows [W; -W], recombined by the Concat's Conv consumers).
    PRelu target: Relu branches get slope 0, branches without activation slope 0 when >= 0, else slope 1.
    LeakyRelu target (every activation is LeakyRelu with one alpha): a branch without activation passes when proved
    >= 0 (leaky_relu(z) = z there); otherwise the reason it cannot (one alpha serves every channel).
    """
    acts = {b.act for b in branches}
    alphas = {float(b.slope[0]) for b in branches if b.act == "LeakyRelu" and b.slope is not None}
    if acts - {None} == {"LeakyRelu"} and len(alphas) == 1:
        signed = [b.part.name for b in branches if b.act is None and not ctx.ranges[b.part].nonnegative]
        if signed:
            return f"{signed} may be negative: LeakyRelu would scale it (one alpha for every channel)"
        return "LeakyRelu", ["pass"] * len(branches)
    if "PRelu" in acts or "LeakyRelu" in acts:
        plan = []
        for b in branches:
            if b.act in ("PRelu", "LeakyRelu"):
                plan.append(b.slope)
            elif b.act == "Relu":
                plan.append(np.zeros(b.out_channels))
            else:
                nonneg = ctx.ranges[b.part].nonnegative
                plan.append(np.zeros(b.out_channels) if nonneg else np.ones(b.out_channels))
        return "PRelu", plan
    if "Relu" in acts:
        plan = []
        for b in branches:
            plan.append("pass" if b.act == "Relu" or ctx.ranges[b.part].nonnegative else "double")
        return "Relu", plan
    return None, ["pass"] * len(branches)


def _doubling_consumers(ctx: RewriteContext, tensor: gs.Tensor) -> list[gs.Node] | str:
    if is_graph_output(ctx.graph, tensor):
        return "it is a graph output"
    readers = list(tensor.outputs)
    if not readers:
        return "it has no reader"
    for reader in readers:
        if reader.op != "Conv" or reader.inputs[0] is not tensor or isinstance(plain_conv_spec(reader), str):
            return f"reader {reader.name} ({reader.op}) is not a Conv that can recombine relu(s) - relu(-s)"
        if int(reader.attrs.get("group", 1)) != 1:
            return f"reader {reader.name} is a grouped Conv"
    return readers


def match_concat_merge(ctx: RewriteContext, node: gs.Node, *, carry: bool) -> Match | NoMatch | None:
    """Shared matcher: ``carry`` selects Concats with bare parts (et_carry) or only conv parts (et_dual)."""
    found = branches_of_concat(ctx, node)
    if found is None:
        return None
    if isinstance(found, str):
        return NoMatch(found)
    branches = found
    if not any(b.has_conv for b in branches):
        return None
    has_bare = any(b.bare and b.act is None for b in branches)
    if has_bare != carry:
        return None
    planned = _activation_plan(ctx, branches)
    if isinstance(planned, str):
        return NoMatch(planned)
    act, plan = planned
    readers: list[gs.Node] = []
    if any(isinstance(p, str) and p == "double" for p in plan):
        got = _doubling_consumers(ctx, node.outputs[0])
        if isinstance(got, str):
            names = [b.part.name for b, p in zip(branches, plan) if isinstance(p, str) and p == "double"]
            return NoMatch(f"{names} may be negative and cannot be carried as relu(s), relu(-s): {got}")
        readers = got
    sources = union_sources(branches)
    if any(channels_of(t) is None for t in sources):
        return NoMatch("channel count of an input is unknown")
    return Match(
        [node], {"branches": branches, "act": act, "plan": plan, "readers": readers, "sources": sources}
    )


def rewrite_concat_merge(ctx: RewriteContext, match: Match) -> None:
    node = match.nodes[0]
    branches: list[MergeOperand] = match.data["branches"]
    act, plan, readers = match.data["act"], match.data["plan"], match.data["readers"]
    sources = match.data["sources"]
    kernels, kh, kw = merge_kernels(branches, sources)
    rows, biases, slopes, layout = [], [], [], []  # layout: (channels, doubled) per branch, in order
    for branch, kernel, p in zip(branches, kernels, plan):
        doubled = isinstance(p, str) and p == "double"
        rows.append(kernel)
        biases.append(branch.bias)
        if doubled:
            rows.append(-kernel)
            biases.append(-branch.bias)
        if act == "PRelu":
            slopes.append(np.asarray(p))
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
