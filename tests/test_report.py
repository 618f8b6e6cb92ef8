"""The HTML report: rule hit locations, the layered graph layout, and `etc optimize --report` on ETDS.

The page is parsed back: the HTML with the standard library's parser, every inline SVG as XML; the boxes drawn
must be exactly the model's nodes, the rule hits must name nodes of the input graph, and the file must not
reference anything outside itself.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import etc
from etc.graph import op_histogram
from etc.testing import random_conv_weights
from etc.tools.report import HitRecorder, graph_svg, layout, render_report, write_report

SVG_NS = "{http://www.w3.org/2000/svg}"


def conv_bn_relu(channels: int = 3, seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> BN -> Relu -> Conv, plus a skip Add(x) at the end: two fold hits at named nodes."""
    rng = np.random.default_rng(seed)
    c = channels
    w1, b1 = random_conv_weights(rng, c, c, 3, 3)
    w2, b2 = random_conv_weights(rng, c, c, 3, 3)
    inits = {
        "w1": w1,
        "b1": b1,
        "w2": w2,
        "b2": b2,
        "scale": rng.uniform(0.5, 1.5, c),
        "bias": rng.normal(0, 0.1, c),
        "mean": rng.normal(0, 0.1, c),
        "var": rng.uniform(0.5, 1.5, c),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["n1"], name="bn_a"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu_a"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "input"], ["output"], name="skip"),
    ]
    graph = helper.make_graph(
        nodes,
        "cbr",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, "H", "W"])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# ---------------------------------------------------------------- parsing helpers


