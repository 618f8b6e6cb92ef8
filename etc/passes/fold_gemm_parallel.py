"""Parallel linear layers on one input, summed, become one: the distillation heads of RepViT, FastViT and
DeiT-style nets (``(head(x) + head_dist(x)) / 2``; the ``/ 2`` then folds by fold_gemm).

    x ─► Gemm(W1, b1) ─┐
                        Add      ─►   x ─► Gemm(W1 + W2, b1 + b2)
    x ─► Gemm(W2, b2) ─┘
    (Sub: W1 - W2, b1 - b2)

Exact in real arithmetic (x·W1 + x·W2 = x·(W1 + W2)); it halves the MACs. Conditions: both operands are linear
layers (Gemm without transA, or MatMul on a 2-D input, constant weights and bias, see _gemm.linear_of) that
read the same tensor, with the same weight shape, and neither output has another reader.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from etc.graph import only_consumer, producer
from etc.passes._gemm import linear_of, make_gemm
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


class ParallelLinearSum(Rule):
    """Replaces Add/Sub(Gemm(x), Gemm(x)) with one Gemm."""

    name = "parallel_linear_sum"
    ops = ("Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) != 2:
            return None
        layers = [producer(t) for t in node.inputs]
        if any(layer is None or layer.op not in ("Gemm", "MatMul") for layer in layers):
            return None
        first, second = (linear_of(layer) for layer in layers)
        if first.x is not second.x:
            raise Decline("the two layers read different tensors")
        if first.weight.shape != second.weight.shape:
            raise Decline("the two layers' weights differ in shape")
        if layers[0] is layers[1]:
            raise Decline("both operands are the same layer")
        if not all(only_consumer(ctx.graph, layer.outputs[0], node) for layer in layers):
            raise Decline("a layer's output is also read elsewhere")
        return Match([*layers, node], (first, second))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        first_layer, _, node = match.nodes
        first, second = match.data
        sign = 1.0 if node.op == "Add" else -1.0
        weight = first.weight + sign * second.weight
        bias = first.bias + sign * second.bias
        make_gemm(ctx, first.x, weight, bias, node.outputs[0], first_layer.name)


rules = RuleSet([ParallelLinearSum()])
