"""The cost model and the budget every widening rewrite answers to (etc.cost), on nets shaped like RepGhost,
PLKSR, EDSR and Real-ESRGAN's compact net (etc/zoo/published/cost.py): each decision accepted or declined with its
reason and figure, the result always equivalent, and the limits that warn instead of stopping quietly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from etc.cli import cli as main
from etc.cost import model_cost
from etc.frontends.torch import export
from etc.graph import make_node, retire
from etc.info import count_macs
from etc.pipeline import LimitWarning, NumericCheck, Options, Pass, PassResult, run_pipeline
from etc.rules import Match, Rule, RuleSet
from etc.target import Measured, decide
from etc.testing import GraphBuilder, run_family
from etc.zoo.published.cost import MODELS

PLAIN = {"Conv", "Relu", "DepthToSpace"}


@pytest.fixture(scope="module")
def nets() -> dict[str, onnx.ModelProto]:
    return {name: export(cls(), exporter="legacy", dynamic_hw=True) for name, cls in MODELS.items()}


def optimize(model: onnx.ModelProto, **options):
    return run_pipeline(model, "fold,rep,et", options=Options(**options), instruments=[NumericCheck()])


def mac_ratio(model: onnx.ModelProto, reference: onnx.ModelProto) -> float:
    return count_macs(model, (64, 64)) / count_macs(reference, (64, 64))


def grouped_convs(model: onnx.ModelProto) -> int:
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )


def decisions(result, rule: str | None = None) -> list[dict]:
    return [d for d in result.budget.as_dict()["decisions"] if rule is None or d["rule"] == rule]


def test_model_cost_counts_macs_bytes_and_the_npu_estimate():
    b = GraphBuilder(3, hw=(17, 23))
    y = b.op("Relu", [b.conv("input", 3, 8)])
    plain = b.model(b.conv(y, 8, 3))
    b2 = GraphBuilder(3, hw=(17, 23))
    y2 = b2.op("Relu", [b2.conv("input", 3, 8)])
    with_add = b2.model(b2.op("Add", [b2.conv(y2, 8, 3), "input"]))
    cost, cost_add = model_cost(plain, (17, 23)), model_cost(with_add, (17, 23))
    assert cost.macs == 17 * 23 * (8 * 3 * 9 + 3 * 8 * 9) == cost_add.macs
    assert cost.params == 8 * 3 * 9 + 8 + 3 * 8 * 9 + 3
    assert cost_add.bytes_moved > cost.bytes_moved  # the Add reads two tensors and writes one
    assert cost_add.npu_ms > cost.npu_ms > 0  # the Add leaves the MAC array


def test_htp_estimate_counts_padded_output_channels_and_float_ops():
    """HTP's INT8 estimate (etc.cost.htp_int8_cycles): a conv costs by its output channels rounded up to 32 (16
    and 32 outputs cost the same, 33 two slices), a PReLU by its elements through float, and the QDQ model is
    costed as the integer model it stands for."""
    from etc.cost import HTP_CYCLES
    from etc.quant import quantize

    def net(cout: int, act: str = "Relu"):
        b = GraphBuilder(8, hw=(16, 16))
        x = b.conv("input", 8, cout)
        if act == "PRelu":
            return b.model(b.op("PRelu", [x, b.float_const(np.full((cout, 1, 1), 0.25))]))
        return b.model(b.op(act, [x]))

    pixels = 16 * 16
    cycles = {c: model_cost(net(c), (16, 16)).htp_cycles for c in (16, 32, 33)}
    conv = {c: cycles[c] - HTP_CYCLES["io"] * pixels * (8 + c) for c in cycles}  # without input and output
    assert (
        conv[16] == pytest.approx(conv[32]) == pytest.approx(HTP_CYCLES["padded_macs"] * pixels * 9 * 8 * 32)
    )
    assert conv[33] == pytest.approx(2 * conv[32])
    extra = model_cost(net(32, "PRelu"), (16, 16)).htp_cycles - cycles[32]
    unfused = (HTP_CYCLES["unfused_macs"] / HTP_CYCLES["padded_macs"] - 1) * conv[32]
    assert extra == pytest.approx(HTP_CYCLES["float_op"] * pixels * 32 + unfused)
    calib = [np.random.default_rng(i).random((1, 8, 16, 16), dtype=np.float32) for i in range(2)]
    fast = {"rounding": "nearest", "equalize": False, "bias_correction": False, "floor": False}
    qdq, _ = quantize(net(32), calib, **fast)
    assert model_cost(qdq, (16, 16)).htp_cycles == pytest.approx(cycles[32])
    kept, _ = quantize(net(32, "PRelu"), calib, **fast)  # a float slope: HTP runs the PReLU in float
    assert model_cost(kept, (16, 16)).htp_cycles == pytest.approx(cycles[32] + extra)
    snapped, _ = quantize(net(32, "PRelu"), calib, target="htp", **fast)  # a uint8 per-tensor slope: fused
    assert model_cost(snapped, (16, 16)).htp_cycles == pytest.approx(cycles[32])


def test_depthwise_residual_is_not_densified_unless_asked(nets):
    model = nets["ghost_bottleneck"]
    merged = run_pipeline(model, "fold,rep").model
    result = optimize(model)
    declined = [d for d in decisions(result, "add_to_conv") if not d["accepted"]]
    assert declined and all("dense" in d["reason"] and "--allow-dense" in d["reason"] for d in declined)
    assert grouped_convs(result.model) == grouped_convs(merged) > 0
    assert mac_ratio(result.model, merged) <= 1.25
    assert any("--allow-dense" in d.reason for d in result.declines)

    dense = optimize(model, allow_dense=True, max_growth=100.0)
    assert all(d["accepted"] for d in decisions(dense))
    assert set(op.op_type for op in dense.model.graph.node) <= PLAIN
    assert mac_ratio(dense.model, merged) > 5  # what the budget saved


def test_partial_large_kernel_is_not_merged_into_one_dense_large_conv(nets):
    model = nets["partial_large_kernel"]
    merged = run_pipeline(model, "fold,rep").model
    result = optimize(model)
    declined = [d for d in decisions(result) if not d["accepted"]]
    assert declined
    for d in declined:
        assert (
            "would add" in d["reason"] and "x MACs" in d["reason"] and "over the 1.25x budget" in d["reason"]
        )
    assert mac_ratio(result.model, merged) <= 1.25
    wide = optimize(model, max_growth=200.0)  # the budget alone keeps it from a dense, fully plain form
    assert set(op.op_type for op in wide.model.graph.node) <= PLAIN
    assert mac_ratio(wide.model, merged) > 5


def test_signed_residuals_are_not_carried_as_relu_pairs_beyond_the_budget(nets):
    model = nets["res_blocks"]
    result = optimize(model)
    signed = decisions(result, "add_to_conv")
    assert any(not d["accepted"] and "relu(s), relu(-s)" in d["reason"] for d in signed)
    assert result.budget.as_dict()["growth"] <= 1.25 and not result.notes
    everything = optimize(model, max_growth=10.0)
    assert set(op.op_type for op in everything.model.graph.node) <= PLAIN


def test_compact_net_carries_its_image_skip_within_the_budget(nets):
    model = nets["compact"]
    merged = run_pipeline(model, "fold,rep").model
    result = optimize(model)
    accepted = decisions(result, "add_to_conv")
    assert accepted and all(d["accepted"] for d in accepted)
    assert "carrying it (3 channels) through 17 conv(s)" in accepted[0]["what"]
    assert set(op.op_type for op in result.model.graph.node) <= PLAIN
    assert mac_ratio(result.model, merged) <= 1.25
    tight = optimize(model, max_growth=1.0)
    assert "Add" in {n.op_type for n in tight.model.graph.node}
    assert any("over the 1x budget" in d.reason for d in tight.declines)


def test_an_option_that_overruns_the_budget_is_accepted_with_a_warning():
    b = GraphBuilder(3)
    y = b.op("Relu", [b.conv("input", 3, 5)])
    model = b.model(b.conv(b.op("Relu", [b.conv(y, 5, 5)]), 5, 3))
    with pytest.warns(LimitWarning, match="accepted because an option asked for it"):
        result = run_pipeline(model, "et", options=Options(align_channels=16, max_growth=1.0))
    assert [d["accepted"] for d in decisions(result, "align_channels")] == [True, True]
    assert any(n.startswith("align_channels took the result over the 1x MAC budget") for n in result.notes)


def test_rules_outside_a_pipeline_have_no_budget():
    b = GraphBuilder(3)
    y = b.op("Relu", [b.conv("input", 3, 4)])
    model = b.model(b.op("Add", [b.conv(y, 4, 3), "input"]))
    from etc.passes.et_add import rules

    _, hits, _ = run_family(model, rules)
    assert hits == {"add_to_conv": 1}


class _Flip(Pass):
    """Changes the model every time (a bias grows), so rounds never settle."""

    name = "flip"

    def run(self, model: onnx.ModelProto, ctx) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        init = out.graph.initializer[-1]
        value = onnx.numpy_helper.to_array(init) + 1
        init.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), init.name))
        return PassResult(out, True, {"flip": 1})


def test_running_out_of_rounds_warns():
    b = GraphBuilder(3)
    model = b.model(b.conv("input", 3, 3))
    with pytest.warns(LimitWarning, match="after 3 rounds"):
        result = run_pipeline(model, [_Flip()], max_rounds=3)
    assert result.rounds == 3 and result.notes


class _Renew(Rule):
    """Replaces a Relu with a new Relu, forever."""

    name = "renew"
    ops = ("Relu",)

    def match(self, ctx, node):
        return Match([node])

    def rewrite(self, ctx, match):
        node = match.nodes[0]
        make_node(ctx.graph, ctx.namer, "Relu", [node.inputs[0]], output=node.outputs[0], name="Relu")
        retire([node])


def test_running_out_of_sweeps_warns():
    b = GraphBuilder(3)
    model = b.model(b.op("Relu", [b.conv("input", 3, 3)]))
    with pytest.warns(LimitWarning, match="stopped a sweep"):
        run_family(model, RuleSet([_Renew()]))


def test_cli_explains_declines_with_the_figure_and_max_growth_changes_the_budget(nets, tmp_path):
    path = tmp_path / "plk.onnx"
    onnx.save(nets["partial_large_kernel"], path)
    runner = CliRunner()
    text = runner.invoke(main, ["optimize", str(path), "--explain"])
    assert text.exit_code == 0, text.output
    assert "would add" in text.output and "cost decisions" in text.output and "NPU estimate" in text.output
    out = runner.invoke(main, ["optimize", str(path), "--json", "--max-growth", "100"])
    assert out.exit_code == 0, out.output
    cost = json.loads(out.output)["cost"]
    assert cost["budget"]["max_growth"] == 100 and all(d["accepted"] for d in cost["budget"]["decisions"])
    report = tmp_path / "r.html"
    html = runner.invoke(main, ["optimize", str(path), "--report", str(report)])
    assert html.exit_code == 0, html.output
    page = report.read_text()
    assert 'id="cost"' in page and "declined" in page and "NPU estimate" in page


def _measured(name: str, macs: int, ratio: float, spread: float = 0.01) -> Measured:
    return Measured(name, macs, 10, ratio, ratio - spread, ratio + spread, ratio)


def test_cpu_decision_prefers_fewest_macs_unless_clearly_faster_and_never_slower():
    same = [_measured("plain", 120, 1.0), _measured("merged", 100, 0.995), _measured("input", 100, 1.0)]
    assert decide(same)[0] == "input"  # within the noise: fewest MACs, then the unchanged input
    fewer = [_measured("plain", 120, 1.0), _measured("merged", 90, 0.995), _measured("input", 100, 1.0)]
    assert decide(fewer) == ("merged", "fewest MACs; no measured difference beyond the noise")
    faster = [_measured("plain", 120, 0.80), _measured("merged", 100, 1.0), _measured("input", 100, 1.0)]
    assert decide(faster) == ("plain", "measured: clearly faster than the fewest-MACs form")
    barely = [
        _measured("plain", 120, 0.985, 0.03),
        _measured("merged", 100, 1.0),
        _measured("input", 100, 1.0),
    ]
    assert decide(barely)[0] == "input"  # 1.5% inside overlapping intervals is noise
    slower = [_measured("plain", 90, 1.10), _measured("input", 100, 1.0)]
    assert decide(slower)[0] == "input"  # fewer MACs but measured slower than the input: never returned


def test_target_cpu_returns_an_equivalent_measured_form(nets):
    from etc import api

    model = nets["res_blocks"]
    chosen, report = api.optimize(model, target="cpu", size=(32, 32))
    assert report.verification.equivalent and report.cpu is not None
    names = [c.name for c in report.cpu.candidates]
    assert names[-1] == "input" and report.cpu.chosen in names
    picked = next(c for c in report.cpu.candidates if c.name == report.cpu.chosen)
    assert picked.name == "input" or picked.ratio <= 1.0
    assert len(chosen.graph.node) == picked.nodes
    assert report.cost_after.cpu_ms == picked.ms and report.cost_before.cpu_ms is not None
    assert any(n.startswith("--target cpu chose") for n in report.notes)


def test_prelu_doubling_asked_by_option_is_counted_and_warned_over_budget():
    b = GraphBuilder(3)
    z = b.conv("input", 3, 8)
    act = b.op("PRelu", [z, b.const(np.full((8, 1, 1), 0.2, dtype=np.float32), "slope")])
    model = b.model(b.conv(act, 8, 3))
    with pytest.warns(LimitWarning, match="prelu_to_relu took the result over"):
        result = run_pipeline(
            model, "fold,rep,et", options=Options(prelu_to_relu=True), instruments=[NumericCheck()]
        )
    (decision,) = decisions(result, "prelu_to_relu")
    assert decision["accepted"] and decision["what"] == "doubling 8 PReLU channels as relu(z), relu(-z)"
    assert decision["total"] == pytest.approx(2.0)  # both convs double


def test_selection_convs_answer_to_the_budget():
    b = GraphBuilder(8)
    sliced = b.op(
        "Slice",
        ["input", b.const(np.array([0]), "s"), b.const(np.array([4]), "e"), b.const(np.array([1]), "a")],
    )
    model = b.model(b.conv(sliced, 4, 4))
    accepted = run_pipeline(model, "et", instruments=[NumericCheck()])
    assert decisions(accepted, "channel_slice_to_conv")[0]["accepted"]
    assert {n.op_type for n in accepted.model.graph.node} == {"Conv"}
    declined = run_pipeline(model, "et", options=Options(max_growth=1.0))
    (decision,) = decisions(declined, "channel_slice_to_conv")
    assert (
        not decision["accepted"]
        and "selecting 4 of 8 channels with 1x1 convs would add" in decision["reason"]
    )
    assert "Slice" in {n.op_type for n in declined.model.graph.node}


def test_adapters_take_the_target_and_the_budget(nets):
    from etc.adapters import PipelineSettings

    result = PipelineSettings("fold,rep,et", max_growth=100.0, check=False).run(nets["partial_large_kernel"])
    assert result.budget.max_growth == 100.0 and "Concat" not in {n.op_type for n in result.model.graph.node}
    b = GraphBuilder(3)
    model = b.model(b.conv(b.op("Relu", [b.conv("input", 3, 4)]), 4, 3))
    cpu = PipelineSettings("fold,rep,et", target="cpu").run(model)
    assert any(n.startswith("--target cpu chose") for n in cpu.notes)


def test_optimizing_a_result_that_paid_its_way_over_the_budget_again_does_not_warn():
    """ECBSR's image carry takes a small net over 1.25x, paid for on the NPU model; the result records the
    merged form's MACs, and a second run (as etc quantize makes) adds nothing, so it has nothing to warn about."""
    import warnings

    from etc import zoo

    model = export(zoo.build("ecbsr", scale=2, seed=1, M=2, C=8), exporter="legacy", dynamic_hw=True)
    first = optimize(model)
    assert first.budget.final > 1.25 * first.budget.baseline  # over the budget, and paid for
    with warnings.catch_warnings():
        warnings.simplefilter("error", LimitWarning)
        again = optimize(first.model)
    assert not again.notes
    assert again.model.SerializeToString() == first.model.SerializeToString()


