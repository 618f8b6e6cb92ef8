"""Tiny graph builders and a single-family runner for the et tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from etc.graph import cleanup, to_gs, to_onnx
from etc.pipeline import Options, PassContext
from etc.rules import RuleSet, apply_rules


class Builder:
    """Appends nodes to a model with input 'input' [1, C, H, W] (dynamic H/W unless ``hw`` is given)."""

    def __init__(
        self, channels: int = 3, *, opset: int = 17, hw: tuple[int, int] | None = None, seed: int = 0
    ):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        dims = [1, channels, *(hw or ("H", "W"))]
        self.inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, value, base: str = "c") -> str:
        name = self.name(base)
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs  # type: ignore[return-value]

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int = 3,
        *,
        bias: bool = True,
        pad: int | None = None,
        stride: int = 1,
        group: int = 1,
        weight: np.ndarray | None = None,
    ) -> str:
        if weight is None:
            weight = self.rng.normal(0, 1 / np.sqrt(cin * k * k / group), size=(cout, cin // group, k, k))
        inputs = [x, self.const(weight.astype(np.float32), "w")]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, size=cout).astype(np.float32), "b"))
        p = k // 2 if pad is None else pad
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[p] * 4, strides=[stride] * 2, group=group)

    def model(self, *outputs: str) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def run_family(model: onnx.ModelProto, rules: RuleSet, **options) -> tuple[onnx.ModelProto, dict, list]:
    """Applies one rule family to a fixed point: (model, hits, declines)."""
    ctx = PassContext(Options(**options))
    graph = to_gs(model)
    hits = apply_rules(graph, rules, ctx.options, pass_ctx=ctx, pass_name="et")
    cleanup(graph)
    return to_onnx(graph, model), hits, ctx.declines


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node if n.op_type != "Constant"]


def conv_kernels(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


def reasons(declines: list, rule: str) -> list[str]:
    return [d.reason for d in declines if d.rule == rule]
