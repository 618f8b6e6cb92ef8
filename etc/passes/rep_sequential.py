"""Two linear convs in a row become one Conv (ECB 1x1->3x3 and mask branches, SESR, DBB, Conv->BN).

    x ─► A: Conv/BN/affine/AvgPool ─► [zero Pad] ─► B: Conv/BN/affine/AvgPool ─► y
    becomes
    x ─► Conv(W, b) ─► y                                                       (at least one of A, B is a Conv)

Weight algebra (etc.convmath.compose_grouped): cross-correlations compose, so with A = (K0, b0) and
B = (K1, b1), W[o, i, u] = Σ_m Σ_{s+t=u} K1[o, m, s]·K0[m, i, t] (kernel k0 + k1 - 1; with a 1x1 on either
side it is the per-tap product K1·K0) and b = b1 + Σ_{m,s} K1[o, m, s]·b0[m]. BatchNormalization and
per-channel Mul/Add/Sub/Div are diagonal 1x1 convs; AvgPool k x k is a depthwise conv with taps 1/k².

Exact (borders included) when B's input is A's true output at every position B reads:
  * B does not pad (pads 0): the merged conv takes A's pads. This covers kxk -> 1x1 (always exact), Conv->BN,
    and ECB's 1x1 written as zero-Pad(x) -> Conv1x1(bias) -> Conv kxk (pad 0): the 1x1 output border holds
    its bias b0, which is exactly what the merged kxk conv over the zero-padded x produces.
  * B pads and A is a 1x1, stride 1, with zero bias: zero-padding A's output equals zero-padding x, so the
    pads add up.
Refused, with the reason: B zero-pads the output of a biased 1x1 (the border would hold 0 instead of b0);
B zero-pads the output of a kxk conv (not exact at borders); A is strided and B is not a plain 1x1; both are
dilated kxk; an AvgPool with count_include_pad=0 and pads. A merge that raises the multiply-adds per pixel
(e.g. 1x1 -> depthwise mask) is only done when the result is a summand next to another branch of the same
input, where the parallel merge absorbs it for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import compose_grouped
from etc.graph import ConvSpec, is_graph_output, make_conv, producer, retire
from etc.passes._linear import (
    AFFINE_OPS,
    LinearBranch,
    joins_sum_with,
    linear_branch,
    linear_branch_or_none,
    readers,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class Plan:
    """What composing two linear maps gives, decided from shapes and attributes alone (no kernel algebra):
    the mid and output channel counts, the merged conv's spec and its multiply-adds per output pixel."""

    mid: int
    out: int
    spec: ConvSpec
    macs: int


@dataclass(frozen=True)
class Composition:
    """The input x of the first map, the two maps and their :class:`Plan`; the kernel is built by the rewrite."""

    x: gs.Tensor
    first: LinearBranch
    second: LinearBranch
    plan: Plan


@dataclass(frozen=True)
class ScaleAbsorbed:
    """The per-channel scale and, per reader Conv in order, the reader and the plan of the conv absorbing it."""

    scale: LinearBranch
    readers: list[tuple[LinearBranch, Plan]]


def _exclusive_path(graph: gs.Graph, first: gs.Node, second: gs.Node) -> bool:
    """True when ``first``'s output reaches only ``second`` (directly or through one Pad read only by it)."""
    tensor = first.outputs[0]
    while True:
        users = readers(tensor)
        if len(users) != 1 or is_graph_output(graph, tensor):
            return False
        if users[0] is second:
            return True
        if users[0].op != "Pad" or users[0].inputs[0] is not tensor:
            return False
        tensor = users[0].outputs[0]