def test_cpu_decision_trusts_a_leaner_runtime_graph_within_the_noise():
    """A median a little above 1 inside an interval holding 1 is noise when onnxruntime's graph of the candidate
    does a subset of the input's work; a clearly slower one (interval above 1) is never returned."""
    noisy = Measured("plain", 90, 10, 1.014, 0.15, 2.08, 1.0, leaner=True)
    assert decide([noisy, _measured("input", 100, 1.0)])[0] == "plain"
    not_leaner = Measured("plain", 90, 10, 1.014, 0.15, 2.08, 1.0, leaner=False)
    assert decide([not_leaner, _measured("input", 100, 1.0)])[0] == "input"
    clearly_slower = Measured("plain", 90, 10, 1.10, 1.02, 1.2, 1.0, leaner=True)
    assert decide([clearly_slower, _measured("input", 100, 1.0)])[0] == "input"


def test_leaner_than_compares_onnxruntime_graphs():
    from collections import Counter

    from etc.fusion import OptimizedGraph
    from etc.target import leaner_than

    base = OptimizedGraph(Counter({"Conv": 10, "Gelu": 3, "ReorderInput": 2}), 2)
    assert leaner_than(OptimizedGraph(Counter({"Conv": 8, "Gelu": 3, "ReorderInput": 2}), 2), base)
    assert not leaner_than(
        OptimizedGraph(Counter({"Conv": 8, "Erf": 3, "ReorderInput": 2}), 2), base
    )  # Gelu lost
    assert not leaner_than(OptimizedGraph(Counter({"Conv": 8, "Gelu": 3, "ReorderInput": 2}), 1), base)
    assert not leaner_than(base, base)


