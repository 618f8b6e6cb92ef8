"""Mixed 8/16-bit activations (etc.quant.a16, qdq's uint16 Q/DQ) and the uint8 floor of `etc quantize`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import etc
from etc import htp, runtime
from etc.errors import BadModelError
from etc.quant import a16, qdq
from tests.sr_nets import sr_model
from tests.sr_nets import tiny_sr_net as _sr_net

needs_qnn = pytest.mark.skipif(
    not htp.available(), reason="onnxruntime-qnn not installed (pip install .[htp])"
)


def _ranges(model, plan, feeds) -> dict[str, tuple[float, float]]:
    from etc.quant import observe

    out = {name: (0.0, 0.0) for name in plan.own}
    for values in observe.run_tensors(model, feeds, plan.own):
        for name, v in values.items():
            lo, hi = out[name]
            out[name] = (min(lo, float(v.min())), max(hi, float(v.max())))
    return {**out, **{name: (0.0, 1.0) for name in plan.inputs}}


def _quantized(wide: frozenset[str]):
    model = _sr_net()
    plan = qdq.plan_qdq(model)
    feeds = [runtime.make_inputs(runtime.input_specs(model), size=(16, 16), seed=s) for s in range(3)]
    q = qdq.build_qdq(model, plan, _ranges(model, plan, feeds), wide=wide)
    return model, plan, q, feeds


def _zero_point_types(q: onnx.ModelProto) -> dict[str, int]:
    """{quantized tensor: zero-point element type} over the QuantizeLinear nodes."""
    inits = {i.name: i.data_type for i in q.graph.initializer}
    return {n.input[0]: inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"}


def test_a16_region_round_trips_through_onnxruntime_cpu():
    model, _, q8, feeds = _quantized(frozenset())
    _, _, q16, _ = _quantized(frozenset(["r0"]))
    assert next(o.version for o in q16.opset_import if o.domain in ("", "ai.onnx")) == 21
    types = _zero_point_types(q16)
    assert types["r0"] == TensorProto.UINT16 and types["x"] == TensorProto.UINT8
    # conv1 reads r0 in 16 bits, so it writes c1 in 16 bits; conv0 reads x through a Convert up
    assert types["c1"] == TensorProto.UINT16
    assert sum(n.op_type == "QuantizeLinear" for n in q16.graph.node) == 5  # x, x->16, r0, c1, y
    assert qdq.conv_width_errors(q16) == []
    onnx.checker.check_model(q16)
    errors = {}
    for name, q in (("a8", q8), ("a16", q16)):
        errors[name] = max(
            float(np.abs(runtime.run(q, f)["y"] - runtime.run(model, f)["y"]).max()) for f in feeds
        )
    assert errors["a16"] < errors["a8"]  # r0's uint8 rounding gone
    plan = qdq.plan_qdq(model)
    exact = qdq.build_qdq(model, plan, _ranges(model, plan, feeds), wide={"x", *plan.own}, float_weights=True)
    worst = max(float(np.abs(runtime.run(exact, f)["y"] - runtime.run(model, f)["y"]).max()) for f in feeds)
    assert worst < 2e-4  # 16-bit activations and float weights: the QDQ graph is the model to 1/65535


def test_widths_of_a_region_and_of_the_whole_model():
    model = _sr_net()
    plan = qdq.plan_qdq(model)
    (region,) = [r for r in a16.regions(model, plan) if r.tensor == "r0"]
    assert region.wide == ["r0", "c1", "y"] and region.nodes == ["conv0", "conv1"]
    assert region.converts == [("x", 16)]
    everything = a16.resolve(model, plan, "all")
    assert everything == {"x", "r0", "c1"}
    assert qdq.plan_widths(model, plan, everything).converts == []


@needs_qnn
def test_a16_region_round_trips_through_htp():
    model, _, q16, feeds = _quantized(frozenset(["r0"]))
    assert htp.placement(q16, size=(16, 16)).all_on_htp
    worst, outputs = htp.max_abs_vs_cpu(q16, feeds[:1])
    assert outputs["y"].shape == (1, 3, 32, 32)
    reference = runtime.run(model, feeds[0])["y"]
    assert float(np.abs(outputs["y"] - reference).max()) < 0.05
    assert worst < 0.02  # HTP's requantization is not the CPU's, but both read r0 in 16 bits


def test_a_region_that_gives_a_node_two_widths_is_refused_with_the_reason():
    model = _sr_net()
    plan = qdq.plan_qdq(model)
    with pytest.raises(BadModelError, match=r"--a16 y: DepthToSpace 'd2s' .* one width.*Name 'c1'"):
        a16.resolve(model, plan, "y")
    with pytest.raises(BadModelError, match=r"--a16 c0: Conv 'conv0' and its Relu run as one op.*name 'r0'"):
        a16.resolve(model, plan, "c0")
    with pytest.raises(BadModelError, match=r"--a16 nope: no quantized activation tensor.*r0"):
        a16.resolve(model, plan, "r0,nope")
    assert a16.resolve(model, plan, "r0, c1") == {"r0", "c1"}


def test_a_conv_between_two_widths_without_a_convert_is_named():
    _, _, q16, _ = _quantized(frozenset(["r0"]))
    # rewire conv1's output to an 8-bit QuantizeLinear: conv1 would read 16 bits and write 8
    zp = next(n for n in q16.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "c1").input[2]
    init = next(i for i in q16.graph.initializer if i.name == zp)
    init.CopyFrom(numpy_helper.from_array(np.asarray(0, np.uint8), zp))
    (error,) = qdq.conv_width_errors(q16)
    assert "Conv 'conv1' would read" in error and "16-bit" in error and "8-bit" in error
    assert "same width" in error


def _one_wide_channel() -> onnx.ModelProto:
    """conv0 3->4: the image and one channel 20x its sum (a wide uint8 range that crushes the image), relu;
    conv1 1x1 4->3 reads the image back (not the wide channel), relu; conv2 1x1 3->12 copies each colour to
    its four phases, depth-to-space x2 (nearest upsampling, the graph output)."""
    w0 = np.zeros((4, 3, 3, 3), np.float32)
    for c in range(3):
        w0[c, c, 1, 1] = 1.0
    w0[3, :, 1, 1] = 20.0
    w1 = np.zeros((3, 4, 1, 1), np.float32)
    for c in range(3):
        w1[c, c] = 1.0
    w2 = np.zeros((12, 3, 1, 1), np.float32)
    for c in range(3):
        w2[4 * c : 4 * c + 4, c] = 1.0
    inits = [numpy_helper.from_array(w, n) for w, n in ((w0, "w0"), (w1, "w1"), (w2, "w2"))]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("DepthToSpace", ["c2"], ["y"], name="d2s", blocksize=2, mode="CRD"),
    ]
    return sr_model(nodes, inits, "wide")


QUICK = dict(
    method="minmax", scale=2, num=4, patch=32, equalize=False, rounding="nearest", bias_correction=False
)
LOOSE = dict(a16_budget=4.0, a16_max_share=1.0)  # the tiny net's one region is half its tensors


def test_max_drop_is_honoured_with_the_fewest_regions():
    model = _one_wide_channel()
    _, report = etc.quantize(model, "samples", **QUICK, **LOOSE, a16="auto", max_drop=0.05)
    assert report.a8_drop > 1.0  # r0's range crushes the image in uint8
    choice = report.a16
    assert choice.reached and choice.tensors == ["r0"]
    assert choice.drop <= 0.05 and report.heldout_drop <= 0.05
    assert choice.steps[0].before > 1.0 and choice.steps[-1].after <= 0.05  # medians (the next tests)
    assert len(choice.wide) < choice.candidates


def test_max_drop_zero_is_reported_when_not_reached():
    model = _one_wide_channel()
    _, report = etc.quantize(model, "samples", **QUICK, **LOOSE, a16="auto", max_drop=0.0)
    assert report.heldout_drop <= report.a8_drop
    if not report.a16.reached:
        assert report.heldout_drop > 0.0


def test_the_floor_is_computed_and_printed(tmp_path):
    from click.testing import CliRunner

    from etc.cli import cli

    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_one_wide_channel(), src)
    args = ["quantize", str(src), "-o", str(out), "--num", "4", "--patch", "32", "--method", "minmax"]
    args += ["--no-equalize", "--rounding", "nearest", "--no-summary"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("uint8 activations alone cost"))
    import re

    found = re.match(r"uint8 activations alone cost (\S+) dB here; this model loses (\S+) dB", line)
    assert found, line
    floor, loses = float(found.group(1)), float(found.group(2))
    assert floor > 1.0 and loses >= floor - 0.1  # rounding the weights adds to the activations' floor
    result = CliRunner().invoke(cli, [*args, "--json"])
    payload = json.loads(result.output)
    assert payload["floor_drop"] == pytest.approx(floor, abs=1e-3)
    assert payload["heldout_drop"] == pytest.approx(loses, abs=1e-3)


def test_cli_a16_names_a_bad_tensor_and_exits_2(tmp_path, capsys):
    from etc.cli import main

    def run(*extra: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main([*args, *extra])
        captured = capsys.readouterr()
        return int(info.value.code or 0), captured.out, captured.err

    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_sr_net(), src)
    args = ["quantize", str(src), "-o", str(out), "--num", "2", "--patch", "32", "--no-summary"]
    code, _, err = run("--a16", "r0,nope")
    assert code == 2 and "--a16 nope" in err and not out.exists()
    code, _, err = run("--a16", "y")
    assert code == 2 and "Name 'c1'" in err
    code, text, _ = run("--a16", "r0", "--no-floor")
    assert code == 0, text
    assert "16-bit activations (names): r0, c1, y" in text
    assert _zero_point_types(onnx.load(out))["r0"] == TensorProto.UINT16


def test_auto_reranks_after_each_region_and_drops_the_regions_not_needed():
    from etc.quant.a16 import choose

    drops = {"": 1.0, "a": 0.4, "b": 0.5, "c": 0.95, "ab": 0.3, "ac": 0.1, "bc": 0.02, "abc": 0.0}
    asked = []

    def drop_of(wide):
        asked.append(wide)
        return drops["".join(sorted(wide))]

    chosen, steps, reached, drop = choose("abc", drop_of, lambda wide: float(len(wide)), 0.05, 1.0)
    # a first (alone it removes the most), then c: next to a it removes more than b does
    assert [s.tensor for s in steps] == ["a", "c", "b"]
    assert [s.after for s in steps] == [0.4, 0.1, 0.0]
    # b alone did not bring the drop under 0.05, but with c it does: a is removed again
    assert reached and chosen == frozenset("bc") and drop == 0.02
    assert [s.kept for s in steps] == [False, True, True]
    assert len(asked) == len(set(asked))  # every mix measured once


def test_auto_stops_when_no_region_lowers_the_drop():
    from etc.quant.a16 import choose

    drops = {"": 1.0, "a": 0.5, "b": 1.2, "ab": 0.6}
    chosen, steps, reached, drop = choose(
        "ab", lambda wide: drops["".join(sorted(wide))], lambda wide: 1.0, 0.05, 1.0
    )
    assert chosen == frozenset("a") and not reached and drop == 0.5 and len(steps) == 1
    assert choose("ab", lambda wide: 9.0, lambda wide: 1.0, 0.05, 0.01) == (frozenset(), [], True, 0.01)


def test_auto_skips_regions_over_budget_and_regions_that_gain_too_little():
    from etc.quant.a16 import MIN_GAIN, choose

    drops = {"": 0.2, "a": 0.0, "b": 0.2 - MIN_GAIN / 2, "c": 0.1, "bc": 0.1 - MIN_GAIN / 2}
    asked = []

    def drop_of(wide):
        asked.append("".join(sorted(wide)))
        return drops["".join(sorted(wide))]

    chosen, steps, reached, drop = choose(
        "abc", drop_of, lambda wide: 1.0, 0.05, 0.2, fits=lambda wide: "a" not in wide
    )
    assert "a" not in "".join(asked)  # over budget: never measured
    assert chosen == frozenset("c") and not reached and drop == 0.1  # b's gain is below MIN_GAIN both times
    assert [s.tensor for s in steps] == ["c"]


def test_the_reported_drop_is_the_held_out_drop_measured_from_scratch():
    from etc.quant.summary import heldout_pairs, psnr_drop

    model = _one_wide_channel()
    qmodel, report = etc.quantize(model, "samples", **QUICK)
    pairs = heldout_pairs("samples", 2, num=8, patch=32, seed=1000)
    assert report.heldout_patches == len(pairs) == 8
    assert report.heldout_drop == pytest.approx(psnr_drop(model, qmodel, pairs, 2), abs=1e-9)


def test_tensors_in_16_bits_take_their_observed_min_max_not_the_clipped_8_bit_range():
    model = _one_wide_channel()
    pct = {**QUICK, "method": "entropy", "floor": False}
    _, narrow = etc.quantize(model, "samples", **pct)
    _, wide = etc.quantize(model, "samples", **pct, a16="all")
    _, minmax = etc.quantize(model, "samples", **{**QUICK, "floor": False})
    moved = [t for t, m in wide.methods.items() if m == "minmax (16-bit)"]
    assert moved and set(moved) <= set(wide.a16.wide)
    for t in moved:
        assert wide.ranges[t] == pytest.approx(minmax.ranges[t])
    assert any(narrow.ranges[t] != pytest.approx(wide.ranges[t]) for t in moved)  # entropy clipped them


def test_auto_takes_no_region_beyond_the_budget_or_the_share_and_says_so():
    model = _one_wide_channel()
    _, report = etc.quantize(model, "samples", **QUICK, a16="auto", max_drop=0.05)  # 1.25x, 1/4
    choice = report.a16
    assert choice.tensors == [] and choice.steps == [] and not choice.reached
    assert choice.drop > 1.0 and choice.cost == 0.0  # the 8-bit model: median drop, no cycles added
    plan = qdq.plan_qdq(etc.quant.quantizer.named_nodes(model))
    assert len(qdq.plan_widths(model, plan, frozenset(["r0"])).wide) / choice.candidates > 0.25
    _, shared = etc.quantize(model, "samples", **QUICK, a16="auto", a16_max_share=1.0, a16_budget=1.0)
    assert shared.a16.tensors == []  # the share allows r0, one cycle ratio of 1.0 does not
    _, both = etc.quantize(model, "samples", **QUICK, **LOOSE, a16="auto")
    assert both.a16.tensors == ["r0"] and 1.0 < 1.0 + both.a16.cost <= 4.0


def test_the_estimate_prices_16_bit_convs_converts_and_a_16_bit_output():
    model = _sr_net()
    plan = qdq.plan_qdq(model)
    channels, macs = a16._shape_facts(model)
    base = sum(macs.values())
    every = a16.resolve(model, plan, "all")
    widths = qdq.plan_widths(model, plan, every)
    out_elems = sum(channels[o.name] for o in model.graph.output)
    expected = a16.A16_EXTRA * base + a16.OUTPUT_COST * out_elems  # every conv in 16 bits, no Convert
    assert widths.converts == [] and a16.estimated_cost(model, plan, every) == pytest.approx(expected / base)
    one = frozenset(["r0"])
    w1 = qdq.plan_widths(model, plan, one)
    assert w1.converts == [("x", 16)] and w1.stored["y"] == 16  # conv0 reads x converted up
    conv16 = sum(macs.get(n, 0.0) for n, b in w1.reads.items() if b == 16)
    expected = a16.A16_EXTRA * conv16 + a16.CONVERT_COST * channels["x"] + a16.OUTPUT_COST * channels["y"]
    assert a16.estimated_cost(model, plan, one) == pytest.approx(expected / base)
    assert conv16 == pytest.approx(base)  # both convs run in 16 bits: only the Convert differs from 'all'
    assert a16.estimated_cost(model, plan, one) > a16.estimated_cost(model, plan, every)


def test_auto_bounds_the_median_crop_drop_not_the_mean():
    assert a16.median_drop([30.0, 40.0, 50.0], [29.9, 39.95, 47.0]) == pytest.approx(0.1)
    model = _one_wide_channel()
    _, report = etc.quantize(model, "samples", **QUICK, **LOOSE, a16="auto", max_drop=0.05)
    from etc.quant.summary import heldout_pairs, heldout_psnrs

    pairs = heldout_pairs("samples", 2, num=8, patch=32, seed=1000)
    a8 = etc.quantize(model, "samples", **QUICK)[0]
    ref = heldout_psnrs(model, pairs, 2)
    assert report.a16.steps[0].before == pytest.approx(a16.median_drop(ref, heldout_psnrs(a8, pairs, 2)))


def test_auto_prints_what_it_achieved_against_each_limit(tmp_path):
    from click.testing import CliRunner

    from etc.cli import cli

    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_one_wide_channel(), src)
    args = ["quantize", str(src), "-o", str(out), "--num", "4", "--patch", "32", "--method", "minmax"]
    args += ["--no-equalize", "--rounding", "nearest", "--no-summary", "--no-floor", "--a16", "auto"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "0/4 tensors in 16 bits (0.00, limit 0.25); cycles 1.00x" in result.output
    assert "not reached within --a16-budget 1.25 and --a16-max-share 0.25" in result.output
    result = CliRunner().invoke(cli, [*args, "--a16-budget", "4", "--a16-max-share", "1"])
    assert result.exit_code == 0, result.output
    assert "2/4 tensors in 16 bits (0.50, limit 1.0)" in result.output


def test_htp_cost_is_the_fraction_of_the_8_bit_floor_added(monkeypatch):
    from types import SimpleNamespace

    floors = {0: 200, 1: 250, 2: 500}  # per-node floors of the 8-bit model and two mixed ones
    built = []

    def fake_cycles(model, *, size, runs):
        assert size == (32, 32) and runs == 3
        return SimpleNamespace(floor=floors[len(model)])

    monkeypatch.setattr(htp, "cycles", fake_cycles)

    def build(wide):
        built.append(wide)
        return list(wide)  # stands for the QDQ model: its length picks the floor

    cost = a16.htp_cost(build)
    assert built == [frozenset()]  # the 8-bit model, measured once up front
    assert cost(frozenset(["a"])) == pytest.approx(0.25)
    assert cost(frozenset(["a", "b"])) == pytest.approx(1.5)
    fits = a16.within(_sr_net(), qdq.plan_qdq(_sr_net()), cost, 1.3, 1.0)
    assert fits(frozenset(["r0"])) and not fits(frozenset(["r0", "c1"]))
