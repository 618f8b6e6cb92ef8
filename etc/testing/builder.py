"""One ONNX graph builder for the tests, the fuzzer and the benchmarks.

    b = GraphBuilder(3)                      # input "input" [1, 3, H, W], opset 17, seeded weights
    y = b.op("Relu", [b.conv("input", 3, 8, 3)])
    model = b.model(b.conv(y, 8, 3, (1, 3), pad=(0, 1, 0, 1)))

Names are ``<base>_<n>`` with one counter per builder; a node's output is named after its op in lower case
and the node after the op. Random weights come from the builder's own generator (``rng``), drawn only when
the caller does not give them, in the order weight, bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _pair(value: int | Sequence[int]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


class GraphBuilder:
    """Appends nodes to a model with one float image input ``[1, channels, *hw]`` (dynamic H/W by default)."""

    def __init__(
        self,
        channels: int = 3,
        *,
        input_name: str = "input",
        hw: Sequence[int | str] | None = None,
        opset: int = 17,
        seed: int = 0,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.opset = opset
        self.channels = channels
        self.input_name = input_name
        self.inputs = [
            helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, channels, *(hw or ("H", "W"))])
        ]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    # names, constants, nodes
    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, value, base: str = "c", dtype=None) -> str:
        """An initializer holding ``value`` (its own dtype unless ``dtype`` is given)."""
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def float_const(self, value, base: str = "c") -> str:
        """A float32 initializer."""
        return self.const(value, base, np.float32)

    def const_node(self, value, base: str = "c") -> str:
        """A Constant node holding ``value``; returns its output."""
        out = self.name(base)
        tensor = numpy_helper.from_array(np.asarray(value), out + "_v")
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def add_node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str:
        """Appends one node; returns its output (a list of ``n_out`` outputs when ``n_out`` > 1)."""
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.add_node(op, inputs, outs, self.name(op), **attrs)
        return outs[0] if n_out == 1 else outs  # type: ignore[return-value]

    # layers with seeded parameters
    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int | Sequence[int] = 3,
        *,
        bias: bool = True,
        pad: int | Sequence[int] | None = None,
        stride: int | Sequence[int] = 1,
        dilations: Sequence[int] | None = None,
        group: int = 1,
        weight: np.ndarray | None = None,
        bias_value: np.ndarray | None = None,
    ) -> str:
        """A Conv with kernel ``k`` (int or (kh, kw)); ``pad`` None keeps the size (dilated kernels too), an
        int pads all four sides, a sequence gives ONNX pads. Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1)."""
        kh, kw = _pair(k)
        dh, dw = dilations or (1, 1)
        if pad is None:
            pads = [dh * (kh // 2), dw * (kw // 2)] * 2
        else:
            pads = [pad] * 4 if isinstance(pad, int) else list(pad)
        if weight is None:
            fan_in = cin * kh * kw / group
            weight = self.rng.normal(0, 1 / np.sqrt(fan_in), size=(cout, cin // group, kh, kw))
        inputs = [x, self.const(np.asarray(weight).astype(np.float32), "w")]
        if bias and bias_value is None:
            bias_value = self.rng.normal(0, 0.1, size=cout)
        if bias:
            inputs.append(self.const(np.asarray(bias_value).astype(np.float32), "b"))
        attrs: dict = dict(kernel_shape=[kh, kw], pads=pads, strides=_pair(stride), group=group)
        if dilations is not None:
            attrs["dilations"] = list(dilations)
        return self.op("Conv", inputs, **attrs)

    def bn(self, x: str, channels: int, params: Sequence[np.ndarray] | None = None, epsilon=1e-5) -> str:
        """BatchNormalization with (scale, bias, mean, var) = ``params`` or seeded ones."""
        if params is None:
            r = self.rng
            params = [r.uniform(0.5, 1.5, channels), r.normal(0, 0.2, channels), r.normal(0, 0.2, channels)]
            params.append(r.uniform(0.5, 2.0, channels))
        names = [self.const(p, base, np.float32) for p, base in zip(params, ("scale", "bias", "mean", "var"))]
        return self.op("BatchNormalization", [x, *names], epsilon=epsilon)

    def pad(self, x: str, top: int, left: int, bottom: int, right: int) -> str:
        """A constant zero Pad of the spatial dims."""
        return self.op("Pad", [x, self.const([0, 0, top, left, 0, 0, bottom, right], "pads", np.int64)])

    # the model
    def model(
        self,
        *outputs: str | onnx.ValueInfoProto,
        graph_name: str = "g",
        ir_version: int = 8,
        producer_name: str | None = None,
        check: bool = True,
    ) -> onnx.ModelProto:
        """The model with these outputs (names get float [?, ?, ?, ?]); checked unless ``check`` is False."""
        outs = [
            o
            if isinstance(o, onnx.ValueInfoProto)
            else helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4)
            for o in outputs
        ]
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = ir_version
        if producer_name is not None:
            model.producer_name = producer_name
        if check:
            onnx.checker.check_model(model)
        return model
