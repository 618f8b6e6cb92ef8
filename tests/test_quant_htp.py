"""``target="htp"`` (etc.quant.htp_form): the QDQ form HTP computes as the graph says, on onnxruntime CPU and
on the real HTP simulator (small sizes)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from etc import htp, runtime
from etc.quant import htp_form, kernels, qdq
from etc.quant.quantizer import quantize
from tests.sr_nets import sr_model

needs_qnn = pytest.mark.skipif(
    not htp.available(), reason="onnxruntime-qnn not installed (pip install .[htp])"
)
SIZE = (32, 32)


def prelu_sr_net() -> onnx.ModelProto:
    """conv 3->8, PReLU (per-channel slopes, some negative), conv 8->8, PReLU, conv 8->12, depth-to-space x2."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.4).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "b0"),
        numpy_helper.from_array(rng.uniform(-0.3, 0.6, (8, 1, 1)).astype(np.float32), "a0"),
        numpy_helper.from_array((rng.normal(size=(8, 8, 3, 3)) * 0.25).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.uniform(-0.2, 0.5, (8, 1, 1)).astype(np.float32), "a1"),
        numpy_helper.from_array((rng.normal(size=(12, 8, 3, 3)) * 0.2).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=12).astype(np.float32) * 0.1, "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c0", "a0"], ["p0"], name="prelu0"),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "a1"], ["p1"], name="prelu1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c2"], ["y"], name="d2s", blocksize=2, mode="CRD"),
    ]
    return sr_model(nodes, inits, name="prelu_sr")


def one_prelu_net() -> onnx.ModelProto:
    """conv 3->12, PReLU, depth-to-space x2: the output is the PReLU's (no later conv amplifies a difference)."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array((rng.normal(size=(12, 3, 3, 3)) * 0.3).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=12).astype(np.float32) * 0.1, "b0"),
        numpy_helper.from_array(rng.uniform(-0.3, 0.6, (12, 1, 1)).astype(np.float32), "a0"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c0", "a0"], ["p0"], name="prelu0"),
        helper.make_node("DepthToSpace", ["p0"], ["y"], name="d2s", blocksize=2, mode="CRD"),
    ]
    return sr_model(nodes, inits, name="one_prelu")


def _images(n: int = 3) -> list[np.ndarray]:
    """Smooth 8-bit images (k/255 values, as real photos give), 1x3x32x32."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        coarse = rng.uniform(0, 1, (1, 3, 4, 4))
        smooth = np.kron(coarse, np.ones((8, 8))) * 0.7 + rng.uniform(0, 0.3, (1, 3, 32, 32))
        out.append((np.round(np.clip(smooth, 0, 1) * 255) / 255).astype(np.float32))
    return out


def _quantized(target: str, net=prelu_sr_net, **options) -> onnx.ModelProto:
    q, report = quantize(net(), _images(4), scale=2, num=4, floor=False, target=target, **options)
    assert report.target == target
    return q


def test_slope_grid_is_uint8_per_tensor_with_zero_exact():
    alpha = np.array([-0.31, 0.0, 0.07, 0.58], np.float32)
    codes, scale, zero = htp_form.slope_grid(alpha)
    assert codes.dtype == np.uint8 and np.ndim(scale) == 0 and zero.dtype == np.uint8
    values = htp_form.grid_values(codes, scale, zero)
    assert values[1] == 0.0
    assert np.abs(values - alpha).max() <= float(scale) / 2 + 1e-7


def test_snapped_slopes_are_what_the_uint8_dequantize_computes_on_cpu():
    model, moved = htp_form.snap_slopes(prelu_sr_net())
    assert moved == 2
    _, moved_again = htp_form.snap_slopes(model)
    assert moved_again == 0  # already on the grid: snapping is idempotent
    plan = qdq.plan_qdq(model)
    ranges = {t: (-2.0, 2.0) for t in plan.own} | {t: (0.0, 1.0) for t in plan.inputs}
    float_slopes = qdq.build_qdq(model, plan, ranges)
    dq_slopes = qdq.build_qdq(model, plan, ranges, htp=True)
    prelus = [n for n in dq_slopes.graph.node if n.op_type == "PRelu"]
    producers = {o: n for n in dq_slopes.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in dq_slopes.graph.initializer}
    for node in prelus:
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.uint8
        assert np.ndim(inits[dq.input[1]]) == 0  # one scale per PReLU (QNN refuses per-channel slopes)
    feed = {"x": _images(1)[0]}
    a = runtime.run(runtime.session(float_slopes), feed)["y"]
    b = runtime.run(runtime.session(dq_slopes), feed)["y"]
    np.testing.assert_array_equal(a, b)


