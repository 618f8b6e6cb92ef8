"""The graph picture's layout: a layered drawing of an ONNX op graph (a small Sugiyama layout)::

    layer    = longest path from the graph inputs            (inputs on top, data flows down)
    long edges are split into one invisible point per layer they cross, so they route between boxes
    order    = a few barycenter sweeps (mean position of neighbours in the layer above, then below)
    x        = pulled towards the neighbours' mean, then pushed apart to keep order and spacing

Constant nodes and initializers are not drawn; Conv boxes carry "kxk Cin->Cout", DepthToSpace its blocksize and
mode (:func:`node_detail`). :mod:`etc.tools.report` draws the result as SVG.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from etc import proto
from etc.cost import PLAIN_OPS


def node_id(node: onnx.NodeProto) -> str:
    """How hits and boxes name a node: its name, or its first output's when it has none (as the tracer does)."""
    return node.name or (node.output[0] if node.output else "")


@dataclass
class Box:
    """One drawn item: an op node, a graph input/output, or an invisible routing point of a long edge."""

    key: str
    label: str
    kind: str  # "input", "output", "plain", "other" or "dummy"
    detail: str = ""
    tooltip: str = ""
    layer: int = 0
    x: float = 0.0
    width: float = 0.0
    node_name: str = ""


@dataclass
class Layout:
    boxes: dict[str, Box]
    layers: list[list[str]]
    paths: list[list[str]]  # each original edge as the chain of box keys it passes through
    width: float = 0.0
    height: float = 0.0


BOX_H = 34.0
LAYER_GAP = 46.0
MARGIN = 16.0
GAP = 22.0
DUMMY_GAP = 10.0


