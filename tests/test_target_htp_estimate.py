"""``--target htp-estimate``: the candidate forms judged by etc.cost's HTP INT8 cycle estimate, nothing run."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

import etc
from etc import zoo
from etc.cli import cli as main
from etc.cost import model_cost
from etc.frontends.torch import export
from etc.testing import assert_equivalent


@pytest.fixture(scope="module")
def anchored_ecbsr():
    """ECBSR as trained (re-parameterizable blocks, PReLU, the input repeated to 48 channels and added)."""
    return export(zoo.build("ecbsr_train", scale=4, seed=2), exporter="legacy", dynamic_hw=True)


def test_an_anchor_carry_htp_prices_above_its_add_is_not_taken(anchored_ecbsr):
    """ECBSR's image carry adds input channels to every body conv, which HTP charges more than the Add it
    removes: the estimate keeps the Add, and the form it returns is equivalent and estimated no dearer than
    the plain one or the merged one."""
    plain, _ = etc.optimize(anchored_ecbsr, verify=False)
    chosen, report = etc.optimize(anchored_ecbsr, target="htp-estimate")
    assert report.cpu.chosen in ("plain-kept", "merged") and report.verification.equivalent
    assert "Add" in {n.op_type for n in chosen.graph.node}
    estimates = {c.name: c.int8 for c in report.cpu.candidates}
    assert estimates[report.cpu.chosen] <= min(estimates["plain"], estimates["merged"])
    assert model_cost(chosen, (64, 64)).htp_cycles < model_cost(plain, (64, 64)).htp_cycles
    assert_equivalent(anchored_ecbsr, chosen)


def test_a_dual_stream_net_stays_plain_and_the_cli_names_the_choice(tmp_path):
    """ETDS's dual stream merged into one 32-wide body fills HTP's slices better than two streams: plain."""
    model = export(zoo.build("etds_dual", scale=2, seed=1, M=2, C=32), exporter="legacy", dynamic_hw=True)
    path, out = tmp_path / "etds.onnx", tmp_path / "plain.onnx"
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(
        main, ["optimize", str(path), "-o", str(out), "--target", "htp-estimate", "--json"]
    )
    assert result.exit_code == 0, result.output
    cost = json.loads(result.output)["cost"]
    assert cost["target"] == "htp-estimate" and cost["cpu"]["chosen"] == "plain"
    assert cost["after"]["htp_cycles"] < cost["before"]["htp_cycles"]
    text = (
        CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--target", "htp-estimate"]).output
    )
    assert "--target htp-estimate chose 'plain'" in text
    assert {n.op_type for n in onnx.load(out).graph.node} <= {"Conv", "Relu", "DepthToSpace"}
