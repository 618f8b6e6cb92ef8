"""The graph layer: onnx-graphsurgeon graphs plus the small vocabulary every rule speaks.

Rules read the graph through :func:`producer`, :func:`consumers`, :func:`const_value` and :class:`ConvSpec`,
and change it through :func:`make_conv`, :func:`adopt_output` and :func:`retire`. A rewrite never renames a
surviving tensor: the replacement adopts the old output tensor, so graph outputs and downstream consumers stay
wired without a search.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR

Node = gs.Node
Tensor = gs.Tensor


_FLOAT_TYPES = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
)


def shape_view(model: onnx.ModelProto, keep: int = 4096) -> onnx.ModelProto:
    """A copy for shape inference: float initializers of more than ``keep`` values become graph inputs of the same
    type and shape, so inference (which serializes its input) does not copy the weights. Shapes are the same as
    the model's own: no shape is computed from a float weight's values (small float constants such as Resize
    scales stay initializers)."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    initializers = list(light.graph.initializer)
    del light.graph.initializer[:]
    inputs = {value.name for value in light.graph.input}
    for init in initializers:
        size = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type in _FLOAT_TYPES and size > keep and init.name not in inputs:
            light.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
        else:
            light.graph.initializer.append(init)
    return light


def to_gs(model: onnx.ModelProto, *, infer_shapes: bool = True) -> gs.Graph:
    """Imports a model into a graphsurgeon graph (shapes inferred when possible)."""
    if infer_shapes:
        with contextlib.suppress(Exception):
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    graph = gs.import_onnx(model)
    return graph