class Page(HTMLParser):
    """Collects tags, attributes and the ids of sections of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        for key, value in attrs:
            self.attrs.append((tag, key, value or ""))
            if key == "id":
                self.ids.add(value)


def svgs(page: str) -> dict[str, ET.Element]:
    """Every inline SVG parsed as XML, by id (or by position)."""
    found = {}
    for i, block in enumerate(re.findall(r"<svg\b.*?</svg>", page, flags=re.S)):
        root = ET.fromstring(block)
        found[root.get("id") or f"svg{i}"] = root
    return found


def drawn_ops(svg: ET.Element) -> Counter[str]:
    return Counter(
        g.get("data-op")
        for g in svg.iter(f"{SVG_NS}g")
        if "node" in (g.get("class") or "").split() and g.get("data-op")
    )


def drawn_kinds(svg: ET.Element) -> Counter[str]:
    kinds = Counter()
    for g in svg.iter(f"{SVG_NS}g"):
        classes = (g.get("class") or "").split()
        if "node" in classes:
            kinds[classes[1]] += 1
    return kinds


def non_constant_ops(model: onnx.ModelProto) -> Counter[str]:
    """The op histogram without Constant nodes, which the pictures leave out."""
    return Counter({op: n for op, n in op_histogram(model).items() if op != "Constant"})


def assert_self_contained(page: str) -> None:
    parsed = Page()
    parsed.feed(page)
    assert parsed.tags["script"] == 0 and parsed.tags["link"] == 0 and parsed.tags["img"] == 0
    for tag, key, value in parsed.attrs:
        if key in ("src", "href") or (key == "xlink:href"):
            assert value.startswith("#"), f"<{tag} {key}={value}> points outside the file"
    assert "@import" not in page and not re.search(r"url\((?!#)", page), "CSS must not load anything"


# ---------------------------------------------------------------- hit locations


def test_the_tracer_names_the_nodes_rules_fired_at():
    from etc.pipeline import Options, PassContext, get_pass

    model = conv_bn_relu()
    ctx = PassContext(Options())
    result = get_pass("fold").run(model, ctx)
    sites = ctx.tracer.hits
    assert result.modified and sites
    assert sum(result.hits.values()) == len(sites)
    names = {n.name for n in model.graph.node}
    assert any(s.node in names and s.op == "BatchNormalization" for s in sites), sites
    assert {s.rule for s in sites} == set(result.hits)
    # Another run's context collects nothing here (and nothing breaks).
    again = get_pass("fold").run(conv_bn_relu(seed=1), PassContext(Options()))
    assert again.modified and len(sites) == sum(result.hits.values())


def test_hit_recorder_agrees_with_the_pipeline_counts():
    recorder = HitRecorder()
    _, report = etc.optimize(conv_bn_relu(), passes="fold,rep", instruments=[recorder], verify=False)
    counted = Counter(f"{h.pass_name}/{h.site.rule}" for h in recorder.sites)
    assert dict(counted) == report.pipeline.hits
    assert all(h.step >= 1 for h in recorder.sites)


def test_a_raising_pass_leaves_no_recording_state_behind():
    from contextvars import ContextVar

    import etc.pipeline
    import etc.rules
    from etc.pipeline import Pass, get_pass, run_pipeline

    class FoldThenFail(Pass):
        name = "fold_then_fail"

        def run(self, model, ctx):
            get_pass("fold").run(model, ctx)  # rules fire and are traced, then the pass fails
            raise RuntimeError("the pass failed")

    recorder = HitRecorder()
    with pytest.raises(RuntimeError, match="the pass failed"):
        run_pipeline(conv_bn_relu(), [FoldThenFail()], instruments=[recorder])
    assert not recorder.sites
    for module in (etc.rules, etc.pipeline):
        assert not [name for name, value in vars(module).items() if isinstance(value, ContextVar)], module
    # the next run through the same recorder sees its own hits only
    result = run_pipeline(conv_bn_relu(seed=1), "fold", instruments=[recorder])
    assert len(recorder.sites) == sum(result.hits.values()) > 0


# ---------------------------------------------------------------- layout


def test_layout_layers_follow_the_data_and_boxes_do_not_overlap():
    model = conv_bn_relu()
    lay = layout(model)
    boxes = lay.boxes
    real = {k: b for k, b in boxes.items() if b.kind != "dummy"}
    assert Counter(b.label for b in real.values() if b.kind in ("plain", "other")) == Counter(
        op_histogram(model)
    )
    for chain in lay.paths:
        layers = [boxes[k].layer for k in chain]
        assert layers == list(range(layers[0], layers[0] + len(layers))), "one step per layer along an edge"
    # The skip edge input (layer 0) -> Add (layer 5) routes through four invisible points.
    skip = next(c for c in lay.paths if c[0] == "in:input" and boxes[c[-1]].label == "Add")
    assert len(skip) == 6 and all(boxes[k].kind == "dummy" for k in skip[1:-1])
    assert max(b.layer for b in real.values()) == boxes["out:output"].layer
    for layer in lay.layers:
        spans = sorted((boxes[k].x - boxes[k].width / 2, boxes[k].x + boxes[k].width / 2) for k in layer)
        for (_, right), (left, _) in itertools.pairwise(spans):
            assert left >= right + 9.9, f"boxes overlap in a layer: {spans}"
    assert all(b.x - b.width / 2 >= 0 and b.x + b.width / 2 <= lay.width for b in real.values())


def test_graph_svg_is_well_formed_and_flags_marked_nodes():
    model = conv_bn_relu()
    svg = ET.fromstring(graph_svg(model, ident="t", marks={"bn_a": ["fold/bn"]}))
    assert drawn_ops(svg) == Counter(op_histogram(model))
    assert drawn_kinds(svg)["input"] == 1 and drawn_kinds(svg)["output"] == 1
    hit = [g for g in svg.iter(f"{SVG_NS}g") if "hit" in (g.get("class") or "").split()]
    assert [g.get("data-op") for g in hit] == ["BatchNormalization"]
    # input->conv_a->bn_a->relu_a->conv_b->skip->output is six edges; the skip input->skip makes seven.
    assert len([p for p in svg.iter(f"{SVG_NS}path") if p.get("class") == "edge"]) == 7
    # Conv boxes carry kernel and channels.
    texts = [t.text for t in svg.iter(f"{SVG_NS}text")]
    assert "3×3 3→3" in texts


def test_render_report_without_verification_or_latency_says_so():
    model = conv_bn_relu()
    plain, report = etc.optimize(model, passes="fold", verify=False)
    page = render_report(model, plain, report, measure_latency=False)
    assert "skipped (--no-verify)" in page and "not measured" in page
    assert_self_contained(page)


# ---------------------------------------------------------------- ETDS, end to end through the CLI


@pytest.fixture(scope="module")
def etds_path(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from etc import zoo
    from etc.frontends.onnx_io import save
    from etc.frontends.torch import export

    torch.manual_seed(0)
    module = zoo.build("etds_dual", scale=4, M=2, C=8).eval()
    model = export(module, torch.rand(1, 3, 32, 32), exporter="legacy")
    return save(model, tmp_path_factory.mktemp("etds") / "etds_dual.onnx")


def test_cli_report_shows_etds_training_graph_and_plain_form_side_by_side(etds_path, tmp_path):
    page_path, plain_path = tmp_path / "report.html", tmp_path / "plain.onnx"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "etc.cli", "optimize", str(etds_path), "-o", str(plain_path)),
            *("--passes", "fold,rep,et", "--report", str(page_path), "--json"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["report"] == str(page_path)
    page = page_path.read_text(encoding="utf-8")
    assert_self_contained(page)

    parsed = Page()
    parsed.feed(page)
    for section in ("summary", "graphs", "histogram", "passes", "rule-hits", "verification", "latency"):
        assert section in parsed.ids, section
    pictures = svgs(page)
    before_model, after_model = onnx.load(etds_path), onnx.load(plain_path)
    before, after = pictures["graph-before"], pictures["graph-after"]
    assert drawn_ops(before) == non_constant_ops(before_model)
    assert drawn_ops(after) == non_constant_ops(after_model)
    assert drawn_ops(before) != drawn_ops(after)
    # Side by side: both pictures sit in the same two-column container, before first.
    pair = re.search(r'<div class="pair">(.*?)</div>', page, flags=re.S).group(1)
    assert pair.index('id="graph-before"') < pair.index('id="graph-after"')

    # Rule hits with locations: every rule that fired is listed with node names, and marked nodes exist.
    for rule in payload["rule_hits"]:
        assert rule in page
    assert "(location not recorded)" not in page
    marked = [g for g in before.iter(f"{SVG_NS}g") if "hit" in (g.get("class") or "").split()]
    assert marked, "rules fired at nodes of the input graph; they should be flagged"
    names = {n.name for n in before_model.graph.node}
    titles = [g.find(f"{SVG_NS}title").text.split(":")[0] for g in marked]
    assert set(titles) <= names

    # Histogram bars for every op of either model.
    hist = pictures["op-histogram"]
    bars = {g.get("data-op") for g in hist.iter(f"{SVG_NS}g") if g.get("class") == "bar"}
    assert bars == set(op_histogram(before_model)) | set(op_histogram(after_model))

    # The verification table shows the same worst error as the JSON, and the verdict.
    rows = payload["verification"]["outputs"]
    assert payload["verification"]["equivalent"] and "Equivalent" in page
    assert f"{rows[0]['max_abs']:.3g}" in page
    latency = re.search(r'<section id="latency">.*?</section>', page, flags=re.S).group(0)
    assert re.search(r"<td class=\"num\">\d+\.\d\d</td><td class=\"num\">\d+\.\d\d</td>", latency), latency


def test_write_report_from_the_python_api(etds_path, tmp_path):
    recorder = HitRecorder()
    plain, report = etc.optimize(etds_path, passes="fold,rep,et", instruments=[recorder])
    path = write_report(
        tmp_path / "r.html", etds_path, plain, report, sites=recorder.sites, measure_latency=False
    )
    page = path.read_text(encoding="utf-8")
    assert "etds_dual.onnx" in page
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is renamed into place"
    for hit in recorder.sites:
        assert hit.site.node in page


def test_public_api_names_stay_functions_after_their_namesake_submodules_load():
    import importlib

    importlib.import_module("etc.verification")
    importlib.import_module("etc.tools.report")
    model = conv_bn_relu()
    plain, report = etc.optimize(model, passes="fold", verify=False)
    assert callable(etc.verify) and etc.verify(model, plain).equivalent
    assert isinstance(report, etc.OptimizeReport)
    assert etc.write_report is write_report and etc.HitRecorder is HitRecorder
