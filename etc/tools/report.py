"""A self-contained HTML report of one optimization: what the graph looked like, what changed, and the proof.

Sections: summary (nodes, params, MACs, plain share, and the one input size and thread count every figure is
for), the graph before and after side by side (stacked on narrow screens; SVG drawn here, no graphviz needed;
zoom buttons and a node index that links to each box), op histograms, passes with their rule hits linked to the
drawn node each fired at (or its nearest drawn ancestor, for nodes an earlier pass created), declined rewrites,
cost and budget decisions, the verification table and latency (onnxruntime CPU, graph optimizations on).

The graph picture is a layered drawing of the op graph (:mod:`etc.tools.layout`). The file holds no script and no external reference, so it can be mailed or archived as is: zooming is
radio buttons and CSS, a rule hit is a link to a box that CSS highlights (``:target``).

    recorder = HitRecorder()
    plain, report = etc.optimize("model.onnx", instruments=[recorder])
    write_report("report.html", "model.onnx", plain, report, sites=recorder.sites)
"""

from __future__ import annotations

import html
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from etc import proto
from etc.pipeline import HitSite, Instrument, PassContext, PassResult
from etc.tools.layout import BOX_H, LAYER_GAP, MARGIN, Box, Layout, layout, node_detail, node_id

MAX_DRAWN_NODES = 1500
LATENCY_THREADS = 1
ZOOMS = (1, 2)  # zoom levels offered besides "fit", as multiples of the drawing's natural size


# ---------------------------------------------------------------- rule hit locations


@dataclass(frozen=True)
class PassHit:
    """A rule application attributed to the pipeline step (1-based) and pass that made it."""

    step: int
    pass_name: str
    site: HitSite
    anchor: str = ""  # the input graph's node standing for site.node (itself, or its nearest ancestor there)


