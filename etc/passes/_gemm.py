"""Linear layers on rank-2 inputs (Gemm, MatMul with a constant matrix) as ``y = x·W + b``, shared by the Gemm
rule families (fold_gemm, fold_gemm_parallel)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import const_value, constant, input_at, make_node
from etc.rules import Decline, RewriteContext


@dataclass(frozen=True)
class Linear:
    """``y = x·weight + bias`` on a rank-2 ``x``: weight (C, K), bias (K,), float64."""

    x: gs.Tensor
    weight: np.ndarray
    bias: np.ndarray


def linear_of(node: gs.Node) -> Linear:
    """The Gemm/MatMul as a :class:`Linear`; raises Decline saying why it is not one."""
    weight = const_value(input_at(node, 1))
    if weight is None or weight.ndim != 2:
        raise Decline(f"{node.op} weight is not a constant matrix")
    weight = weight.astype(np.float64)
    x = node.inputs[0]
    if node.op == "MatMul":
        if x.shape is None or len(x.shape) != 2:
            raise Decline("MatMul input is not known to be 2-D")
        return Linear(x, weight, np.zeros(weight.shape[1]))
    if int(node.attrs.get("transA", 0)):
        raise Decline("Gemm transposes its input (transA = 1)")
    if int(node.attrs.get("transB", 0)):
        weight = weight.T
    weight = weight * float(node.attrs.get("alpha", 1.0))
    bias = np.zeros(weight.shape[1])
    if input_at(node, 2) is not None:
        value = const_value(input_at(node, 2))
        if value is None:
            raise Decline("Gemm bias is not constant")
        if value.size not in (1, weight.shape[1]) or (value.ndim == 2 and value.shape[0] != 1):
            raise Decline("Gemm bias does not broadcast along the feature axis only")
        bias = bias + float(node.attrs.get("beta", 1.0)) * value.astype(np.float64).reshape(-1)
    return Linear(x, weight, bias)


def make_gemm(
    ctx: RewriteContext, x: gs.Tensor, weight: np.ndarray, bias: np.ndarray, output: gs.Tensor, name: str
):
    """Gemm(x, weightᵀ, bias) with transB = 1 writing ``output``."""
    inputs = [x, constant(ctx.namer, f"{name}.weight", weight.T), constant(ctx.namer, f"{name}.bias", bias)]
    return make_node(ctx.graph, ctx.namer, "Gemm", inputs, attrs={"transB": 1}, output=output, name=name)
