"""Parallel linear branches on one input, summed, become one Conv (RepVGG, ACNet, ECB, DBB).

    x ─┬─► Conv 3x3 (pad 1) ────────┐
       ├─► Conv 1x3 (pads 0,1,0,1) ─┤
       ├─► BatchNorm ───────────────┼─► Add/Sum tree ─► y        becomes      x ─► Conv 3x3 (pad 1) ─► y
       ├─► DWConv 3x3 (group C) ────┤
       └────────────────────────────┘ (bare x)

Sub and Neg are signed sums: ``a - b`` is ``a + (-1)·b`` and ``-a`` is ``(-1)·a``; the sign of each summand
is folded into its kernel and bias (exact: negation commutes with zero padding), so RepMixer's
``x + s·(dwconv3x3(x) - dwconv1x1(x))`` merges like an Add; summands left out of the merge are re-joined with
Add or Sub by their sign (never more nodes than the tree had).

Every summand is read as a conv of the same input x: a Conv (a zero Pad in front of it counts as its padding),
a per-channel affine op (BatchNormalization, Mul/Add/Sub/Div by a per-channel constant: a diagonal 1x1
kernel with bias), an AvgPool (a depthwise kernel of 1/(kh·kw)) or x itself (the identity kernel).

Weight algebra: branch i puts its tap j at input offset stride·o - pad_i + d·j. With a common top/left pad
P = max pad_i, branch i's kernel sits at tap offset (P - pad_i)/d inside the union window; kernels are summed
there and biases added. Grouped branches are re-expressed with G = gcd of their groups (diagonal branches fit
any grouping), so a depthwise branch joins a dense sum as a dense kernel (etc.convmath.grouped_to_dense).

Exact (every pixel, borders included) when: one input; equal strides; equal dilation on every axis where a
branch has more than one tap; equal output-size formula per axis (pad_begin + pad_end - d·(k-1) equal), which
holds for "same"-padded branches (pad k//2, asymmetric 1x3 -> (0,1,0,1)); tap offsets on the dilation grid;
equal channel counts. Zero padding of x is then what every branch saw. An AvgPool with pads and
count_include_pad=0 divides by fewer taps at the border and is refused. The merge is also declined when the
union window would cost more multiply-adds than the branches themselves (misaligned windows).

The linear views (etc.passes._linear) are shared with the sequential and concat families (etc.passes.rep_*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import embed_kernel
from etc.graph import ConvSpec, is_graph_output, make_conv, make_node, producer, retire, static_channels
from etc.passes._linear import (
    LinearBranch,
    align,
    identity_branch,
    is_sum,
    linear_branch_or_none,
    readers,
    sum_parent,
    sum_tree,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

# ---------------------------------------------------------------- merging aligned branches


def channel_count(branches: Sequence[LinearBranch], x: gs.Tensor) -> int:
    """The common channel count of branches summed together (identity-like branches need in == out); raises
    Decline when there is none."""
    outs = {b.out_channels for b in branches} - {None}
    ins = {b.in_channels for b in branches if b.is_conv}
    known = static_channels(x)
    if known is not None:
        ins.add(known)
    if len(outs) > 1:
        raise Decline(f"output channels differ ({sorted(outs)})")
    if not outs:
        raise Decline("channel count unknown")
    count = outs.pop()
    if any(not b.is_conv for b in branches) and ins and ins != {count}:
        raise Decline(f"an identity/affine branch needs in == out channels ({sorted(ins)} vs {count})")
    return count


def merged_group(branches: Sequence[LinearBranch]) -> int:
    groups = [b.spec.group for b in branches if b.is_conv]
    return math.gcd(*groups) if groups else 1


def merge_branches(
    branches: Sequence[LinearBranch], channels: int
) -> tuple[np.ndarray, np.ndarray, ConvSpec]:
    """Sum of aligned branches as one kernel, bias and spec; raises Decline when they cannot be merged."""
    aligned = align(branches)
    group = merged_group(branches)
    kh, kw = aligned.spec.kernel
    weight = None
    bias = np.zeros(channels)
    for branch, (top, left) in zip(branches, aligned.offsets):
        kernel = embed_kernel(branch.kernel_at(channels, group), kh, kw, top, left)
        weight = kernel if weight is None else weight + kernel
        bias = bias + branch.bias_at(channels)
    assert weight is not None
    return weight, bias, replace(aligned.spec, group=group)


def signed(branch: LinearBranch, sign: int) -> LinearBranch:
    """The branch times ``sign``: kernel (or per-channel scale) and bias negated when sign is -1."""
    if sign > 0:
        return branch
    if branch.weight is not None:
        return replace(branch, weight=-branch.weight, bias=-np.asarray(branch.bias))
    return replace(branch, scale=-np.asarray(branch.scale), bias=-np.asarray(branch.bias))


def leaf_branch(graph: gs.Graph, leaf: gs.Tensor) -> LinearBranch:
    """A summand read as a branch: the linear node producing it when it feeds only the sum, else identity."""
    node = producer(leaf)
    if node is not None and len(readers(leaf)) == 1 and not is_graph_output(graph, leaf):
        branch = linear_branch_or_none(node)
        if branch is not None:
            return branch
    return identity_branch(leaf)


# ---------------------------------------------------------------- the rule


def _partition(branches: list[LinearBranch], count_channels) -> tuple[list[list[LinearBranch]], str]:
    """Greedy classes of branches that align with each other; the first reason a branch did not join."""
    classes: list[list[LinearBranch]] = []
    reason = ""
    for b in branches:
        for cls in classes:
            attempt = [*cls, b]
            try:
                align(attempt)
                count_channels(attempt)
            except Decline as why:
                reason = reason or why.reason
                continue
            cls.append(b)
            break
        else:
            classes.append([b])
    return classes, reason


@dataclass(frozen=True)
class ParallelMerge:
    """The shared input x, the summands merged into one conv (``members``) with its kernel, bias and spec, and
    every leaf of the sum tree with its sign and branch (the leaves not merged are re-joined by their sign)."""

    x: gs.Tensor
    members: list[LinearBranch]
    leaves: list[gs.Tensor]
    signs: list[int]
    branches: list[LinearBranch]
    weight: np.ndarray
    bias: np.ndarray
    spec: ConvSpec


class MergeParallelConvs(Rule):
    """Replaces a sum of linear branches of one input (Conv, BN, affine, identity) with one Conv."""

    name = "merge_parallel"
    ops = ("Add", "Sum", "Sub", "Neg")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if not is_sum(node) or sum_parent(ctx.graph, node.outputs[0]) is not None:
            return None
        tree, leaves, signs = sum_tree(ctx.graph, node)
        branches = [signed(leaf_branch(ctx.graph, leaf), sign) for leaf, sign in zip(leaves, signs)]
        bases: list[gs.Tensor] = []
        for b in branches:
            if not any(b.x is t for t in bases):
                bases.append(b.x)
        reason = ""
        for x in bases:
            group = [b for b in branches if b.x is x]
            if len(group) < 2 or not any(b.is_conv for b in group):
                continue
            classes, why = _partition(group, lambda bs, x=x: channel_count(bs, x))
            reason = reason or why
            for cls in sorted(classes, key=len, reverse=True):
                if len(cls) < 2 or not any(b.is_conv for b in cls):
                    continue
                channels = channel_count(cls, x)
                try:
                    weight, bias, spec = merge_branches(cls, channels)
                except Decline as why:
                    reason = reason or why.reason
                    continue
                cost = weight.shape[0] * weight.shape[1] * spec.kernel[0] * spec.kernel[1]
                parts = sum(b.macs(channels) for b in cls if b.is_conv)
                if cost > parts:
                    reason = reason or (
                        f"merging would raise multiply-adds per pixel from {parts} to {cost} (misaligned windows)"
                    )
                    continue
                return Match(tree, ParallelMerge(x, cls, leaves, signs, branches, weight, bias, spec))
        if reason:
            raise Decline(reason)
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        root = match.nodes[0]
        merge: ParallelMerge = match.data
        members, weight, bias, spec = merge.members, merge.weight, merge.bias, merge.spec
        rest = [
            (leaf, sign)
            for leaf, sign, b in zip(merge.leaves, merge.signs, merge.branches)
            if not any(b is m for m in members)
        ]
        output = root.outputs[0] if not rest else None
        conv = make_conv(ctx.graph, ctx.namer, merge.x, weight, bias, spec, output=output, name="rep_conv")
        total = conv.outputs[0]
        for i, (leaf, sign) in enumerate(rest):  # the merged conv is positive: every term joins by its sign
            out = root.outputs[0] if i == len(rest) - 1 else None
            op = "Add" if sign > 0 else "Sub"
            total = make_node(
                ctx.graph, ctx.namer, op, [total, leaf], output=out, name=f"rep_{op.lower()}"
            ).outputs[0]
        retire([n for b in members for n in b.nodes])
        retire(match.nodes)


rules = RuleSet([MergeParallelConvs()])
