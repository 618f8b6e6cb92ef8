"""Reports that agree with themselves: the HTML report states one input size and thread count, its budget
sentence quotes a row of its table, every decision accepted over the budget says why, an empty budget says no
widening was considered, a slower result is flagged, every rule hit lands on a drawn node; `etc info` costs a
QDQ model as the integer model it is; `etc optimize --help` tells the fixed phase order."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import etc
from etc.cli import cli
from etc.tools.report import HitRecorder, ReportInputs, SourceIndex, node_id, render_report
from tests.test_report import conv_bn_relu


def _section(page: str, ident: str) -> str:
    return re.search(rf'<section id="{ident}">.*?</section>', page, flags=re.S).group(0)


def _export(name: str, **sizes) -> onnx.ModelProto:
    from etc import zoo
    from etc.frontends.torch import export

    return export(zoo.build(name, scale=2, seed=1, **sizes), exporter="legacy", dynamic_hw=True)


def test_one_input_size_and_thread_count_stated_once():
    model = conv_bn_relu()
    plain, report = etc.optimize(model, verify=False)
    page = render_report(model, plain, report, measure_latency=False)
    conditions = re.findall(r'<p id="conditions">(.*?)</p>', page, flags=re.S)
    assert len(conditions) == 1 and "1×3×360×640" in conditions[0] and "1 thread" in conditions[0]
    assert "@" not in re.sub(r"<style>.*?</style>", "", page, flags=re.S)  # no other "MACs @HxW"
    assert "64x64" not in page and "64×64" not in page


def test_budget_sentence_quotes_the_last_row_and_over_budget_rows_say_why():
    model = _export("ecbsr", M=2, C=8)
    plain, report = etc.optimize(
        model, verify=False, align_channels=16, max_growth=1.0
    )  # asked beyond the budget
    page = render_report(model, plain, report, measure_latency=False)
    cost = _section(page, "cost")
    quoted = re.search(r"The result is at (\d+\.\d\d)x \(last row\)", cost).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", cost.split('id="budget"')[1])
    cells = [c for c in (re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows) if c]  # not the header
    assert cells[-1][0] == "result" and cells[-1][-1] == f"{quoted}x"
    assert float(quoted) == pytest.approx(report.budget.growth, abs=0.005)
    over = [c for c in cells[:-1] if "accepted" in c[2] and float(c[-1][:-1]) > report.budget.max_growth]
    assert over, "the alignment the option asked for is accepted over the 1.0x budget"
    assert all("accepted because" in c[3] for c in over)


def test_no_widening_considered_is_said_in_the_cost_section():
    model = conv_bn_relu()
    plain, report = etc.optimize(model, passes="fold", verify=False)
    assert report.budget is None
    page = render_report(model, plain, report, measure_latency=False)
    assert "no widening rewrite was considered" in _section(page, "cost")


def test_a_slower_result_is_flagged_and_a_faster_one_is_not():
    from etc.tools.report import _latency

    model = conv_bn_relu()
    plain, report = etc.optimize(model, verify=False)
    slower = ReportInputs("m", model, plain, report, latency={"before": 1.0, "after": 1.25})
    faster = ReportInputs("m", model, plain, report, latency={"before": 1.25, "after": 1.0})
    assert 'id="slower"' in _latency(slower) and "1.25× slower" in _latency(slower)
    assert 'id="slower"' not in _latency(faster)


def test_every_rule_hit_stands_for_a_drawn_node_of_the_input_graph():
    """ETDS's dual-stream and clip rules fire at nodes created by earlier rules; each still lands on a box."""
    model = _export("etds_dual", M=2, C=8)
    recorder = HitRecorder()
    plain, report = etc.optimize(model, instruments=[recorder], verify=False)
    drawn = SourceIndex(model).ids
    created = [h for h in recorder.sites if h.site.node not in {node_id(n) for n in model.graph.node}]
    assert created, "some rules fire at nodes an earlier rule made"
    assert all(h.anchor in drawn for h in recorder.sites), [(h.site.node, h.anchor) for h in recorder.sites]
    page = render_report(model, plain, report, sites=recorder.sites, measure_latency=False)
    ids = set(re.findall(r'<g class="node[^"]*" id="([^"]+)"', page))
    targets = re.findall(r'<a href="#([^"]+)"><code>', _section(page, "passes"))
    assert len(targets) == len(recorder.sites) and set(targets) <= ids


def _quantized(rng) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    from tests.test_quant_equalize import _chain

    model = _chain(rng, c=6)
    images = [rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32) for _ in range(4)]
    int8, _ = etc.quantize(model, images, scale=1, num=4, rounding="nearest", bias_correction=False)
    return model, int8


def test_info_costs_a_qdq_model_as_the_integer_model_it_is(rng, tmp_path):
    from etc.cost import model_cost
    from etc.info import model_info

    fp32, int8 = _quantized(rng)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    a, b = model_info(fp32), model_info(int8)
    assert b.plain_share == a.plain_share == 1.0 and b.ops == a.ops and b.macs == a.macs
    assert b.qdq["QuantizeLinear"] > 0 and b.qdq["DequantizeLinear"] > 0
    assert [v["name"] for v in b.outputs] == [o.name for o in int8.graph.output]
    ca, cb = model_cost(fp32), model_cost(int8)
    assert cb.macs == ca.macs and cb.npu_ms == pytest.approx(ca.npu_ms, rel=1e-6)
    path = tmp_path / "int8.onnx"
    onnx.save(int8, path)
    out = CliRunner().invoke(cli, ["info", str(path)])
    assert out.exit_code == 0, out.output
    assert "plain   100%" in out.output and "QDQ model, counted as the integer model" in out.output


def test_optimize_help_says_passes_run_in_the_fixed_phase_order():
    out = CliRunner().invoke(cli, ["optimize", "--help"])
    text = " ".join(out.output.split())
    assert "fixed phase order" in text and "run in order" not in text
