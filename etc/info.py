"""Model facts: inputs/outputs, opset, op histogram, parameters, MACs at a given size, plainness."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from etc.cost import PLAIN_OPS, QDQ_OPS, count_params, integer_view, node_macs
from etc.frontends.onnx_io import opset_of
from etc.graph import op_histogram
from etc.shapes import static_shapes

__all__ = [
    "PLAIN_OPS",
    "QDQ_OPS",
    "ModelInfo",
    "count_macs",
    "count_params",
    "integer_view",
    "model_info",
    "static_shapes",
    "topology",
]


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


def count_macs(model: onnx.ModelProto, size: tuple[int, int] = (360, 640)) -> int | None:
    """Multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm for one input of H x W = ``size`` (None when
    a shape is unknown)."""
    shapes = static_shapes(model, size)
    if shapes is None:
        return None
    macs = [node_macs(node, shapes) for node in model.graph.node]
    return None if None in macs else sum(macs)  # type: ignore[arg-type]


def model_info(model: onnx.ModelProto, size: tuple[int, int] = (360, 640)) -> ModelInfo:
    """The facts of ``model``; a QDQ model's are those of the integer model it is (:func:`integer_view`)."""
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
    nodes = model.graph.node
    produced = {out: index for index, node in enumerate(nodes) for out in node.output}
    preds = [{produced[name] for name in node.input if name in produced} for node in nodes]
    readers: dict[str, int] = {}
    for node in nodes:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    inits = {i.name for i in model.graph.initializer}
    forks = sum(1 for name, n in readers.items() if n > 1 and name not in inits)
    return {"depth": _longest_chain(preds), "forks": int(forks)}


def _longest_chain(preds: list[set[int]]) -> int:
    """Nodes on the longest path of a DAG given each node's predecessors (Kahn order; any node order works)."""
    succs: list[list[int]] = [[] for _ in preds]
    waiting = [len(p) for p in preds]
    for index, before in enumerate(preds):
        for p in before:
            succs[p].append(index)
    depth = [1] * len(preds)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    while ready:
        index = ready.pop()
        for s in succs[index]:
            depth[s] = max(depth[s], depth[index] + 1)
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    return max(depth, default=0)


def human(n: float | None) -> str:
    """12345678 -> '12.35M'."""
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
