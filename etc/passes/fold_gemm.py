"""Per-feature affine maps (BatchNormalization on 2-D input, constant Mul/Div/Add/Sub) fold into the Gemm or
MatMul beside them: the classifier heads of RepViT, FastViT and MobileOne (BatchNorm1d + Linear).

A linear layer on a rank-2 input ``x`` (N, C) is ``y = x·W + b`` with W (C, K): a Gemm (alpha, beta, transB
read into W and b; transA = 0) or a MatMul with a constant (C, K) weight (b = 0). The result is always one Gemm
(transB = 1, alpha = beta = 1).

Before the layer, per input feature (BN(x) = a·x + c with a, c of length C):
    x ─► BatchNormalization ─► Gemm(W, b)   ─►   Gemm(diag(a)·W, b + c·W)
After the layer, per output feature (a, c of length K):
    x ─► Gemm(W, b) ─► BatchNormalization   ─►   Gemm(W·diag(a), a·b + c)
    x ─► Gemm(W, b) ─► Mul/Div/Add/Sub(k)    ─►   Gemm(W·k, b·k) / (W/k, b/k) / (W, b + k) / (W, b - k)

Exact in real arithmetic (a linear map composed with a per-feature affine one is linear; no padding, no border).
Conditions: the tensor between the two nodes has no other reader and is no graph output; the BN is an inference
BN with constant parameters and its input is known to be 2-D (axis 1 is the feature axis of a 2-D tensor only);
the Gemm does not transpose its input (transA = 0) and its weight and bias are constant; a constant after the
layer broadcasts along the feature axis only ((K,), (1, K) or a scalar) and a divisor has no zero.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import batchnorm_affine, const_value, only_consumer, producer
from etc.passes._gemm import linear_of, make_gemm
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def bn_2d_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) of an inference BN on a known 2-D input; raises Decline saying why not."""
    shape = bn.inputs[0].shape
    if shape is None or len(shape) != 2:
        raise Decline("BatchNormalization input is not known to be 2-D")
    try:
        return batchnorm_affine(bn)
    except ValueError as err:
        raise Decline(str(err)) from None


def feature_vector(value: np.ndarray, count: int) -> np.ndarray:
    """A constant broadcasting along the last axis of a 2-D tensor only, as (count,); raises Decline."""
    if value.ndim > 2 or (value.ndim == 2 and value.shape[0] != 1) or value.size not in (1, count):
        raise Decline("constant does not broadcast along the feature axis only")
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (count,)).copy()


class BatchNormIntoLinear(Rule):
    """Replaces BatchNormalization (2-D) -> Gemm/MatMul with one Gemm."""

    name = "bn_into_linear"
    ops = ("Gemm", "MatMul")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        bn = producer(node.inputs[0])
        if bn is None or bn.op != "BatchNormalization":
            return None
        a, c = bn_2d_affine(bn)
        if not only_consumer(ctx.graph, bn.outputs[0], node):
            raise Decline("the normalized tensor is also read elsewhere")
        linear = linear_of(node)
        if linear.weight.shape[0] != a.size:
            raise Decline("BatchNormalization features differ from the layer's inputs")
        return Match([bn, node], (a, c, linear))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        bn, node = match.nodes
        a, c, linear = match.data
        weight = linear.weight * a[:, None]
        bias = linear.bias + c @ linear.weight
        make_gemm(ctx, bn.inputs[0], weight, bias, node.outputs[0], node.name)


class AffineAfterLinear(Rule):
    """Replaces Gemm/MatMul -> BatchNormalization (2-D) or a per-feature Mul/Div/Add/Sub with one Gemm."""

    name = "affine_after_linear"
    ops = ("BatchNormalization", "Mul", "Div", "Add", "Sub")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        data = 0
        if node.op != "BatchNormalization":
            constants = [const_value(t) for t in node.inputs]
            if len(node.inputs) != 2 or sum(v is not None for v in constants) != 1:
                return None
            data = 0 if constants[1] is not None else 1
        layer = producer(node.inputs[data])
        if layer is None or layer.op not in ("Gemm", "MatMul"):
            return None
        if node.op in ("Div", "Sub") and data != 0:
            raise Decline(f"constant {node.op} x is not affine in x per feature")
        linear = linear_of(layer)
        count = linear.weight.shape[1]
        if node.op == "BatchNormalization":
            a, c = bn_2d_affine(node)
            if a.size != count:
                raise Decline("BatchNormalization features differ from the layer's outputs")
        else:
            vector = feature_vector(constants[1 - data], count)
            if node.op == "Div" and np.any(vector == 0):
                raise Decline("division by zero")
            a, c = _scale_shift(node.op, vector)
        if not only_consumer(ctx.graph, layer.outputs[0], node):
            raise Decline("the layer's output is also read elsewhere")
        return Match([layer, node], (a, c, linear))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        layer, node = match.nodes
        a, c, linear = match.data
        make_gemm(ctx, linear.x, linear.weight * a[None, :], a * linear.bias + c, node.outputs[0], layer.name)


def _scale_shift(op: str, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) with op(y, vector) = a·y + c."""
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    return {
        "Mul": (vector, zeros),
        "Div": (1.0 / vector, zeros),
        "Add": (ones, vector),
        "Sub": (ones, -vector),
    }[op]


rules = RuleSet([BatchNormIntoLinear(), AffineAfterLinear()])