def to_onnx(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Exports a graph, keeping the ir_version, opsets and metadata of ``like``. Value infos are dropped."""
    cleanup(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    del model.graph.value_info[:]
    model.ir_version = like.ir_version
    del model.opset_import[:]
    model.opset_import.extend(like.opset_import)
    model.producer_name = like.producer_name
    model.producer_version = like.producer_version
    model.doc_string = like.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    _drop_unused_opsets(model)
    return model


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    used = {n.domain or "" for n in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def producer(tensor: Tensor) -> Node | None:
    """The node producing ``tensor`` or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def is_channel_concat(node: Node | None) -> bool:
    """A Concat along the channel axis of NCHW tensors."""
    if node is None or node.op != "Concat":
        return False
    axis = int(node.attrs.get("axis", 0))
    return axis == 1 or (axis == -3 and all(t.shape is not None and len(t.shape) == 4 for t in node.outputs))


def concat_leaves(tensor: Tensor) -> list[Tensor]:
    """The tensors a channel Concat joins, flattened through nested channel Concats (else [tensor])."""
    node = producer(tensor)
    if not is_channel_concat(node):
        return [tensor]
    return [leaf for t in node.inputs for leaf in concat_leaves(t)]


def consumers(tensor: Tensor) -> list[Node]:
    """Nodes reading ``tensor`` (each listed once)."""
    seen: list[Node] = []
    for node in tensor.outputs:
        if not any(node is s for s in seen):
            seen.append(node)
    return seen


def is_graph_output(graph: gs.Graph, tensor: Tensor) -> bool:
    return any(tensor is out for out in graph.outputs)


def only_consumer(graph: gs.Graph, tensor: Tensor, node: Node) -> bool:
    """True when ``node`` is the sole reader of ``tensor`` and the tensor is not a graph output."""
    users = consumers(tensor)
    return len(users) == 1 and users[0] is node and not is_graph_output(graph, tensor)


def const_value(tensor: Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in node.attrs:
                value = node.attrs[key]
                return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    return None


def is_empty_input(tensor: Tensor | None) -> bool:
    """ONNX optional inputs left out are empty-named variables."""
    return tensor is None or (isinstance(tensor, gs.Variable) and tensor.name == "")


def input_at(node: Node, index: int) -> Tensor | None:
    if index < len(node.inputs) and not is_empty_input(node.inputs[index]):
        return node.inputs[index]
    return None


def static_channels(tensor: Tensor) -> int | None:
    """Static channel count (dim 1) of a 4-D tensor when known (a constant's value or the tensor's shape)."""
    value = const_value(tensor)
    if value is not None:
        return int(value.shape[1]) if value.ndim == 4 else None
    shape = tensor.shape
    if shape is not None and len(shape) == 4 and isinstance(shape[1], (int, np.integer)) and shape[1] > 0:
        return int(shape[1])
    return None


def shape_or_conv_channels(tensor: Tensor) -> int | None:
    """Channel count from the tensor's static shape or, failing that, from the rows of the Conv producing it
    (the narrower question :func:`channels_of` extends through activations, Concats and DepthToSpace)."""
    known = static_channels(tensor)
    if known is not None:
        return known
    node = producer(tensor)
    if node is not None and node.op == "Conv" and conv_spec(node) is not None:
        return int(const_value(input_at(node, 1)).shape[0])
    return None


#: elementwise ops whose output has the shape of their first input
SHAPE_PRESERVING = ("Relu", "PRelu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Identity", "Neg")


def channels_of(tensor: Tensor) -> int | None:
    """Channel count (dim 1): the static one (:func:`channels`) or, for tensors made by rewrites (no shape yet),
    the one their producers imply (Conv rows, channel Concat sums, DepthToSpace, elementwise activations)."""
    static = static_channels(tensor)
    if static is not None or const_value(tensor) is not None:
        return static
    node = producer(tensor)
    if node is None:
        return None
    if node.op == "Conv":
        weight = const_value(input_at(node, 1))
        return int(weight.shape[0]) if weight is not None else None
    if node.op in SHAPE_PRESERVING:
        return channels_of(node.inputs[0])
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (1, -3):
        counts = [channels_of(t) for t in node.inputs]
        return sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]
    if node.op == "DepthToSpace":
        c = channels_of(node.inputs[0])
        block = int(node.attrs["blocksize"])
        return c // (block * block) if c is not None else None
    return None


def set_channels(tensor: gs.Tensor, like: gs.Tensor, count: int) -> None:
    """Gives a tensor made by a rewrite the shape of ``like`` with ``count`` channels (when ``like`` is 4-D)."""
    shape = like.shape
    if shape is not None and len(shape) == 4:
        tensor.shape = [shape[0], count, shape[2], shape[3]]
    tensor.dtype = np.float32


def spatial_root(tensor: gs.Tensor) -> gs.Tensor:
    """The earliest tensor with provably the same H and W, through same-padded stride-1 convs, elementwise
    activations and channel Concats."""
    while True:
        node = producer(tensor)
        if node is None:
            return tensor
        if node.op == "Conv":
            spec = conv_spec(node)
            if spec is None or not spec.is_same_padded:
                return tensor
        elif node.op == "Concat":
            if int(node.attrs.get("axis", 0)) != 1:
                return tensor
        elif node.op not in SHAPE_PRESERVING:
            return tensor
        tensor = node.inputs[0]


def same_spatial(a: gs.Tensor, b: gs.Tensor) -> bool | None:
    """True when H/W provably agree (equal static or named dims, or a common spatial root), False when static
    dims differ, None when unknown."""
    sa, sb = a.shape, b.shape
    if sa is not None and sb is not None and len(sa) == 4 and len(sb) == 4:
        pairs = list(zip(sa[2:], sb[2:]))
        if all(isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)) for x, y in pairs):
            return all(x == y for x, y in pairs)
        if all(x == y and isinstance(x, str) and x and not x.startswith("unk__") for x, y in pairs):
            return True
    if spatial_root(a) is spatial_root(b):
        return True
    return None


def attribute_values(node: Node | onnx.NodeProto) -> dict:
    """The attributes of a graphsurgeon node or an onnx NodeProto as a name -> Python value dict."""
    if isinstance(node, onnx.NodeProto):
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return node.attrs


def auto_pad(node: Node | onnx.NodeProto) -> str:
    """The auto_pad attribute as text; absent or empty means NOTSET (as onnxruntime reads it)."""
    value = attribute_values(node).get("auto_pad", "NOTSET")
    if isinstance(value, bytes):
        value = value.decode()
    return value or "NOTSET"


