"""A self-contained HTML report of one optimization: what the graph looked like, what changed, and the proof.

Sections: summary (nodes, params, MACs, plain share), the graph before and after side by side (SVG drawn here,
no graphviz needed), op histograms, passes with their rule hits and the nodes each rule fired at, declined
rewrites, the verification table and latency (onnxruntime CPU, graph optimizations on).

The graph picture is a layered drawing of the op graph (a small Sugiyama layout)::

    layer    = longest path from the graph inputs            (inputs on top, data flows down)
    long edges are split into one invisible point per layer they cross, so they route between boxes
    order    = a few barycenter sweeps (mean position of neighbours in the layer above, then below)
    x        = pulled towards the neighbours' mean, then pushed apart to keep order and spacing

Constant nodes and initializers are not drawn; Conv boxes carry "kxk Cin->Cout", DepthToSpace its blocksize and
mode. The file holds no script and no external reference, so it can be mailed or archived as is.

    recorder = HitRecorder()
    plain, report = etc.optimize("model.onnx", instruments=[recorder])
    write_report("report.html", "model.onnx", plain, report, sites=recorder.sites)
"""

from __future__ import annotations

import html
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from etc.info import PLAIN_OPS
from etc.pipeline import HitSite, Instrument, PassContext, PassResult

MAX_DRAWN_NODES = 1500
LATENCY_SIZE = (64, 64)


# ---------------------------------------------------------------- rule hit locations


@dataclass(frozen=True)
class PassHit:
    """A rule application attributed to the pipeline step (1-based) and pass that made it."""

    step: int
    pass_name: str
    site: HitSite