def test_an_admitted_carry_chain_is_walked_once(monkeypatch):
    """The image carried to the end of a long chain: its cost is estimated when the chain is first judged; the
    later steps of the admitted chain do not walk it again (compile time stays linear in the chain's length)."""
    from bench.synthetic import synthetic
    from etc import cost
    from etc.pipeline import Options, run_pipeline

    walks = []
    real = cost._carry_chain
    monkeypatch.setattr(cost, "_carry_chain", lambda *a, **k: walks.append(1) or real(*a, **k))
    result = run_pipeline(synthetic(300, anchor=True), "fold,rep,et", options=Options(max_growth=4.0))
    carries = sum(v for k, v in result.hits.items() if k.endswith("carry_skip"))
    assert carries >= 30, result.hits
    assert len(walks) <= 2, f"{len(walks)} chain walks for {carries} carry steps"


def test_macs_per_pixel_reads_computed_and_constant_node_weights():
    """A training-time export computes its conv weights (re-parameterized blocks: Add of two kernels) or holds
    them in Constant nodes: both count, as the weight's shape says (this used to raise IndexError)."""
    import onnx
    from onnx import helper, numpy_helper

    from etc.cost import conv_macs_per_pixel
    from etc.testing import GraphBuilder

    b = GraphBuilder(3)
    a = b.const(np.ones((4, 3, 3, 3), np.float32), "wa")
    c = b.const(np.ones((4, 3, 3, 3), np.float32), "wb")
    summed = b.op("Add", [a, c])
    y = b.op("Conv", ["input", summed], pads=[1, 1, 1, 1])
    model = b.model(b.conv(y, 4, 2, 1))
    constant = helper.make_node(
        "Constant", [], ["wk"], value=numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "wk")
    )
    model.graph.node.append(constant)
    last = model.graph.node[-2]
    assert last.op_type == "Conv"
    tail = helper.make_node("Conv", [last.output[0], "wk"], ["z"])
    model.graph.node.append(tail)
    model.graph.output[0].name = "z"
    onnx.checker.check_model(model)
    assert conv_macs_per_pixel(model) == 4 * 3 * 9 + 2 * 4 + 2 * 2