def node_detail(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> str:
    """A short second line for a box: kernel and channels of convs, block size and mode of DepthToSpace."""
    op = node.op_type
    weight = consts.get(node.input[1]) if len(node.input) > 1 else None
    if op in ("Conv", "ConvTranspose") and weight is not None and weight.ndim >= 3:
        group = int(proto.attribute(node, "group", 1))
        kernel = "×".join(str(int(k)) for k in weight.shape[2:])
        if op == "Conv":
            cin, cout = weight.shape[1] * group, weight.shape[0]
        else:
            cin, cout = weight.shape[0], weight.shape[1] * group
        text = f"{kernel} {cin}→{cout}"
        strides = [int(s) for s in proto.attribute(node, "strides", []) or []]
        if any(s != 1 for s in strides):
            text += f" s{strides[0]}"
        if group > 1:
            text += f" g{group}"
        return text
    if op in ("DepthToSpace", "SpaceToDepth"):
        mode = proto.attribute(node, "mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return f"×{proto.attribute(node, 'blocksize', '?')} {mode if op == 'DepthToSpace' else ''}".strip()
    if op == "Clip":
        lo = (
            consts.get(node.input[1])
            if len(node.input) > 1 and node.input[1]
            else proto.attribute(node, "min")
        )
        hi = (
            consts.get(node.input[2])
            if len(node.input) > 2 and node.input[2]
            else proto.attribute(node, "max")
        )
        return f"[{_num(lo)}, {_num(hi)}]"
    if op == "Resize":
        mode = proto.attribute(node, "mode", b"nearest")
        return mode.decode() if isinstance(mode, bytes) else str(mode)
    return ""


def _num(value) -> str:
    if value is None:
        return "·"
    arr = np.asarray(value)
    return f"{float(arr.reshape(-1)[0]):g}" if arr.size == 1 else "…"


def _graph_boxes(model: onnx.ModelProto) -> tuple[dict[str, Box], list[tuple[str, str]], list[str]]:
    """Boxes for inputs, non-Constant nodes and outputs; data edges between them; keys in topological order."""
    consts = proto.constants(model)
    inits = {i.name for i in model.graph.initializer}
    boxes: dict[str, Box] = {}
    made_by: dict[str, str] = {}
    order: list[str] = []
    for value in model.graph.input:
        if value.name not in inits:
            key = f"in:{value.name}"
            boxes[key] = Box(key, value.name, "input", _shape_text(value), f"graph input {value.name}")
            made_by[value.name] = key
            order.append(key)
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            continue
        key = f"n:{index}"
        kind = "plain" if node.op_type in PLAIN_OPS else "other"
        ins = ", ".join(i for i in node.input if i and i not in consts) or "-"
        tip = f"{node.name or '(unnamed)'}: {node.op_type}\n{ins} → {', '.join(node.output)}"
        boxes[key] = Box(key, node.op_type, kind, node_detail(node, consts), tip, node_name=node_id(node))
        for out in node.output:
            made_by[out] = key
        order.append(key)
    edges: list[tuple[str, str]] = []
    for index, node in enumerate(model.graph.node):
        key = f"n:{index}"
        if key not in boxes:
            continue
        for name in node.input:
            src = made_by.get(name)
            if src is not None and (src, key) not in edges:
                edges.append((src, key))
    for value in model.graph.output:
        key = f"out:{value.name}"
        boxes[key] = Box(key, value.name, "output", _shape_text(value), f"graph output {value.name}")
        order.append(key)
        src = made_by.get(value.name)
        if src is not None:
            edges.append((src, key))
    return boxes, edges, order


def _shape_text(value: onnx.ValueInfoProto) -> str:
    dims = value.type.tensor_type.shape.dim
    if not dims:
        return ""
    return "×".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _topological(keys: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    """Kahn's order, ties broken by the graph's own order (stable); anything left in a cycle goes last."""
    rank = {k: i for i, k in enumerate(keys)}
    indeg = dict.fromkeys(keys, 0)
    succ: dict[str, list[str]] = {k: [] for k in keys}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    ready = sorted((k for k in keys if indeg[k] == 0), key=rank.__getitem__)
    out: list[str] = []
    while ready:
        k = ready.pop(0)
        out.append(k)
        for b in succ[k]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
                ready.sort(key=rank.__getitem__)
    seen = set(out)
    return out + [k for k in keys if k not in seen]


def layout(model: onnx.ModelProto, sweeps: int = 6) -> Layout:
    """Places the op graph in layers (see the module docstring); coordinates are box centres."""
    boxes, edges, order = _graph_boxes(model)
    topo = _topological(order, edges)
    preds: dict[str, list[str]] = {k: [] for k in boxes}
    for a, b in edges:
        preds[b].append(a)
    for key in topo:
        box = boxes[key]
        box.layer = max((boxes[p].layer + 1 for p in preds[key]), default=0)
    _sink_constant_chains(boxes, topo, edges)
    last = max((b.layer for b in boxes.values() if b.kind != "output"), default=0)
    for box in boxes.values():
        if box.kind == "output":
            box.layer = max(box.layer, last + 1)
    paths: list[list[str]] = []
    for a, b in edges:
        chain = [a]
        for layer in range(boxes[a].layer + 1, boxes[b].layer):
            key = f"d:{len(boxes)}"
            boxes[key] = Box(key, "", "dummy", layer=layer)
            chain.append(key)
        chain.append(b)
        paths.append(chain)
    up: dict[str, list[str]] = {k: [] for k in boxes}
    down: dict[str, list[str]] = {k: [] for k in boxes}
    for chain in paths:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    count = max(b.layer for b in boxes.values()) + 1 if boxes else 0
    layers: list[list[str]] = [[] for _ in range(count)]
    position = {k: i for i, k in enumerate(topo)}
    for key in sorted(boxes, key=lambda k: (position.get(k, len(position)), k)):
        layers[boxes[key].layer].append(key)
    for box in boxes.values():
        box.width = 0.0 if box.kind == "dummy" else _box_width(box)
    _order_layers(layers, up, down, sweeps)
    _place(boxes, layers, up, down, sweeps)
    result = Layout(boxes, layers, paths)
    if boxes:
        left = min(b.x - b.width / 2 for b in boxes.values())
        for box in boxes.values():
            box.x += MARGIN - left
        result.width = max(b.x + b.width / 2 for b in boxes.values()) + MARGIN
        result.height = count * (BOX_H + LAYER_GAP) - LAYER_GAP + 2 * MARGIN
    return result


def _sink_constant_chains(
    boxes: dict[str, Box], topo: Sequence[str], edges: Sequence[tuple[str, str]]
) -> None:
    """Nodes no graph input reaches (shape arithmetic on constants) move down to just above their first reader,
    instead of sitting in the top layer with long edges; their predecessors are unreachable too, so order holds."""
    succ: dict[str, list[str]] = {k: [] for k in boxes}
    for a, b in edges:
        succ[a].append(b)
    reached = {k for k, b in boxes.items() if b.kind == "input"}
    for key in topo:
        if key in reached:
            reached.update(succ[key])
    for key in reversed(topo):
        if key not in reached and succ[key]:
            boxes[key].layer = max(boxes[key].layer, min(boxes[s].layer for s in succ[key]) - 1)


def _box_width(box: Box) -> float:
    chars = max(len(box.label), int(len(box.detail) * 0.85))
    return max(56.0, 7.2 * chars + 18.0)


def _order_layers(layers: list[list[str]], up, down, sweeps: int) -> None:
    """Barycenter sweeps: each layer sorted by the mean index of its neighbours in the adjacent layer."""
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        indices = range(1, len(layers)) if forward else range(len(layers) - 2, -1, -1)
        for i in indices:
            ref = layers[i - 1] if forward else layers[i + 1]
            where = {k: j for j, k in enumerate(ref)}
            links = up if forward else down
            current = {k: j for j, k in enumerate(layers[i])}

            def centre(key: str, links=links, where=where, current=current) -> float:
                near = [where[n] for n in links[key] if n in where]
                return sum(near) / len(near) if near else float(current[key])

            layers[i].sort(key=lambda k: (centre(k), current[k]))


def _gap(a: Box, b: Box) -> float:
    return DUMMY_GAP if a.kind == "dummy" or b.kind == "dummy" else GAP


def _place(boxes: dict[str, Box], layers: list[list[str]], up, down, sweeps: int) -> None:
    """x: packed per layer and centred, then pulled towards neighbours while keeping order and spacing."""
    for layer in layers:
        x = 0.0
        for j, key in enumerate(layer):
            box = boxes[key]
            if j:
                x += _gap(boxes[layer[j - 1]], box)
            box.x = x + box.width / 2
            x += box.width
        for key in layer:
            boxes[key].x -= x / 2
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        order = layers[1:] if forward else layers[-2::-1]
        links = up if forward else down
        for layer in order:
            desired = []
            for key in layer:
                near = [boxes[n].x for n in links[key]]
                desired.append(sum(near) / len(near) if near else boxes[key].x)
            placed: list[float] = []
            for j, key in enumerate(layer):
                x = desired[j]
                if j:
                    prev, box = boxes[layer[j - 1]], boxes[key]
                    x = max(x, placed[-1] + prev.width / 2 + _gap(prev, box) + box.width / 2)
                placed.append(x)
            shift = sum(d - p for d, p in zip(desired, placed)) / len(placed) if placed else 0.0
            for key, x in zip(layer, placed):
                boxes[key].x = x + shift


# ---------------------------------------------------------------- SVG drawing