class HitRecorder(Instrument):
    """Records where every rule fired during a pipeline run (pass, rule, node name, op type), read from the
    run's tracer (PassContext.tracer).

    Only applications inside passes that changed the model are kept, so ``sites`` matches the hit counts.
    """

    def __init__(self) -> None:
        self.sites: list[PassHit] = []
        self._ctx: PassContext | None = None
        self._start = 0
        self._source: SourceIndex | None = None
        self._input: onnx.ModelProto | None = None

    def before_pipeline(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        self.sites = []
        self._ctx = ctx
        self._source = SourceIndex(model)

    def before_pass(self, pass_name: str, model: onnx.ModelProto) -> None:
        self._start = len(self._ctx.tracer.hits) if self._ctx is not None else 0
        self._input = model

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None:
        if not result.modified or self._ctx is None:
            return
        seen = [m for m in (self._input, result.model) if m is not None]
        new = self._ctx.tracer.hits[self._start :]
        for site in new:
            anchor = self._source.nearest(site, seen, new) if self._source is not None else ""
            self.sites.append(PassHit(step, pass_name, site, anchor))


class SourceIndex:
    """The drawn boxes of the input graph, to find the one a hit stands for: the node itself when the input graph
    draws it, else its nearest ancestor there (a node or a graph input), walking up the inputs through the models
    a pass saw (a node an earlier pass created reads tensors that lead back to the input graph); a node with no
    drawn ancestor (a Constant, which is not drawn) stands for its nearest drawn reader."""

    def __init__(self, model: onnx.ModelProto) -> None:
        inits = {i.name for i in model.graph.initializer}
        self.inputs = [v.name for v in model.graph.input if v.name not in inits]
        self.ids = {node_id(n) for n in model.graph.node if n.op_type != "Constant"} | set(self.inputs)
        self.model = model

    def nearest(self, site: HitSite, models: Sequence[onnx.ModelProto], hits: Sequence[HitSite] = ()) -> str:
        """The id of the input graph's box nearest above the hit's node (breadth first), else the nearest below,
        else "" (node ids as :func:`node_id` gives them, graph inputs by name). A node the pass created and
        replaced again is in none of ``models``: the tensors ``hits`` of the same pass recorded stand for it."""
        name = site.node
        if name in self.ids:
            return name
        nodes: dict[str, onnx.NodeProto] = {
            h.node: onnx.helper.make_node(h.op, list(h.inputs), list(h.outputs), name=h.node)
            for h in (*hits, site)
        }
        for model in (*reversed(models), self.model):  # the input graph, then the pass's input, win
            nodes.update((node_id(n), n) for n in model.graph.node)
        producers: dict[str, list[str]] = {t: [t] for t in self.inputs}
        readers: dict[str, list[str]] = {}
        for key, node in nodes.items():
            for tensor in node.output:
                producers.setdefault(tensor, []).append(key)
            for tensor in node.input:
                readers.setdefault(tensor, []).append(key)
        up = self._walk(name, lambda n: n.input, producers, nodes)
        return up or self._walk(name, lambda n: n.output, readers, nodes)

    def _walk(self, name: str, tensors, neighbours: Mapping[str, list[str]], nodes, limit: int = 2000) -> str:
        """Breadth first from ``name`` along ``tensors`` of each node to ``neighbours``: the first drawn id."""
        queue, seen = [name], {name}
        while queue and len(seen) < limit:
            node = nodes.get(queue.pop(0))
            for tensor in tensors(node) if node is not None else ():
                for key in neighbours.get(tensor, ()):
                    if key in self.ids:
                        return key
                    if key not in seen:
                        seen.add(key)
                        queue.append(key)
        return ""


# ---------------------------------------------------------------- graph layout


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
            rules = marks.get(box.node_name, ()) if box.node_name else ()
            parts.append(_box_svg(box, rules, box_anchor(ident, box.key)))
    parts.append("</svg>")
    return "\n".join(parts)


def box_anchor(ident: str, key: str) -> str:
    """The HTML id of a drawn node or input box: the graph's id and the box key (``n:5`` -> ``graph-before-n5``,
    ``in:x`` -> ``graph-before-in-x``); "" for outputs and routing points."""
    if key.startswith("n:"):
        return f"{ident}-n{key[2:]}"
    if key.startswith("in:"):
        return f"{ident}-in-" + re.sub(r"[^A-Za-z0-9_-]", "_", key[3:])
    return ""


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


def _box_svg(box: Box, rules: Sequence[str], anchor: str = "") -> str:
    esc = html.escape
    x, y = box.x - box.width / 2, _y(box.layer) - BOX_H / 2
    radius = BOX_H / 2 if box.kind in ("input", "output") else 5
    cls = f"node {box.kind}" + (" hit" if rules else "")
    ident = f' id="{esc(anchor)}"' if anchor else ""
    out = [
        f'<g class="{cls}"{ident} data-op="{esc(box.label) if box.kind in ("plain", "other") else ""}">',
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
    model: onnx.ModelProto, size: tuple[int, int], runs: int = 7, threads: int = LATENCY_THREADS
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


def input_shape_text(model: onnx.ModelProto, size: tuple[int, int]) -> str:
    """The shape of the input the figures are for, as ``1×3×360×640`` (H×W text when it cannot be built)."""
    from etc import runtime

    try:
        feeds = runtime.make_inputs(runtime.input_specs(model), size=size)
        return ", ".join("×".join(str(d) for d in v.shape) for v in feeds.values())
    except Exception:
        return f"H×W {size[0]}×{size[1]}"


# ---------------------------------------------------------------- the page

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1600px;overflow-wrap:anywhere}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0;max-width:100%}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top;overflow-wrap:anywhere}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px}.pair figure{margin:0;
border:1px solid #ddd;padding:8px;overflow:auto;max-height:90vh;min-width:0}figcaption{font-weight:600;
margin-bottom:6px}.zoom{font-size:12px;margin-right:10px}.zoom+label{font-size:12px;margin-right:8px}
svg.graph{display:block;max-width:100%;height:auto}svg.histogram{max-width:100%;height:auto}
svg text{font-family:system-ui,sans-serif;text-anchor:middle}
svg text.op{font-size:12px;font-weight:600}svg text.detail{font-size:10px;fill:#444}
svg text.badge{font-size:10px;fill:#fff;font-weight:700}svg text.oplabel{font-size:12px;text-anchor:end}
svg text.count,svg text.legend{font-size:11px;text-anchor:start}.ok{color:#2d7a1f;font-weight:600}
.fail{color:#b3261e;font-weight:600}.note{color:#555}code{font-size:12px}.sites{font-size:12px}
g.node:target rect{stroke:#3867d6;stroke-width:5}details.find ul{columns:16em;font-size:12px;padding-left:18px}
a{color:#1f4fb8}
@media (max-width:900px){body{margin:8px}.pair{grid-template-columns:minmax(0,1fr)}
td,th{padding:2px 4px}}
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
    """Everything the page shows, gathered once. ``size`` is the one input H×W of every figure (the report's
    model facts, costs and latency), ``threads`` the one onnxruntime thread count of every timing."""

    title: str
    before: onnx.ModelProto
    after: onnx.ModelProto
    report: object  # etc.api.OptimizeReport
    sites: list[PassHit] = field(default_factory=list)
    latency: dict[str, float | None] = field(default_factory=dict)
    size: tuple[int, int] = (360, 640)
    threads: int = LATENCY_THREADS
    htp: dict | None = None  # etc.commands.common.htp_before_after's payload (optimize --device htp)


def render_report(
    source: onnx.ModelProto,
    result: onnx.ModelProto,
    report,
    *,
    sites: Sequence[PassHit] = (),
    title: str = "model",
    measure_latency: bool = True,
    htp: dict | None = None,
) -> str:
    """The HTML page for an optimization (``report`` is the OptimizeReport from ``etc.optimize``). Latency is
    measured at the size of the report's model facts and costs, so every figure is for one input; ``htp`` (HTP
    cycles of both models, measured at their own size) adds a row to the cost table."""
    size = tuple(report.before.size)
    latency = {}
    if measure_latency:
        latency = {"before": latency_ms(source, size), "after": latency_ms(result, size)}
    data = ReportInputs(title, source, result, report, list(sites), latency, size, htp=htp)  # type: ignore[arg-type]
    sections = [
        _summary(data),
        _graphs(data),
        _histograms(data),
        _passes(data),
        _declines(data),
        _cost(data),
        _verification(data),
        _latency(data),
    ]
    esc = html.escape
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ETC report: {esc(title)}</title><style>{_CSS}{_zoom_css(data)}</style></head><body>\n"
        f"<h1>ETC report: {esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _summary(d: ReportInputs) -> str:
    b, a = d.report.before, d.report.after
    rows = [
        ["nodes", b.nodes, a.nodes],
        ["parameters", _human(b.params), _human(a.params)],
        ["MACs", _human(b.macs), _human(a.macs)],
        ["plain share (Conv/Relu/DepthToSpace)", f"{b.plain_share:.0%}", f"{a.plain_share:.0%}"],
        ["opset", b.opset, a.opset],
    ]
    remaining = d.report.remaining
    tail = (
        "<p>Not plain yet:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in remaining) + "</ul>"
        if remaining
        else '<p class="ok">Only Conv, Relu and DepthToSpace remain.</p>'
    )
    conditions = (
        f'<p id="conditions">Every figure in this report is for one input of '
        f"<b>{html.escape(input_shape_text(d.before, d.size))}</b> (MACs, bytes, the NPU estimate, latency); "
        f"every timing is onnxruntime on this CPU with <b>{d.threads} thread{'s' if d.threads > 1 else ''}"
        "</b>. Budget figures are MAC ratios, the same at any input size.</p>"
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        + conditions
        + _table(["", "before", "after"], rows)
        + tail
        + "</section>"
    )


def _graph_ids(model: onnx.ModelProto, ident: str) -> dict[str, str]:
    """{node id (node_id) or graph input name: HTML id of its box} for the boxes of ``model``."""
    inits = {i.name for i in model.graph.initializer}
    ids = {v.name: box_anchor(ident, f"in:{v.name}") for v in model.graph.input if v.name not in inits}
    ids.update(
        (node_id(n), box_anchor(ident, f"n:{i}"))
        for i, n in enumerate(model.graph.node)
        if n.op_type != "Constant"
    )
    return ids


def _graphs(d: ReportInputs) -> str:
    marks: dict[str, list[str]] = {}
    for hit in d.sites:
        rules = marks.setdefault(hit.anchor or hit.site.node, [])
        name = f"{hit.pass_name}/{hit.site.rule}"
        if name not in rules:
            rules.append(name)
    legend = (
        '<p class="note">Green: Conv, Relu, DepthToSpace; orange: everything else. A blue badge marks a node '
        "of the input graph where rules fired, or the nearest one above a node an earlier pass created (hover "
        "for rule and node names; a rule hit below links to its box). Zoom with fit / 100% / 200%; find a node "
        "by name or op in the index under each graph (the browser's find searches it).</p>"
    )
    figures = [
        _figure("before", "graph-before", d.before, d.report.before.nodes, marks),
        _figure("after", "graph-after", d.after, d.report.after.nodes, {}),
    ]
    return (
        '<section id="graphs"><h2>Graph</h2>'
        + legend
        + '<div class="pair">'
        + "".join(figures)
        + "</div></section>"
    )


def _figure(label: str, ident: str, model: onnx.ModelProto, nodes: int, marks) -> str:
    """One graph with its zoom buttons (radio inputs styled by _zoom_css) and its node index."""
    esc = html.escape
    radios = []
    for zoom in ("fit", *ZOOMS):
        rid = f"{ident}-zoom-{zoom}"
        checked = " checked" if zoom == "fit" else ""
        text = "fit" if zoom == "fit" else f"{zoom * 100}%"
        radios.append(
            f'<input type="radio" class="zoom" name="{ident}-zoom" id="{rid}"{checked}>'
            f'<label for="{rid}">{text}</label>'
        )
    ids = _graph_ids(model, ident)
    consts = proto.constants(model)
    items = [
        f'<li><a href="#{esc(ids[node_id(n)])}">{esc(node_id(n) or "(unnamed)")}</a> {esc(n.op_type)} '
        f"{esc(node_detail(n, consts))}</li>"
        for n in sorted(
            (n for n in model.graph.node if n.op_type != "Constant"), key=lambda n: (n.op_type, node_id(n))
        )
        if node_id(n) in ids
    ]
    index = f'<details class="find"><summary>find a node ({len(items)})</summary><ul>{"".join(items)}</ul></details>'
    return (
        f"<figure><figcaption>{label} ({nodes} nodes)</figcaption>{''.join(radios)}"
        f"{graph_svg(model, ident=ident, marks=marks)}{index}</figure>"
    )


def _zoom_css(d: ReportInputs) -> str:
    """Per graph, the drawing at 1x and 2x its natural size when that zoom button is checked (else it fits)."""
    rules = []
    for ident, model in (("graph-before", d.before), ("graph-after", d.after)):
        if sum(1 for n in model.graph.node if n.op_type != "Constant") > MAX_DRAWN_NODES:
            continue
        lay = layout(model)
        for zoom in ZOOMS:
            rules.append(
                f"#{ident}-zoom-{zoom}:checked~#{ident}{{max-width:none;width:{lay.width * zoom:.0f}px;"
                f"height:{lay.height * zoom:.0f}px}}"
            )
    return "\n".join(rules)


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
    boxes = _graph_ids(d.before, "graph-before")
    hit_rows = []
    for rule, count in sorted(pipeline.hits.items(), key=lambda kv: (-kv[1], kv[0])):
        found = where.get(rule, [])
        hit_rows.append(
            [rule, count, _Raw(_sites_html(found, boxes) if found else "(location not recorded)")]
        )
    hits = (
        _table(["rule", "hits", "where (step: node [op]), linked to the drawn node"], hit_rows, numeric=(1,))
        if hit_rows
        else "<p>No rule fired.</p>"
    )
    return (
        f'<section id="passes"><h2>Passes ({pipeline.rounds} round(s))</h2>{runs}'
        f'<h2 id="rule-hits">Rule hits</h2>{hits}</section>'
    )


def _site_html(hit: PassHit, boxes: Mapping[str, str]) -> str:
    """One hit as a link to its drawn box: the node itself, or (marked "above") the nearest drawn ancestor."""
    esc = html.escape
    text = f"{hit.step}: {esc(hit.site.node or '(unnamed)')} [{esc(hit.site.op)}]"
    target = boxes.get(hit.anchor or hit.site.node)
    if target is None:
        return f"<code>{text}</code>"
    above = "" if hit.anchor in ("", hit.site.node) else f" (drawn above it: {esc(hit.anchor)})"
    return f'<a href="#{esc(target)}"><code>{text}</code></a>{above}'


def _sites_html(hits: Sequence[PassHit], boxes: Mapping[str, str], shown: int = 8) -> str:
    items = [_site_html(h, boxes) for h in hits]
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
        ["MACs", _human(b.macs), _human(a.macs)],
        ["parameters", _human(b.params), _human(a.params)],
        ["bytes moved (INT8)", _human(b.bytes_moved), _human(a.bytes_moved)],
        ["ops", b.ops, a.ops],
        ["NPU estimate", ms(b.npu_ms), ms(a.npu_ms)],
        ["HTP INT8 cycles (estimate, etc.cost)", _human(b.htp_cycles), _human(a.htp_cycles)],
    ]
    if b.cpu_ms is not None or a.cpu_ms is not None:
        rows.append(["CPU measured (onnxruntime, --target cpu)", ms(b.cpu_ms), ms(a.cpu_ms)])
    if d.htp is not None:
        rows.append(_htp_row(d.htp))
    parts = [_table(["", "before", "after"], rows, numeric=(1, 2))]
    parts.append(
        '<p class="note">NPU estimate: MACs, bytes moved by non-plain ops and a per-op overhead, with constants '
        "fitted to the ETDS paper's Dimensity 8100 figures (etc.cost); it ranks forms, it does not predict "
        "another device.</p>"
    )
    parts.append(_budget_html(report.budget))
    if getattr(report, "cpu", None) is not None and getattr(report, "target", "") in ("htp", "htp-estimate"):
        htp_choice = report.cpu
        rows = [[c.name, str(c.int8 or "-"), str(c.fp32 or "-"), c.note] for c in htp_choice.candidates]
        parts.append(
            f"<p>--target {html.escape(report.target)} chose <b>{html.escape(htp_choice.chosen)}</b> "
            f"({html.escape(htp_choice.rule)}).</p>"
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


def _htp_row(htp: dict) -> list[str]:
    """The cost table's row of HTP cycles (simulator, per-node floor), or QNN's reason for a refused model."""
    h, w = htp["size"]
    refused = htp.get("refused", {})

    def cell(key: str) -> str:
        return f"refused: {refused[key]}" if key in refused else _human(htp.get(key))

    return [f"HTP cycles at {h}x{w} (simulator, --device htp)", cell("before"), cell("after")]


def _budget_html(budget) -> str:
    """The widening budget (etc.cost.BudgetReport): its limit, one row per decision with its reason (accepted
    over the budget says why too), and a last row for the result, whose ratio the sentence above quotes."""
    if budget is None or not budget.decisions:
        return '<p id="budget">Budget: no widening rewrite was considered.</p>'
    rows = [
        [
            x.rule,
            x.node,
            _Raw('<span class="ok">accepted</span>' if x.accepted else '<span class="fail">declined</span>'),
            x.reason or f"{x.what} (within the budget)",
            f"{x.total:.2f}x",
        ]
        for x in budget.decisions
    ]
    head = (
        f'<p id="budget">Budget: widening rewrites may take the model to {budget.max_growth:g}x the merged '
        "form's MACs; beyond it only a rewrite that pays for itself on the NPU cost model, or one an option asked "
        "for, each saying why."
    )
    if budget.growth is not None:
        rows.append(
            [
                "result",
                "(after every pass)",
                "",
                "the model as written, rewrites that declare no cost included",
                f"{budget.growth:.2f}x",
            ]
        )
        head += f" The result is at {budget.growth:.2f}x (last row)."
    return head + "</p>" + _table(["rule", "node", "decision", "what / why", "MACs after / merged"], rows)


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


def _latency(d: ReportInputs) -> str:
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
    warning = ""
    if a and b and b / a < 1:
        warning = (
            f'<p class="fail" id="slower">The result ran {a / b:.2f}× slower than the input here. The plain form '
            "is made for NPUs (see the NPU estimate); on this CPU `--target cpu` keeps the fastest form, never "
            "one slower than the input.</p>"
        )
    return (
        '<section id="latency"><h2>Latency</h2>'
        + _table(["", "before", "after", "speed-up"], rows, numeric=(1, 2, 3))
        + warning
        + '<p class="note">At the input and thread count stated in the summary; onnxruntime CPU, graph '
        "optimizations on, median of 7 runs after one warm-up. A rough figure on this machine, not a "
        "benchmark.</p></section>"
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
    htp: dict | None = None,
) -> Path:
    """Writes the HTML report atomically and returns its path."""
    from etc.api import as_model

    if title is None:
        title = str(source) if not isinstance(source, onnx.ModelProto) else (source.graph.name or "model")
    page = render_report(
        as_model(source), result, report, sites=sites, title=title, measure_latency=measure_latency, htp=htp
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