def test_a_dual_stream_conversion_is_judged_with_its_merges_at_any_byte_price(monkeypatch):
    """ETDS's training-time dual stream: each cross-stream Add is judged together with the dual-stream merge that
    absorbs its residual input (not as a carry up the body), and the bottom merge with the last Add, so the
    whole conversion goes through whatever an Add's byte is worth. With HTP's price and the chain judged step by
    step, the bottom merge was declined and the residuals rode up the body (1.98x MACs, two Concats left)."""
    from etc import cost, zoo

    model = export(zoo.build("etds_dual", scale=4, seed=3, M=5, C=16), exporter="legacy", dynamic_hw=True)
    merged = run_pipeline(model, "fold,rep").model
    for price in (cost.MACS_PER_SLOW_BYTE, 0.7):
        monkeypatch.setattr(cost, "MACS_PER_SLOW_BYTE", price)
        result = optimize(model)
        assert set(op.op_type for op in result.model.graph.node) <= PLAIN, price
        assert mac_ratio(result.model, merged) <= 1.25, price
        adds = decisions(result, "add_to_conv")
        assert len(adds) == 6 and all(d["accepted"] and "(dual stream)" in d["what"] for d in adds), adds
        assert not decisions(result, "dual_stream")  # every merge was a step of an Add's decision


def test_a_chain_step_past_its_estimate_is_judged_on_its_own():
    """A seed admitted for ``steps`` later rewrites takes that many without a decision; the next is judged (and
    recorded), so a chain that rides further than its estimate cannot grow the model unseen."""
    from etc.cost import CostBudget, Widening

    b = GraphBuilder(3)
    model = b.model(b.op("Relu", [b.conv("input", 3, 8)]))
    budget = CostBudget(model, Options(max_growth=100.0))
    first = Widening("carrying 's'", seeds=("s",), steps=2)
    assert budget.admit(first, "carry_skip", "a") is None and len(budget.decisions) == 1
    for node in ("b", "c"):
        assert budget.admit(Widening("carrying 's'", seeds=("s",)), "carry_skip", node) is None
    assert len(budget.decisions) == 1
    assert budget.admit(Widening("carrying 's'", seeds=("s",)), "carry_skip", "d") is None
    assert [d.node for d in budget.decisions] == ["a", "d"]
    ended = Widening("merging", continues=("x", "s"))  # a merge that ends the admitted chain of 's'
    budget.steps_left["s"] = 1
    assert budget.admit(ended, "dual_stream", "e") is None and len(budget.decisions) == 2
