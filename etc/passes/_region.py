"""A region of linear, channel-only data-movement ops between two tensors is a 1x1 convolution.

    X ──> Unsqueeze ──> Tile | Expand ──> Reshape ──> T          T[n, o, h, w] = Σ_c K[o, c] · X[n, c, h, w]
                          ▲                  ▲
            Constant / Shape(·) / shape arithmetic only

Linearity is proved by structure, the kernel K is read by probing:

* every op on the data path from X to T is on DATA_OPS (pure data movement, linear in its data input);
* every data leaf of the region is X itself (a constant data leaf would make the region affine);
* every other input is a shape expression: SHAPE_OPS over constants and Shape(·) of X or of region tensors,
  so the region reads X's values only through its data path.

The region alone (with its shape expressions) runs in onnxruntime on X = e_c · P for every input channel c, with
P a random positive spatial pattern: each output channel must be an exact multiple K[o, c] · P (a pure channel
map, no spatial movement), at two spatial sizes (one odd) when H/W are dynamic, and a final random input must give
einsum(K, X). Anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from etc.graph import const_value, is_graph_output, producer

#: op -> indices of its data inputs (the rest are shape-like)
DATA_OPS: dict[str, tuple[int, ...] | None] = {
    "Identity": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Flatten": (0,),
    "Tile": (0,),
    "Expand": (0,),
    "Transpose": (0,),
    "Slice": (0,),
    "Split": (0,),
    "Gather": (0,),
    "Concat": None,  # every input is data
}
SHAPE_OPS = frozenset(
    {
        "Shape",
        "Constant",
        "Concat",
        "Slice",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Cast",
        "Reshape",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Identity",
        "Equal",
        "Where",
        "ConstantOfShape",
        "Range",
    }
)
PROBE_SIZES = ((5, 7), (6, 4))


class RegionError(Exception):
    """The tensor is produced by a single-input data-movement region that is not a pure channel map."""


@dataclass
class Region:
    """The nodes computing ``output`` from ``source`` (data path plus shape expressions)."""

    source: gs.Tensor
    output: gs.Tensor
    nodes: list[gs.Node]


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    idx = DATA_OPS[node.op]
    if idx is None:
        return list(node.inputs)
    return [node.inputs[i] for i in idx if i < len(node.inputs)]


def find_region(output: gs.Tensor) -> Region | None:
    """The data-movement region ending at ``output``, or None when it does not read exactly one tensor.

    Raises RegionError when the region reads one tensor but a shape input is not a shape expression.
    """
    root = producer(output)
    if root is None or root.op not in DATA_OPS:
        return None
    data_nodes: list[gs.Node] = []
    leaves: list[gs.Tensor] = []
    shape_inputs: list[gs.Tensor] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if any(node is n for n in data_nodes):
            continue
        data_nodes.append(node)
        data = _data_inputs(node)
        shape_inputs.extend(t for t in node.inputs if not any(t is d for d in data) and t.name)
        for tensor in data:
            parent = producer(tensor)
            if parent is not None and parent.op in DATA_OPS and parent.op != "Constant":
                stack.append(parent)
            elif not any(tensor is leaf for leaf in leaves):
                leaves.append(tensor)
    if len(leaves) != 1 or const_value(leaves[0]) is not None:
        return None
    source = leaves[0]
    shape_nodes = _shape_nodes(shape_inputs, source, data_nodes)
    nodes = [*data_nodes, *shape_nodes]
    return Region(source, output, nodes)


def _shape_nodes(tensors: list[gs.Tensor], source: gs.Tensor, data_nodes: list[gs.Node]) -> list[gs.Node]:
    """Nodes of the shape expressions feeding the region; RegionError if one reads values from elsewhere."""
    inside = {id(t) for n in data_nodes for t in n.outputs} | {id(source)}
    found: list[gs.Node] = []
    stack = list(tensors)
    while stack:
        tensor = stack.pop()
        if isinstance(tensor, gs.Constant) or id(tensor) in inside:
            continue
        node = producer(tensor)
        if node is None:
            raise RegionError(f"shape input '{tensor.name}' is a graph input, not a shape expression")
        if node.op not in SHAPE_OPS:
            raise RegionError(f"shape input '{tensor.name}' is computed by {node.op}, not a shape expression")
        if any(node is n for n in found):
            continue
        found.append(node)
        if node.op == "Shape":
            if id(node.inputs[0]) not in inside:
                raise RegionError(
                    f"a shape input reads the shape of '{node.inputs[0].name}' outside the region"
                )
            continue
        stack.extend(t for t in node.inputs if t.name)
    return found


def _topological(nodes: list[gs.Node]) -> list[gs.Node]:
    produced = {id(t): n for n in nodes for t in n.outputs}
    order: list[gs.Node] = []
    done: set[int] = set()

    def visit(node: gs.Node) -> None:
        if id(node) in done:
            return
        done.add(id(node))
        for t in node.inputs:
            parent = produced.get(id(t))
            if parent is not None:
                visit(parent)
        order.append(node)

    for node in nodes:
        visit(node)
    return order


def region_model(region: Region, batch, channels: int, spatial, opset: int) -> onnx.ModelProto:
    """The region as a standalone model from ``source`` (shape [batch, channels, *spatial]) to ``output``."""
    protos = [OnnxExporter.export_node(n) for n in _topological(region.nodes)]
    inits, seen = [], set()
    for node in region.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant) and t.name not in seen:
                seen.add(t.name)
                inits.append(OnnxExporter.export_tensor_proto(t))
    x = onnx.helper.make_tensor_value_info(
        region.source.name, onnx.TensorProto.FLOAT, [batch, channels, *spatial]
    )
    y = onnx.helper.make_tensor_value_info(region.output.name, onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(protos, "region", [x], [y], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _dim(value) -> int | None:
    return int(value) if isinstance(value, (int, np.integer)) and value > 0 else None


_PROBED: dict[bytes, np.ndarray | str] = {}  # channel maps (or why not) by the probed model's canonical bytes
_PROBED_LIMIT = 1024


def _canonical_key(model: onnx.ModelProto, channels: int, seed: int) -> bytes:
    """The region model with every tensor and node renamed by order of appearance, serialized: equal for
    regions that compute the same thing (a net repeats the same region in every block)."""
    canon = onnx.ModelProto()
    canon.CopyFrom(model)
    graph = canon.graph
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name:
            return name
        return names.setdefault(name, f"v{len(names)}")

    for value in [*graph.input, *graph.initializer]:
        value.name = rename(value.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in graph.output:
        value.name = rename(value.name)
    return canon.SerializeToString(deterministic=True) + f"|{channels}|{seed}".encode()


def channel_map(region: Region, channels: int, opset: int, seed: int = 0) -> np.ndarray:
    """K (out x in) with output = Σ_c K[o, c] input[c]; RegionError when the region is not such a map.

    Probing runs the region once per channel; a region with the same canonical model as one probed before (the
    same block repeated, or the same region in a later round) reuses that answer."""
    shape = list(region.source.shape or [None] * 4)
    if len(shape) != 4:
        raise RegionError(f"'{region.source.name}' is not 4-D")
    batch = _dim(shape[0])
    hw = (_dim(shape[2]), _dim(shape[3]))
    sizes = [hw] if all(hw) else list(PROBE_SIZES)
    spatial = [d if d else name for d, name in zip(hw, ("h", "w"))]
    model = region_model(region, batch or "n", channels, spatial, opset)
    key = _canonical_key(model, channels, seed)
    known = _PROBED.get(key)
    if known is None:
        try:
            known = _probe_map(model, region, channels, batch, sizes, seed)
        except RegionError as err:
            known = str(err)
        if len(_PROBED) >= _PROBED_LIMIT:
            _PROBED.clear()
        _PROBED[key] = known
    if isinstance(known, str):
        raise RegionError(known)
    return known.copy()


def _probe_map(
    model: onnx.ModelProto, region: Region, channels: int, batch: int | None, sizes: list, seed: int
) -> np.ndarray:
    """Reads K by running the region model on one-hot channel patterns, then checks it on a random input."""
    from etc import runtime

    try:
        sess = runtime.session(model)
    except Exception as exc:
        raise RegionError(f"the region does not run alone: {str(exc).splitlines()[0][:200]}") from None
    rng = np.random.default_rng(seed)
    kernel = None
    n = batch or 1
    for h, w in sizes:
        pattern = rng.uniform(0.5, 1.5, size=(n, h, w)).astype(np.float32)
        cols = []
        for c in range(channels):
            x = np.zeros((n, channels, h, w), np.float32)
            x[:, c] = pattern
            y = _run(runtime, sess, region, x)
            if y.ndim != 4 or y.shape[0] != n or y.shape[2:] != (h, w):
                raise RegionError(
                    f"output shape {list(y.shape)} is not [N, C', H, W] of input {[n, channels, h, w]}"
                )
            k = np.einsum("nohw,nhw->o", y.astype(np.float64), pattern) / float(
                np.sum(pattern.astype(np.float64) ** 2)
            )
            if np.abs(y - k[None, :, None, None] * pattern[:, None]).max() > 1e-6:
                raise RegionError("the region moves values spatially or across the batch (not a channel map)")
            cols.append(k)
        found = np.stack(cols, axis=1)
        if kernel is not None and not np.array_equal(found, kernel):
            raise RegionError("the channel map depends on the spatial size")
        kernel = found
    assert kernel is not None
    h, w = sizes[0]
    n = batch or 2
    x = rng.normal(size=(n, channels, h, w)).astype(np.float32)
    y = _run(runtime, sess, region, x)
    want = np.einsum("oc,nchw->nohw", kernel, x.astype(np.float64))
    if y.shape != want.shape or np.abs(y - want).max() > 1e-5:
        raise RegionError("the region is not linear in its input (random check failed)")
    return kernel


def _run(runtime, sess, region: Region, x: np.ndarray) -> np.ndarray:
    try:
        return runtime.run(sess, {region.source.name: x})[region.output.name]
    except Exception as exc:
        raise RegionError(
            f"the region fails on probe input {list(x.shape)}: {str(exc).splitlines()[0][:200]}"
        ) from None


def is_region_exit(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """True when ``tensor`` leaves the data-movement world (read by a non-data op or a graph output)."""
    if is_graph_output(graph, tensor):
        return True
    return any(n.op not in DATA_OPS and n.op != "Shape" for n in tensor.outputs)