def explicit_pads(node: Node | onnx.NodeProto) -> tuple[int, ...] | None:
    """The pads of a Conv/pool/ConvTranspose: its ``pads`` (zeros when absent) for auto_pad NOTSET, zeros for
    VALID, None for SAME_UPPER/SAME_LOWER (they depend on the input size)."""
    mode = auto_pad(node)
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode != "NOTSET":
        return None
    return tuple(int(p) for p in attribute_values(node).get("pads", (0, 0, 0, 0)))


@dataclass(frozen=True)
class ConvSpec:
    """The attributes of a 2-D Conv, normalized (explicit pads, no auto_pad)."""

    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    @property
    def is_same_padded(self) -> bool:
        """Output size equals input size at stride 1 (pads (k-1)//2 on both sides, odd kernel)."""
        kh, kw = self.kernel
        dh, dw = self.dilations
        return (
            self.strides == (1, 1)
            and kh % 2 == 1
            and kw % 2 == 1
            and self.pads == ((kh - 1) * dh // 2, (kw - 1) * dw // 2, (kh - 1) * dh // 2, (kw - 1) * dw // 2)
        )

    def attrs(self) -> dict:
        return {
            "kernel_shape": list(self.kernel),
            "pads": list(self.pads),
            "strides": list(self.strides),
            "dilations": list(self.dilations),
            "group": self.group,
        }


def conv_spec(node: Node) -> ConvSpec | None:
    """ConvSpec of a 2-D Conv with constant weights, or None (auto_pad SAME_* with unknown sizes, 1-D, 3-D)."""
    weight = const_value(input_at(node, 1))
    if weight is None or weight.ndim != 4:
        return None
    kernel = tuple(int(k) for k in node.attrs.get("kernel_shape", weight.shape[2:]))
    strides = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in node.attrs.get("dilations", (1, 1)))
    pads = explicit_pads(node)
    if pads is None and strides == (1, 1):
        total = [(k - 1) * d for k, d in zip(kernel, dilations)]
        lo = [t // 2 if auto_pad(node) == "SAME_UPPER" else t - t // 2 for t in total]
        pads = (lo[0], lo[1], total[0] - lo[0], total[1] - lo[1])
    elif pads is None:
        return None
    return ConvSpec(kernel, pads, strides, dilations, int(node.attrs.get("group", 1)))  # type: ignore[arg-type]


def conv_weights(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of a Conv/ConvTranspose with constant weights; a missing bias becomes zeros."""
    weight = const_value(input_at(node, 1))
    assert weight is not None, f"{node.name}: weights are not constant"
    bias = const_value(input_at(node, 2))
    out_ch = weight.shape[0] if node.op == "Conv" else weight.shape[1] * int(node.attrs.get("group", 1))
    if bias is None:
        bias = np.zeros(out_ch, dtype=weight.dtype)
    return weight.astype(np.float64), bias.astype(np.float64)


@dataclass
class Namer:
    """Hands out tensor/node names unused in the graph, deterministically."""

    taken: set[str] = field(default_factory=set)
    counter: itertools.count = field(default_factory=itertools.count)

    @classmethod
    def for_graph(cls, graph: gs.Graph) -> Namer:
        taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes}
        return cls(taken)

    def __call__(self, base: str) -> str:
        base = base or "etc"
        name = base
        while name in self.taken:
            name = f"{base}_{next(self.counter)}"
        self.taken.add(name)
        return name


def constant(namer: Namer, base: str, value: np.ndarray, dtype=np.float32) -> gs.Constant:
    return gs.Constant(namer(base), np.ascontiguousarray(np.asarray(value, dtype=dtype)))


def make_node(
    graph: gs.Graph,
    namer: Namer,
    op: str,
    inputs: Sequence[Tensor],
    *,
    attrs: dict | None = None,
    output: Tensor | None = None,
    name: str = "",
) -> Node:
    """Appends a node; its single output is ``output`` (adopted) or a fresh float variable."""
    if output is None:
        output = gs.Variable(namer(f"{name or op.lower()}_out"), dtype=np.float32)
    else:
        for old in list(output.inputs):
            release_output(old, output, namer)
    node = gs.Node(
        op=op, name=namer(name or op), attrs=dict(attrs or {}), inputs=list(inputs), outputs=[output]
    )
    graph.nodes.append(node)
    return node


def make_conv(
    graph: gs.Graph,
    namer: Namer,
    x: Tensor,
    weight: np.ndarray,
    bias: np.ndarray | None,
    spec: ConvSpec,
    *,
    output: Tensor | None = None,
    name: str = "Conv",
) -> Node:
    """Conv(x, W, b) with ``spec``; weights stored as float32 initializers."""
    inputs = [x, constant(namer, f"{name}.weight", weight)]
    if bias is not None:
        inputs.append(constant(namer, f"{name}.bias", bias))
    attrs = spec.attrs()
    attrs["kernel_shape"] = [int(weight.shape[2]), int(weight.shape[3])]
    return make_node(graph, namer, "Conv", inputs, attrs=attrs, output=output, name=name)


@dataclass(frozen=True)
class PadOperands:
    """A Pad's mode and constant operands: ``pads`` (begins then ends) and ``value`` are None when computed at
    run time (``value`` is 0.0 when absent), ``axes`` None when absent; ``axes_dynamic`` when computed."""

    mode: str
    pads: list[int] | None
    value: float | None
    axes: list[int] | None
    axes_dynamic: bool


def pad_operands(node: Node) -> PadOperands:
    """Reads a Pad node (opset 2 attributes or opset 11+ inputs)."""
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads_t = input_at(node, 1)
    pads = const_value(pads_t) if pads_t is not None else node.attrs.get("pads")
    value_t = input_at(node, 2)
    value: float | None = 0.0
    if value_t is not None:
        found = const_value(value_t)
        value = None if found is None else float(np.asarray(found).reshape(-1)[0]) if found.size else 0.0
    axes_t = input_at(node, 3)
    axes = const_value(axes_t) if axes_t is not None else None
    return PadOperands(
        mode=mode,
        pads=None if pads is None else [int(p) for p in np.asarray(pads).reshape(-1)],
        value=value,
        axes=None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)],
        axes_dynamic=axes_t is not None and axes is None,
    )


def pads_on_axes(pads: list[int], axes: list[int]) -> list[int]:
    """The 4-D begins-then-ends padding of a Pad that names its ``axes``."""
    half = len(pads) // 2
    full = [0] * 8
    for k, axis in enumerate(a % 4 for a in axes):
        full[axis], full[axis + 4] = pads[k], pads[k + half]
    return full


def make_conv_rows(
    graph: gs.Graph,
    namer: Namer,
    conv: Node,
    rows: np.ndarray,
    sign: np.ndarray | None = None,
    *,
    output: Tensor | None = None,
    name: str = "Conv",
) -> Node:
    """A Conv computing output channels ``rows`` of ``conv`` (each times ``sign``, if given) from the same input
    with the same geometry; the bias is kept only if ``conv`` has one."""
    weight, bias = conv_weights(conv)
    weight, bias = weight[rows], bias[rows]
    if sign is not None:
        weight, bias = weight * sign[:, None, None, None], bias * sign
    has_bias = input_at(conv, 2) is not None
    spec = conv_spec(conv)
    return make_conv(
        graph, namer, conv.inputs[0], weight, bias if has_bias else None, spec, output=output, name=name
    )


def release_output(node: Node, tensor: Tensor, namer: Namer) -> None:
    """Detaches ``tensor`` from its producer ``node`` so another node can produce it.

    A multi-output node keeps its output positions (Split, Dropout: position is meaning): the slot gets a fresh,
    unused tensor. A single-output node is left with no outputs, i.e. retired.
    """
    slot = next(i for i, t in enumerate(node.outputs) if t is tensor)
    if len(node.outputs) > 1:
        node.outputs[slot] = gs.Variable(namer(f"{tensor.name}_unused"), dtype=tensor.dtype)
    else:
        node.outputs.remove(tensor)


def adopt_output(old: Node, new: Node, index: int = 0, namer: Namer | None = None) -> None:
    """Makes ``new`` produce ``old``'s output tensor ``index`` in place of its own first output."""
    target = old.outputs[index]
    mine = new.outputs[0]
    release_output(old, target, namer or Namer({t.name for t in old.outputs}))
    new.outputs[0] = target
    mine.inputs.clear()


def retire(nodes: Iterable[Node]) -> None:
    """Disconnects nodes whose work has been taken over; cleanup removes them."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def is_retired(node: Node) -> bool:
    return not node.outputs


def cleanup(graph: gs.Graph) -> gs.Graph:
    """Removes dead nodes and unused initializers and sorts topologically."""
    before = list(graph.nodes)
    graph.nodes = [n for n in before if n.outputs]
    graph.cleanup(remove_unused_graph_inputs=False)
    kept = {id(n) for n in graph.nodes}
    retire(n for n in before if id(n) not in kept)  # dead nodes must not linger as readers of live tensors
    graph.nodes = toposorted(graph.nodes)
    return graph


def toposorted(nodes: list[Node]) -> list[Node]:
    """Kahn's algorithm, stable (ties keep list order), iterative: deep graphs need no recursion."""
    import heapq

    index = {id(n): i for i, n in enumerate(nodes)}
    pending = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        sources = {index[id(t.inputs[0])] for t in node.inputs if t.inputs and id(t.inputs[0]) in index}
        sources.discard(i)
        pending[i] = len(sources)
        for s in sources:
            readers[s].append(i)
    ready = [i for i, count in enumerate(pending) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            pending[j] -= 1
            if pending[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle")
    return [nodes[i] for i in order]


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of node op types, most common first, ties by name."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def replace_uses(graph: gs.Graph, old: Tensor, new: Tensor) -> None:
    """Every node reading ``old`` reads ``new`` instead (graph outputs are not touched)."""
    for node in consumers(old):
        for i, tensor in enumerate(node.inputs):
            if tensor is old:
                node.inputs[i] = new


def can_bypass(graph: gs.Graph, src: Tensor, dst: Tensor) -> bool:
    """Whether ``dst`` can give way to ``src`` keeping graph output names: not when ``dst`` is a graph output
    and ``src`` is a graph input, a constant or another graph output (the precondition of :func:`bypass`)."""
    if not is_graph_output(graph, dst):
        return True
    return (
        producer(src) is not None
        and not is_graph_output(graph, src)
        and not any(t is src for t in graph.inputs)
    )


def bypass(graph: gs.Graph, node: Node, index: int = 0) -> bool:
    """Removes a node computing y = x (input ``index`` -> output 0), keeping graph output names.

    Returns False when it cannot: the output is a graph output and the input is a graph input or constant.
    """
    src, dst = node.inputs[index], node.outputs[0]
    if not is_graph_output(graph, dst):
        replace_uses(graph, dst, src)
        retire([node])
        return True
    if not can_bypass(graph, src, dst):
        return False
    upstream = producer(src)
    # the upstream node takes over the graph output name; other readers of src follow it
    replace_uses(graph, src, dst)
    retire([node])
    slot = next(i for i, t in enumerate(upstream.outputs) if t is src)
    upstream.outputs[slot] = dst
    return True


def static_shape(tensor: Tensor) -> tuple[int, ...] | None:
    """The fully static shape of a tensor, or None when any dim is symbolic/unknown."""
    value = const_value(tensor)
    if value is not None:
        return tuple(value.shape)
    shape = tensor.shape
    if shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def per_channel_constant(value: np.ndarray, rank: int = 4) -> np.ndarray | None:
    """A constant that broadcasts along axis 1 of a rank-``rank`` tensor only, as a flat (C,) array (or (1,))."""
    value = np.asarray(value)
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.reshape(-1)


def batchnorm_affine(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) with BatchNormalization(x) = a·x + c per channel (a = γ / sqrt(σ² + ε), c = β - a·μ), float64.

    Raises ValueError saying why when the node is not an inference-mode affine map: training mode, running
    statistics outputs read, or parameters that are not constant.
    """
    if int(node.attrs.get("training_mode", 0)):
        raise ValueError("BatchNormalization in training mode")
    if any(out.outputs for out in node.outputs[1:]):
        raise ValueError("running statistics outputs are used")
    params = [const_value(input_at(node, i)) for i in range(1, 5)]
    if any(p is None for p in params):
        raise ValueError("BatchNormalization parameters are not constant")
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)  # type: ignore[arg-type]
    a = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return a, beta - a * mean