def plan(first: LinearBranch, second: LinearBranch) -> Plan:
    """The conv computing ``second(first(x))``, from shapes and attributes only; raises Decline naming the
    exactness condition that fails."""
    mid = first.out_channels or second.in_channels
    if mid is None:
        raise Decline("channel count unknown")
    if second.in_channels not in (None, mid):
        raise Decline(f"channel counts differ ({mid} -> {second.in_channels})")
    out = second.out_channels or mid
    a, b = first.spec, second.spec
    plain_1x1 = second.kernel == (1, 1) and b.strides == (1, 1) and not any(b.pads)
    if a.strides != (1, 1) and not plain_1x1:
        raise Decline(
            "the first conv is strided; only a 1x1 conv without pads and stride may follow it exactly"
        )
    first_is_1x1 = first.kernel == (1, 1) and a.strides == (1, 1)
    if not any(b.pads):
        pads = a.pads
    elif first_is_1x1 and not np.any(first.bias_at(mid)):
        pads = tuple(p + q for p, q in zip(a.pads, b.pads))
    elif first_is_1x1:
        raise Decline(
            "the next conv zero-pads the output of a 1x1 with a bias: its border would hold 0 instead of the "
            "bias (exact only if the 1x1's input is padded instead, as ECB does)"
        )
    else:
        raise Decline(
            f"zero padding between a {first.kernel[0]}x{first.kernel[1]} and a {second.kernel[0]}x{second.kernel[1]} conv is not exact at borders"
        )
    dilations = []
    for axis in (0, 1):
        ka, kb = first.kernel[axis], second.kernel[axis]
        if ka > 1 and kb > 1 and (a.dilations[axis] != 1 or b.dilations[axis] != 1):
            raise Decline("both convs are dilated kxk")
        dilations.append(a.dilations[axis] if ka > 1 else b.dilations[axis] if kb > 1 else 1)
    strides = b.strides if a.strides == (1, 1) else a.strides
    rows = second.weight.shape[0] if second.weight is not None else mid
    if rows != out:
        raise Decline("channel counts differ")
    ga, gb = first.groups_or(0), second.groups_or(0)
    group = max(gb if ga == 0 else ga if gb in (0, ga) else 1, 1)
    in_channels = first.in_channels or mid
    if out % group or in_channels % group:
        group = 1
    kernel = (first.kernel[0] + second.kernel[0] - 1, first.kernel[1] + second.kernel[1] - 1)
    spec = ConvSpec(kernel, pads, strides, (dilations[0], dilations[1]), group)  # type: ignore[arg-type]
    return Plan(mid, out, spec, out * (in_channels // group) * kernel[0] * kernel[1])


def build(
    first: LinearBranch, second: LinearBranch, planned: Plan
) -> tuple[np.ndarray, np.ndarray, ConvSpec]:
    """The kernel, bias and spec of the planned composition (grouped operands stay grouped in the algebra)."""
    mid = planned.mid
    group0 = first.groups_or(mid)
    group1 = second.groups_or(mid)
    weight, bias, _ = compose_grouped(
        first.kernel_at(mid, group0),
        group0,
        first.bias_at(mid),
        second.kernel_at(mid, group1),
        group1,
        second.bias_at(planned.out),
        group=planned.spec.group,
    )
    return weight, bias, planned.spec


def compose(first: LinearBranch, second: LinearBranch) -> tuple[np.ndarray, np.ndarray, ConvSpec]:
    """One conv computing ``second(first(x))``; raises Decline naming the exactness condition that fails."""
    return build(first, second, plan(first, second))


class ComposeLinear(Rule):
    """Replaces a Conv/BN/affine/AvgPool followed by another one (one of them a Conv) with one Conv.

    ``match`` decides from shapes (the merged conv's size is known before its kernel); the kernel algebra runs
    in ``rewrite``, only for an accepted match.
    """

    name = "compose_sequential"
    ops = ("Conv", "AveragePool", *AFFINE_OPS)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        try:
            second = linear_branch(node)
        except Decline:
            feeding = producer(node.inputs[0])
            if feeding is not None and feeding.op == "Conv":
                raise
            return None
        if second is None:
            return None
        first_node = producer(second.x)
        first = linear_branch_or_none(first_node)
        if first is None or first_node is None:
            return None
        if "Conv" not in (first_node.op, node.op):
            return None
        if not _exclusive_path(ctx.graph, first_node, node):
            raise Decline(f"the output of {first_node.name} is also read elsewhere")
        planned = plan(first, second)
        parts = first.macs(first.out_channels or planned.out) + second.macs(planned.out)
        if planned.macs > parts and not joins_sum_with(ctx.graph, node.outputs[0], first.x):
            raise Decline(
                f"merging would raise multiply-adds per pixel from {parts} to {planned.macs} and the result "
                "joins no parallel sum of the same input"
            )
        return Match([first_node, node], Composition(first.x, first, second, planned))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        first_node, node = match.nodes
        merged: Composition = match.data
        weight, bias, spec = build(merged.first, merged.second, merged.plan)
        make_conv(
            ctx.graph,
            ctx.namer,
            merged.x,
            weight,
            bias,
            spec,
            output=node.outputs[0],
            name="rep_conv",
        )
        retire([first_node, node])


def _is_per_channel(branch: LinearBranch) -> bool:
    """A 1x1, stride-1, unpadded map that scales each channel on its own (BN, affine, diagonal 1x1 conv)."""
    spec = branch.spec
    if branch.kernel != (1, 1) or spec.strides != (1, 1) or any(spec.pads):
        return False
    if branch.kind == "affine":
        return True
    channels = branch.out_channels
    if not branch.is_conv or channels is None or branch.in_channels != channels:
        return False
    dense = branch.dense(channels)[:, :, 0, 0]
    return not np.any(dense - np.diag(np.diag(dense)))


class ScaleIntoReaders(Rule):
    """Replaces a per-channel scale read by several Convs with those Convs, each absorbing the scale.

        x ─► BN | Mul/Add | diagonal Conv1x1 ─┬─► Conv_1        x ─┬─► Conv_1'
                                                 └─► Conv_2   ==>     └─► Conv_2'

    Each reader composes exactly as in compose_sequential (a reader that zero-pads needs a zero bias in the
    scale); no reader grows, so no multiply-adds are added, and the scale's pass over the tensor is gone.
    """

    name = "scale_into_readers"
    ops = ("Conv", *AFFINE_OPS)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        first = linear_branch_or_none(node)
        if first is None or not _is_per_channel(first):
            return None
        tensor = node.outputs[0]
        users = readers(tensor)
        if len(users) < 2 or is_graph_output(ctx.graph, tensor):
            return None
        planned = []
        for user in users:
            second = linear_branch(user) if user.op == "Conv" else None
            if second is None or second.x is not tensor:
                raise Decline(f"reader {user.name} is {user.op}, not a Conv with constant weights reading it")
            try:
                merged = plan(first, second)
            except Decline as why:
                raise Decline(f"reader {user.name}: {why.reason}") from None
            if second.weight is None or merged.macs > second.weight.size:
                raise Decline(f"reader {user.name} would grow")
            planned.append((second, merged))
        return Match([node, *users], ScaleAbsorbed(first, planned))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        node, *users = match.nodes
        absorbed: ScaleAbsorbed = match.data
        for user, (second, planned) in zip(users, absorbed.readers):
            weight, bias, spec = build(absorbed.scale, second, planned)
            make_conv(
                ctx.graph,
                ctx.namer,
                absorbed.scale.x,
                weight,
                bias,
                spec,
                output=user.outputs[0],
                name="rep_conv",
            )
        retire([node, *users])


rules = RuleSet([ComposeLinear(), ScaleIntoReaders()])