class HitRecorder(Instrument):
    """Records where every rule fired during a pipeline run (pass, rule, node name, op type), read from the
    run's tracer (PassContext.tracer).

    Only applications inside passes that changed the model are kept, so ``sites`` matches the hit counts.
    """

    def __init__(self) -> None:
        self.sites: list[PassHit] = []
        self._ctx: PassContext | None = None
        self._start = 0

    def before_pipeline(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        self.sites = []
        self._ctx = ctx

    def before_pass(self, pass_name: str, model: onnx.ModelProto) -> None:
        self._start = len(self._ctx.tracer.hits) if self._ctx is not None else 0

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None:
        if result.modified and self._ctx is not None:
            self.sites.extend(PassHit(step, pass_name, site) for site in self._ctx.tracer.hits[self._start :])


# ---------------------------------------------------------------- graph layout


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


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(attr.t)
    return values


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def node_detail(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> str:
    """A short second line for a box: kernel and channels of convs, block size and mode of DepthToSpace."""
    op = node.op_type
    weight = consts.get(node.input[1]) if len(node.input) > 1 else None
    if op in ("Conv", "ConvTranspose") and weight is not None and weight.ndim >= 3:
        group = int(_attr(node, "group", 1))
        kernel = "×".join(str(int(k)) for k in weight.shape[2:])
        if op == "Conv":
            cin, cout = weight.shape[1] * group, weight.shape[0]
        else:
            cin, cout = weight.shape[0], weight.shape[1] * group
        text = f"{kernel} {cin}→{cout}"
        strides = [int(s) for s in _attr(node, "strides", []) or []]
        if any(s != 1 for s in strides):
            text += f" s{strides[0]}"
        if group > 1:
            text += f" g{group}"
        return text
    if op in ("DepthToSpace", "SpaceToDepth"):
        mode = _attr(node, "mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return f"×{_attr(node, 'blocksize', '?')} {mode if op == 'DepthToSpace' else ''}".strip()
    if op == "Clip":
        lo = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "min")
        hi = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else _attr(node, "max")
        return f"[{_num(lo)}, {_num(hi)}]"
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        return mode.decode() if isinstance(mode, bytes) else str(mode)
    return ""


def _num(value) -> str:
    if value is None:
        return "·"
    arr = np.asarray(value)
    return f"{float(arr.reshape(-1)[0]):g}" if arr.size == 1 else "…"


def _graph_boxes(model: onnx.ModelProto) -> tuple[dict[str, Box], list[tuple[str, str]], list[str]]:
    """Boxes for inputs, non-Constant nodes and outputs; data edges between them; keys in topological order."""
    consts = _constants(model)
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
        boxes[key] = Box(key, node.op_type, kind, node_detail(node, consts), tip, node_name=node.name)
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

_FILL = {"input": "#e8e8e8", "output": "#e8e8e8", "plain": "#d9ecd0", "other": "#fbdcc4"}
_STROKE = {"input": "#777", "output": "#777", "plain": "#4f8a3c", "other": "#c4621d"}


def _y(layer: int) -> float:
    return MARGIN + layer * (BOX_H + LAYER_GAP) + BOX_H / 2


def graph_svg(
    model: onnx.ModelProto, *, ident: str = "g", marks: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The op graph of ``model`` as an inline SVG element; ``marks`` maps node names to rule names to flag."""
    drawn = sum(1 for n in model.graph.node if n.op_type != "Constant")
    if drawn > MAX_DRAWN_NODES:
        return f'<p class="note">{drawn} nodes: too many to draw legibly; see the histograms.</p>'
    lay = layout(model)
    marks = marks or {}
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" id="{esc(ident)}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'role="img" aria-label="op graph, {drawn} nodes">',
        f'<defs><marker id="{esc(ident)}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
    ]
    for chain in lay.paths:
        parts.append(
            f'<path class="edge" d="{_edge_path(lay, chain)}" fill="none" stroke="#888" '
            f'stroke-width="1.2" marker-end="url(#{esc(ident)}-arrow)"/>'
        )
    for box in lay.boxes.values():
        if box.kind != "dummy":
            parts.append(_box_svg(box, marks.get(box.node_name, ()) if box.node_name else ()))
    parts.append("</svg>")
    return "\n".join(parts)


def _edge_path(lay: Layout, chain: Sequence[str]) -> str:
    points: list[tuple[float, float]] = []
    for j, key in enumerate(chain):
        box = lay.boxes[key]
        y = _y(box.layer)
        if j == 0:
            points.append((box.x, y + BOX_H / 2))
        elif j == len(chain) - 1:
            points.append((box.x, y - BOX_H / 2))
        else:
            points.extend([(box.x, y - BOX_H / 2), (box.x, y + BOX_H / 2)])
    d = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 == x1:
            d.append(f"L{x1:.1f},{y1:.1f}")
        else:
            mid = (y0 + y1) / 2
            d.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
    return " ".join(d)


def _box_svg(box: Box, rules: Sequence[str]) -> str:
    esc = html.escape
    x, y = box.x - box.width / 2, _y(box.layer) - BOX_H / 2
    radius = BOX_H / 2 if box.kind in ("input", "output") else 5
    cls = f"node {box.kind}" + (" hit" if rules else "")
    out = [
        f'<g class="{cls}" data-op="{esc(box.label) if box.kind in ("plain", "other") else ""}">',
        f"<title>{esc(box.tooltip)}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.width:.1f}" height="{BOX_H:.0f}" rx="{radius:.0f}" '
        f'fill="{_FILL[box.kind]}" stroke="{_STROKE[box.kind]}" stroke-width="{2.2 if rules else 1.2}"/>',
    ]
    cx = box.x
    if box.detail:
        out.append(f'<text x="{cx:.1f}" y="{y + 14:.1f}" class="op">{esc(box.label)}</text>')
        out.append(f'<text x="{cx:.1f}" y="{y + 27:.1f}" class="detail">{esc(box.detail)}</text>')
    else:
        out.append(f'<text x="{cx:.1f}" y="{y + 21:.1f}" class="op">{esc(box.label)}</text>')
    if rules:
        bx, by = x + box.width, y
        out.append(
            f'<g class="mark"><title>{esc("rules fired here: " + ", ".join(rules))}</title>'
            f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="8" fill="#3867d6"/>'
            f'<text x="{bx:.1f}" y="{by + 4:.1f}" class="badge">{len(rules)}</text></g>'
        )
    out.append("</g>")
    return "".join(out)


def histogram_svg(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """Op counts before (grey) and after (green) as paired horizontal bars."""
    ops = sorted(set(before) | set(after), key=lambda op: (-before.get(op, 0), -after.get(op, 0), op))
    top = max([*before.values(), *after.values(), 1])
    label_w, bar_w, row_h = 130.0, 300.0, 26.0
    height = 24 + row_h * len(ops)
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="histogram" id="op-histogram" viewBox="0 0 {label_w + bar_w + 50:.0f} '
        f'{height:.0f}" width="{label_w + bar_w + 50:.0f}" height="{height:.0f}" role="img" '
        'aria-label="op histogram">',
        '<rect x="130" y="4" width="10" height="10" fill="#9aa5b1"/><text x="144" y="13" class="legend">before'
        '</text><rect x="200" y="4" width="10" height="10" fill="#5a9e45"/><text x="214" y="13" '
        'class="legend">after</text>',
    ]
    for i, op in enumerate(ops):
        y = 22 + i * row_h
        parts.append(f'<g class="bar" data-op="{esc(op)}">')
        parts.append(f'<text x="{label_w - 6:.0f}" y="{y + 15:.0f}" class="oplabel">{esc(op)}</text>')
        for j, (counts, colour) in enumerate(((before, "#9aa5b1"), (after, "#5a9e45"))):
            n = counts.get(op, 0)
            w = bar_w * n / top
            parts.append(
                f'<rect x="{label_w:.0f}" y="{y + 2 + j * 11:.0f}" width="{w:.1f}" height="10" fill="{colour}">'
                f"<title>{esc(op)} {'before' if j == 0 else 'after'}: {n}</title></rect>"
                f'<text x="{label_w + w + 4:.1f}" y="{y + 11 + j * 11:.0f}" class="count">{n}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------- latency


def latency_ms(
    model: onnx.ModelProto, size: tuple[int, int] = LATENCY_SIZE, runs: int = 7, threads: int = 1
) -> float | None:
    """Median wall time of one inference in ms (onnxruntime CPU, graph optimizations on), or None if it fails."""
    from etc import runtime
    from etc.timing import median_ms

    try:
        sess = runtime.session(model, optimize=True, threads=threads)
        feeds = runtime.make_inputs(runtime.input_specs(model), size=size)
        return median_ms(lambda: sess.run(None, feeds), runs)
    except Exception:
        return None


# ---------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1600px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px}.pair figure{margin:0;border:1px solid #ddd;
padding:8px;overflow:auto;max-height:90vh}figcaption{font-weight:600;margin-bottom:6px}
svg.graph{max-width:100%;height:auto}svg text{font-family:system-ui,sans-serif;text-anchor:middle}
svg text.op{font-size:12px;font-weight:600}svg text.detail{font-size:10px;fill:#444}
svg text.badge{font-size:10px;fill:#fff;font-weight:700}svg text.oplabel{font-size:12px;text-anchor:end}
svg text.count,svg text.legend{font-size:11px;text-anchor:start}.ok{color:#2d7a1f;font-weight:600}
.fail{color:#b3261e;font-weight:600}.note{color:#555}code{font-size:12px}.sites{font-size:12px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="num"' if j in numeric else ""
            text = cell if isinstance(cell, _Raw) else esc(_fmt(cell))
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Cell text that is already HTML."""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:.3g}"
    return str(value)


def _human(n) -> str:
    from etc.info import human

    return human(n)


@dataclass
class ReportInputs:
    """Everything the page shows, gathered once."""

    title: str
    before: onnx.ModelProto
    after: onnx.ModelProto
    report: object  # etc.api.OptimizeReport
    sites: list[PassHit] = field(default_factory=list)
    latency: dict[str, float | None] = field(default_factory=dict)


def render_report(
    source: onnx.ModelProto,
    result: onnx.ModelProto,
    report,
    *,
    sites: Sequence[PassHit] = (),
    title: str = "model",
    measure_latency: bool = True,
    latency_size: tuple[int, int] = LATENCY_SIZE,
) -> str:
    """The HTML page for an optimization (``report`` is the OptimizeReport from ``etc.optimize``)."""
    latency = {}
    if measure_latency:
        latency = {"before": latency_ms(source, latency_size), "after": latency_ms(result, latency_size)}
    data = ReportInputs(title, source, result, report, list(sites), latency)
    sections = [
        _summary(data),
        _graphs(data),
        _histograms(data),
        _passes(data),
        _declines(data),
        _cost(data),
        _verification(data),
        _latency(data, latency_size),
    ]
    esc = html.escape
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ETC report: {esc(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>ETC report: {esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _summary(d: ReportInputs) -> str:
    b, a = d.report.before, d.report.after
    rows = [
        ["nodes", b.nodes, a.nodes],
        ["parameters", _human(b.params), _human(a.params)],
        [f"MACs @{b.size[0]}x{b.size[1]}", _human(b.macs), _human(a.macs)],
        ["plain share (Conv/Relu/DepthToSpace)", f"{b.plain_share:.0%}", f"{a.plain_share:.0%}"],
        ["opset", b.opset, a.opset],
    ]
    remaining = d.report.remaining
    tail = (
        "<p>Not plain yet:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in remaining) + "</ul>"
        if remaining
        else '<p class="ok">Only Conv, Relu and DepthToSpace remain.</p>'
    )
    return (
        '<section id="summary"><h2>Summary</h2>' + _table(["", "before", "after"], rows) + tail + "</section>"
    )


def _graphs(d: ReportInputs) -> str:
    marks: dict[str, list[str]] = {}
    for hit in d.sites:
        rules = marks.setdefault(hit.site.node, [])
        name = f"{hit.pass_name}/{hit.site.rule}"
        if name not in rules:
            rules.append(name)
    before = graph_svg(d.before, ident="graph-before", marks=marks)
    after = graph_svg(d.after, ident="graph-after")
    legend = (
        '<p class="note">Green: Conv, Relu, DepthToSpace; orange: everything else. A blue badge marks a node '
        "of the input graph where rules fired (hover for their names and for node names).</p>"
    )
    return (
        '<section id="graphs"><h2>Graph</h2>' + legend + '<div class="pair">'
        f"<figure><figcaption>before ({d.report.before.nodes} nodes)</figcaption>{before}</figure>"
        f"<figure><figcaption>after ({d.report.after.nodes} nodes)</figcaption>{after}</figure>"
        "</div></section>"
    )


def _histograms(d: ReportInputs) -> str:
    return (
        '<section id="histogram"><h2>Op histogram</h2>'
        + histogram_svg(d.report.before.ops, d.report.after.ops)
        + "</section>"
    )


def _passes(d: ReportInputs) -> str:
    pipeline = d.report.pipeline
    rows = [
        [
            i + 1,
            r.name,
            f"{r.seconds * 1000:.1f} ms",
            "yes" if r.modified else "no",
            ", ".join(f"{k} ×{v}" for k, v in r.hits.items()) or "-",
        ]
        for i, r in enumerate(pipeline.records)
    ]
    runs = _table(["step", "pass", "time", "changed", "rule hits"], rows, numeric=(0, 2))
    where: dict[str, list[PassHit]] = {}
    for hit in d.sites:
        where.setdefault(f"{hit.pass_name}/{hit.site.rule}", []).append(hit)
    hit_rows = []
    for rule, count in sorted(pipeline.hits.items(), key=lambda kv: (-kv[1], kv[0])):
        found = where.get(rule, [])
        hit_rows.append([rule, count, _Raw(_sites_html(found) if found else "(location not recorded)")])
    hits = (
        _table(["rule", "hits", "where (step: node [op])"], hit_rows, numeric=(1,))
        if hit_rows
        else "<p>No rule fired.</p>"
    )
    return (
        f'<section id="passes"><h2>Passes ({pipeline.rounds} round(s))</h2>{runs}'
        f'<h2 id="rule-hits">Rule hits</h2>{hits}</section>'
    )


def _sites_html(hits: Sequence[PassHit], shown: int = 8) -> str:
    esc = html.escape
    items = [f"<code>{h.step}: {esc(h.site.node or '(unnamed)')} [{esc(h.site.op)}]</code>" for h in hits]
    head = ", ".join(items[:shown])
    if len(items) <= shown:
        return f'<span class="sites">{head}</span>'
    rest = ", ".join(items[shown:])
    return f'<span class="sites">{head}<details><summary>{len(items) - shown} more</summary>{rest}</details></span>'


def _declines(d: ReportInputs) -> str:
    declines = d.report.pipeline.declines
    if not declines:
        return '<section id="declines"><h2>Declined rewrites</h2><p>No rule declined anywhere.</p></section>'
    rows = [[f"{x.pass_name}/{x.rule}", x.node, x.reason] for x in declines]
    return (
        f'<section id="declines"><h2>Declined rewrites ({len(rows)})</h2><details><summary>where a rule looked '
        "and refused, and why</summary>" + _table(["rule", "node", "reason"], rows) + "</details></section>"
    )


def _cost(d: ReportInputs) -> str:
    """Cost before/after (etc.cost), the budget's accepted and declined widenings, the --target cpu choice."""
    report = d.report
    b, a = getattr(report, "cost_before", None), getattr(report, "cost_after", None)
    if b is None or a is None:
        return '<section id="cost"><h2>Cost</h2><p class="note">not counted</p></section>'

    def ms(value) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    rows = [
        [f"MACs @{b.size[0]}x{b.size[1]}", _human(b.macs), _human(a.macs)],
        ["parameters", _human(b.params), _human(a.params)],
        ["bytes moved (INT8)", _human(b.bytes_moved), _human(a.bytes_moved)],
        ["ops", b.ops, a.ops],
        ["NPU estimate", ms(b.npu_ms), ms(a.npu_ms)],
    ]
    if b.cpu_ms is not None or a.cpu_ms is not None:
        rows.append(["CPU measured (onnxruntime, 1 thread)", ms(b.cpu_ms), ms(a.cpu_ms)])
    parts = [_table(["", "before", "after"], rows, numeric=(1, 2))]
    parts.append(
        '<p class="note">NPU estimate: MACs, bytes moved by non-plain ops and a per-op overhead, with constants '
        "fitted to the ETDS paper's Dimensity 8100 figures (etc.cost); it ranks forms, it does not predict "
        "another device.</p>"
    )
    budget = report.budget
    if budget is not None:
        decisions = [
            [
                x["rule"],
                x["node"],
                _Raw(
                    '<span class="ok">accepted</span>'
                    if x["accepted"]
                    else '<span class="fail">declined</span>'
                ),
                x["reason"] or x["what"],
                f"{x['total']:.2f}x",
            ]
            for x in budget["decisions"]
        ]
        growth = budget.get("growth")
        head = (
            f"<p>Budget: {budget['max_growth']:g}x the merged form's MACs (beyond it only a rewrite that pays for itself "
            f"on the NPU cost model); the result is at "
            f"{growth:.2f}x.</p>"
            if growth is not None
            else ""
        )
        parts.append(head + _table(["rule", "node", "decision", "what / why", "cost after"], decisions))
    if getattr(report, "cpu", None) is not None and getattr(report, "target", "") == "htp":
        htp_choice = report.cpu
        rows = [[c.name, str(c.int8 or "-"), str(c.fp32 or "-"), c.note] for c in htp_choice.candidates]
        parts.append(
            f"<p>--target htp chose <b>{html.escape(htp_choice.chosen)}</b> ({html.escape(htp_choice.rule)}).</p>"
            + _table(["form", "HTP INT8 cycles", "HTP FP32 cycles", "note"], rows, numeric=(1, 2))
        )
    elif getattr(report, "cpu", None) is not None:
        cpu = report.cpu
        rows = [
            [c.name, _human(c.macs), f"{c.ms:.2f}", f"{c.ratio:.3f}", f"[{c.low:.3f}, {c.high:.3f}]"]
            for c in cpu.candidates
        ]
        parts.append(
            f"<p>--target cpu chose <b>{html.escape(cpu.chosen)}</b> ({html.escape(cpu.rule)}).</p>"
            + _table(["form", "MACs", "median ms", "ratio to input", "95% interval"], rows, numeric=(2, 3))
        )
    notes = getattr(report, "notes", [])
    if notes:
        parts.append('<ul class="fail">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return '<section id="cost"><h2>Cost</h2>' + "".join(parts) + "</section>"


def _verification(d: ReportInputs) -> str:
    v = d.report.verification
    if v is None:
        return '<section id="verification"><h2>Verification</h2><p class="fail">skipped (--no-verify)</p></section>'
    rows = [
        [
            r["output"],
            r["max_abs"],
            r["max_rel"],
            r["psnr"],
            r["range"],
            _Raw('<span class="ok">ok</span>' if r["ok"] else '<span class="fail">FAIL</span>'),
        ]
        for r in v.rows
    ]
    verdict = '<p class="ok">Equivalent</p>' if v.equivalent else '<p class="fail">NOT equivalent</p>'
    probes = ", ".join(sorted(set(v.probes)))
    return (
        '<section id="verification"><h2>Verification</h2>'
        + verdict
        + _table(["output", "max abs", "max rel", "PSNR dB", "range", "verdict"], rows, numeric=(1, 2, 3, 4))
        + f'<p class="note">onnxruntime, graph optimizations off; tolerance {v.atol:g} + {v.rtol:g}·range; '
        f"{len(v.probes)} inputs ({html.escape(probes)}).</p></section>"
    )


def _latency(d: ReportInputs, size: tuple[int, int]) -> str:
    if not d.latency:
        return '<section id="latency"><h2>Latency</h2><p class="note">not measured</p></section>'
    b, a = d.latency.get("before"), d.latency.get("after")
    rows = [
        [
            "median ms",
            "-" if b is None else f"{b:.2f}",
            "-" if a is None else f"{a:.2f}",
            "-" if not (a and b) else f"{b / a:.2f}×",
        ]
    ]
    return (
        '<section id="latency"><h2>Latency</h2>'
        + _table(["", "before", "after", "speed-up"], rows, numeric=(1, 2, 3))
        + f'<p class="note">onnxruntime CPU, graph optimizations on, 1 thread, input H×W {size[0]}×{size[1]}, '
        "median of 7 runs after one warm-up. A rough figure on this machine, not a benchmark.</p></section>"
    )


def write_report(
    path: str | os.PathLike,
    source: onnx.ModelProto | str | os.PathLike,
    result: onnx.ModelProto,
    report,
    *,
    sites: Sequence[PassHit] = (),
    title: str | None = None,
    measure_latency: bool = True,
) -> Path:
    """Writes the HTML report atomically and returns its path."""
    from etc.api import as_model

    if title is None:
        title = str(source) if not isinstance(source, onnx.ModelProto) else (source.graph.name or "model")
    page = render_report(
        as_model(source), result, report, sites=sites, title=title, measure_latency=measure_latency
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
