"""Synthetic conv graphs of a chosen size that exercise the rules, for measuring how compile time grows.

    input ─► Conv3x3(3->C) ─► Relu = x_0
    cell k (9 nodes), x = x_{k-1} >= 0:
        x ─► Conv3x3 ─┐
        x ─► Conv1x1 ─┼─► Add ─► Add(x) ─► Relu ─► Conv3x3 ─► BatchNormalization ─► Conv1x1 ─► Relu = x_k
                      (parallel merge with identity: rep)     (BN fold: fold; 3x3 -> 1x1: rep)
    x_n ─► Conv3x3(C->3s²) ─► Add(Concat([input] * s²)) ─► DepthToSpace(s, CRD) = output
                              (repeat -> conv: et; the image carried through every layer: et carry)

With ``anchor=False`` the tail is only Conv3x3 -> DepthToSpace (no carried image): every rule then acts locally.
``synthetic(nodes)`` chooses the number of cells so that the graph has about ``nodes`` nodes (within one cell,
9 nodes). Weights are seeded; every row of every kernel is L1-normalised so that a cell cannot amplify its input
(|x_k| <= |x_{k-1}| + small biases), which keeps 1,000 cells finite and verifiable in float32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FIXED = 6  # first Conv, Relu, last Conv, Concat, Add, DepthToSpace (4 without the anchor)
CELL = 9


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, norm: float) -> str:
        w = self.rng.normal(size=(cout, cin, k, k))
        w *= norm / np.abs(w).sum(axis=(1, 2, 3), keepdims=True)
        b = self.rng.uniform(-0.02, 0.02, size=cout)
        return self.node("Conv", [x, self.const("w", w), self.const("b", b)], pads=[k // 2] * 4)

    def batchnorm(self, x: str, c: int) -> str:
        scale = self.rng.uniform(0.5, 1.0, c)
        bias = self.rng.uniform(-0.02, 0.02, c)
        mean = self.rng.uniform(-0.02, 0.02, c)
        var = self.rng.uniform(1.0, 1.5, c)
        args = [self.const(n, v) for n, v in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self.node("BatchNormalization", [x, *args], epsilon=1e-5)


def cells_for(nodes: int, anchor: bool = True) -> int:
    """Number of cells giving about ``nodes`` nodes (at least one)."""
    return max(1, round((nodes - fixed_nodes(anchor)) / CELL))


def fixed_nodes(anchor: bool = True) -> int:
    return FIXED if anchor else FIXED - 2


def synthetic(
    nodes: int, channels: int = 8, scale: int = 2, seed: int = 0, opset: int = 17, anchor: bool = True
) -> onnx.ModelProto:
    """A dynamic-H/W super-resolution-shaped graph of about ``nodes`` nodes, built from rule-exercising cells."""
    b = _Builder(np.random.default_rng(seed))
    x = b.node("Relu", [b.conv("input", 3, channels, 3, 1.0)])
    merge, tail = 0.4, 0.95 / np.sqrt(1.4)  # branch rows sum to 0.4 (+ identity 1); then 3x3 and 1x1 shrink
    for _ in range(cells_for(nodes, anchor)):
        s = b.node(
            "Add", [b.conv(x, channels, channels, 3, merge / 2), b.conv(x, channels, channels, 1, merge / 2)]
        )
        r = b.node("Relu", [b.node("Add", [s, x])])
        y = b.conv(b.batchnorm(b.conv(r, channels, channels, 3, tail), channels), channels, channels, 1, tail)
        x = b.node("Relu", [y])
    out = b.conv(x, channels, 3 * scale * scale, 3, 1.0)
    y = b.node("Add", [out, b.node("Concat", ["input"] * (scale * scale), axis=1)]) if anchor else out
    b.nodes.append(helper.make_node("DepthToSpace", [y], ["output"], blocksize=scale, mode="CRD", name="d2s"))
    graph = helper.make_graph(
        b.nodes,
        f"synthetic_{nodes}{'' if anchor else '_no_anchor'}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="bench.synthetic"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
