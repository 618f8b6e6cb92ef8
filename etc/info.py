"""Model facts: inputs/outputs, opset, op histogram, parameters, MACs at a given size, plainness."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from etc.graph import op_histogram
from etc.runtime import concrete_shape, input_specs

PLAIN_OPS = frozenset({"Conv", "Relu", "DepthToSpace"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class ModelInfo:
    inputs: list[dict]
    outputs: list[dict]
    opset: int
    ops: dict[str, int]
    nodes: int
    params: int
    macs: int | None
    size: tuple[int, int]
    plain_share: float
    non_plain: dict[str, int] = field(default_factory=dict)
    depth: int = 0  # nodes on the longest input-to-output path
    forks: int = 0  # tensors read by more than one node (each a branch point an NPU must buffer)
    qdq: dict[str, int] = field(default_factory=dict)  # Q/DQ nodes of a QDQ model, not counted above

    def as_dict(self) -> dict:
        return asdict(self)


def _value_info(values) -> list[dict]:
    out = []
    for v in values:
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in v.type.tensor_type.shape.dim
        ]
        dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
        out.append({"name": v.name, "shape": dims, "dtype": dtype})
    return out


def count_params(model: onnx.ModelProto) -> int:
    """Elements of float initializers and Constant tensors (weights, biases)."""
    total = 0
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
    }
    for init in model.graph.initializer:
        if init.data_type in floats:
            total += int(np.prod(init.dims)) if init.dims else 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in floats:
                    total += int(np.prod(attr.t.dims)) if attr.t.dims else 1
    return total


def static_shapes(model: onnx.ModelProto, size: tuple[int, int]) -> dict[str, list[int]] | None:
    """Every tensor's shape with the inputs' dynamic H/W set to ``size`` (0 where unknown), or None."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    specs = {s.name: s for s in input_specs(model)}
    for value in static.graph.input:
        if value.name in specs:
            shape = concrete_shape(specs[value.name], size)
            for dim, n in zip(value.type.tensor_type.shape.dim, shape):
                dim.Clear()
                dim.dim_value = n
    del static.graph.value_info[:]
    for out in static.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        static = onnx.shape_inference.infer_shapes(static, data_prop=True)
    except Exception:
        return None
    shapes = {}
    for v in [*static.graph.value_info, *static.graph.input, *static.graph.output]:
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
    for init in static.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_macs(model: onnx.ModelProto, size: tuple[int, int] = (360, 640)) -> int | None:
    """Multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm for one input of H x W = ``size`` (None when
    a shape is unknown)."""
    from etc.cost import node_macs

    shapes = static_shapes(model, size)
    if shapes is None:
        return None
    macs = [node_macs(node, shapes) for node in model.graph.node]
    return None if None in macs else sum(macs)  # type: ignore[arg-type]


def integer_view(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A QDQ model as the integer model it stands for, and the Q/DQ nodes that were left out.

    QuantizeLinear/DequantizeLinear only mark where tensors are int8 (a runtime fuses them into the integer
    kernels), so counting them as ops would make an INT8 model look less plain and slower than its FP32 source.
    Here a DequantizeLinear of a constant becomes that constant's dequantized float value (same shape, so the
    MACs and parameters stay), and a QuantizeLinear -> DequantizeLinear pair becomes a plain connection. A model
    without Q/DQ nodes is returned as is.
    """
    qdq = {op: n for op, n in op_histogram(model).items() if op in QDQ_OPS}
    if not qdq:
        return model, {}
    inits = {i.name: i for i in model.graph.initializer}
    alias: dict[str, str] = {}
    values: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            alias[node.output[0]] = node.input[0]
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values.append(onnx.numpy_helper.from_array(_dequantized(node, inits), node.output[0]))
        elif node.op_type == "DequantizeLinear":
            alias[node.output[0]] = node.input[0]

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        kept = out.graph.node.add()
        kept.CopyFrom(node)
        for i, name in enumerate(kept.input):
            kept.input[i] = source(name)
    used = {t for n in out.graph.node for t in n.input}
    for value in out.graph.output:
        value.name = source(value.name)
    keep = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend([*keep, *(v for v in values if v.name in used)])
    del out.graph.value_info[:]
    return out, qdq


def _dequantized(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """(q - zero point) * scale of a DequantizeLinear of constants, per tensor or along its ``axis``."""
    q = onnx.numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zero = (
        onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2] in inits
        else np.zeros_like(scale)
    )
    if scale.ndim == 1 and scale.size > 1 and q.ndim > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def model_info(model: onnx.ModelProto, size: tuple[int, int] = (360, 640)) -> ModelInfo:
    """The facts of ``model``; a QDQ model's are those of the integer model it is (:func:`integer_view`)."""
    from etc.frontends.onnx_io import opset_of

    given = model
    model, qdq = integer_view(model)
    ops = op_histogram(model)
    nodes = sum(ops.values())
    plain = sum(n for op, n in ops.items() if op in PLAIN_OPS)
    inits = {i.name for i in given.graph.initializer}
    return ModelInfo(
        inputs=_value_info([v for v in given.graph.input if v.name not in inits]),
        outputs=_value_info(given.graph.output),
        opset=opset_of(model),
        ops=ops,
        nodes=nodes,
        params=count_params(model),
        macs=count_macs(model, size),
        size=size,
        plain_share=plain / nodes if nodes else 1.0,
        non_plain={op: n for op, n in ops.items() if op not in PLAIN_OPS},
        **topology(model),
        qdq=qdq,
    )


def topology(model: onnx.ModelProto) -> dict[str, int]:
    """Depth (longest path, in nodes) and branch points of the dataflow graph; a plain net is a chain."""
    import networkx as nx

    graph = nx.DiGraph()
    produced = {}
    for index, node in enumerate(model.graph.node):
        graph.add_node(index)
        for out in node.output:
            produced[out] = index
    readers: dict[str, int] = {}
    for index, node in enumerate(model.graph.node):
        for name in set(node.input):
            if name in produced:
                graph.add_edge(produced[name], index)
            readers[name] = readers.get(name, 0) + 1
    inits = {i.name for i in model.graph.initializer}
    forks = sum(1 for name, n in readers.items() if n > 1 and name not in inits)
    depth = nx.dag_longest_path_length(graph) + 1 if graph.number_of_nodes() else 0
    return {"depth": int(depth), "forks": int(forks)}


def human(n: float | None) -> str:
    """12345678 -> '12.35M'."""
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