def test_rounding_shift_moves_every_8bit_conv_bias_by_that_many_output_steps():
    model = prelu_sr_net()
    plan = qdq.plan_qdq(model)
    ranges = {t: (-2.0, 2.0) for t in plan.own} | {t: (0.0, 1.0) for t in plan.inputs}
    plain = qdq.build_qdq(model, plan, ranges)
    shifted = qdq.build_qdq(model, plan, ranges, rounding_shift=0.25)
    step = 4.0 / 255
    inits = {i.name: numpy_helper.to_array(i) for i in plain.graph.initializer}
    moved = {i.name: numpy_helper.to_array(i) for i in shifted.graph.initializer}
    biases = [n for n in inits if n.endswith("_bias_quantized")]
    assert len(biases) == 3
    for name in biases:
        bias_scale = inits[name.replace("_quantized", "_scale")].astype(np.float64)
        delta = (moved[name].astype(np.float64) - inits[name]) * bias_scale / step
        np.testing.assert_allclose(delta, 0.25, atol=0.5 * bias_scale.max() / step + 1e-9)


def test_fp16_exact_scales_make_every_multiplier_a_float16_number_and_keep_the_codes():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(16, 8, 3, 3)) * 0.1
    scales = qdq.weight_scales(weights, True, False)
    codes = qdq.quantize_weight(weights, scales)
    x_scale, y_scale = np.float32(1 / 65535), np.float32(3.1 / 65535)
    snapped = htp_form.fp16_exact_scales(scales, x_scale, y_scale)
    multipliers = float(x_scale) * snapped.astype(np.float64) / float(y_scale)
    np.testing.assert_allclose(multipliers.astype(np.float16).astype(np.float64), multipliers, rtol=1e-6)
    np.testing.assert_allclose(snapped, scales, rtol=2.0**-11)  # the nearest float16 multiplier
    on_grid = codes.astype(np.float64) * scales.reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(qdq.quantize_weight(on_grid, snapped), codes)


def test_target_htp_is_recorded_and_keeps_other_targets_unchanged():
    assert "htp" in kernels.TARGETS and kernels.resolve("htp") == "htp" and kernels.safe_mode("htp") is False
    q = _quantized("htp")
    assert kernels.recorded(q) == "htp"
    default = _quantized("int32")
    assert kernels.recorded(default) == "int32"
    assert not any(
        n.op_type == "DequantizeLinear" and n.output[0].startswith("a") for n in default.graph.node
    )  # the default target keeps float slopes


def test_cli_quantize_target_htp(tmp_path):
    from click.testing import CliRunner

    from etc.cli import cli

    src, dst = tmp_path / "prelu.onnx", tmp_path / "int8.onnx"
    onnx.save(prelu_sr_net(), src)
    help_text = CliRunner().invoke(cli, ["quantize", "--help"]).output
    assert "htp = Qualcomm HTP" in help_text
    args = ["quantize", str(src), "-o", str(dst), "--num", "2", "--patch", "16", "--no-summary", "--no-floor"]
    result = CliRunner().invoke(cli, [*args, "--target", "htp"])
    assert result.exit_code == 0, result.output
    assert "target htp" in result.output and "PReLU slopes moved onto HTP's uint8 grid" in result.output
    assert kernels.recorded(onnx.load(dst)) == "htp"


def _disagreement(q: onnx.ModelProto) -> float:
    """Mean |HTP - onnxruntime CPU| of the output over the test images, in steps of the output's scale."""
    runner = htp.Runner(q)
    cpu = runtime.session(q)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    last = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    step = float(inits[last.input[1]])
    diffs = [np.abs(runner({"x": x})["y"] - runtime.run(cpu, {"x": x})["y"]).mean() for x in _images()]
    return float(np.mean(diffs)) / step


@needs_qnn
def test_target_htp_runs_entirely_on_htp():
    q = _quantized("htp")
    found = htp.placement(q, size=SIZE)
    assert found.all_on_htp, found.summary()
    assert htp.session(q, size=SIZE) is not None  # CPU fallback disabled


@needs_qnn
def test_target_htp_disagrees_less_with_cpu_than_the_default_on_a_prelu_net():
    default = _disagreement(_quantized("int32", one_prelu_net))
    made_for_htp = _disagreement(_quantized("htp", one_prelu_net))
    # The default's float slope leaves the PReLU in float between a Dequantize and a Quantize on HTP.
    assert made_for_htp < 0.5 * default, (made_for_htp, default)


@needs_qnn
def test_target_htp_16bit_convs_follow_the_graph_on_htp():
    default = _disagreement(_quantized("int32", a16="all"))
    made_for_htp = _disagreement(_quantized("htp", a16="all"))
    # HTP rounds a 16-bit conv's requantization multiplier to float16; the htp form makes it exact.
    assert made_for_htp < 0.5 * default, (made_for_htp, default)
