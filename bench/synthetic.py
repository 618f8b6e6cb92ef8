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
from onnx import TensorProto, helper

from etc.testing import GraphBuilder

FIXED = 6  # first Conv, Relu, last Conv, Concat, Add, DepthToSpace (4 without the anchor)
CELL = 9


class _Builder(GraphBuilder):
    def normed_conv(self, x: str, cin: int, cout: int, k: int, norm: float) -> str:
        """A size-keeping Conv whose kernel rows have L1 norm ``norm`` (so a cell cannot amplify its input)."""
        w = self.rng.normal(size=(cout, cin, k, k))
        w *= norm / np.abs(w).sum(axis=(1, 2, 3), keepdims=True)
        return self.conv(x, cin, cout, k, weight=w, bias_value=self.rng.uniform(-0.02, 0.02, size=cout))

    def small_bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [
            r.uniform(0.5, 1.0, c),
            r.uniform(-0.02, 0.02, c),
            r.uniform(-0.02, 0.02, c),
            r.uniform(1.0, 1.5, c),
        ]
        return self.bn(x, c, params)


def cells_for(nodes: int, anchor: bool = True) -> int:
    """Number of cells giving about ``nodes`` nodes (at least one)."""
    return max(1, round((nodes - fixed_nodes(anchor)) / CELL))


def fixed_nodes(anchor: bool = True) -> int:
    return FIXED if anchor else FIXED - 2


def synthetic(
    nodes: int, channels: int = 8, scale: int = 2, seed: int = 0, opset: int = 17, anchor: bool = True
) -> onnx.ModelProto:
    """A dynamic-H/W super-resolution-shaped graph of about ``nodes`` nodes, built from rule-exercising cells."""
    b = _Builder(3, hw=("height", "width"), opset=opset, seed=seed)
    x = b.op("Relu", [b.normed_conv("input", 3, channels, 3, 1.0)])
    merge, tail = 0.4, 0.95 / np.sqrt(1.4)  # branch rows sum to 0.4 (+ identity 1); then 3x3 and 1x1 shrink
    for _ in range(cells_for(nodes, anchor)):
        s = b.op(
            "Add",
            [
                b.normed_conv(x, channels, channels, 3, merge / 2),
                b.normed_conv(x, channels, channels, 1, merge / 2),
            ],
        )
        r = b.op("Relu", [b.op("Add", [s, x])])
        y = b.small_bn(b.normed_conv(r, channels, channels, 3, tail), channels)
        x = b.op("Relu", [b.normed_conv(y, channels, channels, 1, tail)])
    out = b.normed_conv(x, channels, 3 * scale * scale, 3, 1.0)
    y = b.op("Add", [out, b.op("Concat", ["input"] * (scale * scale), axis=1)]) if anchor else out
    b.add_node("DepthToSpace", [y], ["output"], "d2s", blocksize=scale, mode="CRD")
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])
    name = f"synthetic_{nodes}{'' if anchor else '_no_anchor'}"
    return b.model(output, graph_name=name, producer_name="bench.synthetic")
