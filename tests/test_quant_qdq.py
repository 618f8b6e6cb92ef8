"""QDQ placement, int8 weight grids that cannot saturate u8s8 kernels, exact clip ranges, quantizer end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc import runtime
from etc.quant import kernels, qdq, quantizer
from etc.testing import assert_equivalent
from tests.test_quant_equalize import _chain


def _feeds(rng, n=4):
    return [{"x": rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32)} for _ in range(n)]


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def test_placement_fuses_relu_and_shares_pairs(rng):
    model = _chain(rng, clip_tail=True)
    plan = qdq.plan_qdq(model)
    assert plan.inputs == ["x"]
    assert plan.own == ["a1", "a2", "a3", "y"]  # Relu outputs; Conv outputs are fused away
    assert plan.fused == {"c1": "a1", "c2": "a2", "c3": "a3", "c4": "y"}
    ranges = {"x": (0.0, 1.0), "a1": (0, 2), "a2": (0, 2), "a3": (0, 1), "y": (0, 1)}
    q = qdq.build_qdq(model, plan, ranges)
    onnx.checker.check_model(q)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 5  # one pair per quantized tensor, none duplicated or dangling
    assert ops.count("DequantizeLinear") == 5 + 4 + 4  # + weights + biases
    q_inputs = [n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert len(set(q_inputs)) == len(q_inputs)
    assert [o.name for o in q.graph.output] == ["y"]
    readers = {i for n in q.graph.node for i in n.input}
    assert all(n.output[0] in readers or n.output[0] == "y" for n in q.graph.node)


def test_depth_to_space_runs_on_uint8(rng, tmp_path):
    model = _chain(rng)
    model.graph.node.append(onnx.helper.make_node("DepthToSpace", ["c3"], ["y"], blocksize=2, mode="CRD"))
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None))
    plan = qdq.plan_qdq(model)
    assert plan.tied == {"y": "c3"}
    q = qdq.build_qdq(model, plan, {"x": (0, 1), "a1": (0, 2), "a2": (0, 2), "c3": (-1, 1)})
    ops = _optimized_ops(q, tmp_path)
    assert ops.count("QLinearConv") == 3 and "DepthToSpace" in ops
    assert ops.index("DepthToSpace") < ops.index("DequantizeLinear")  # moved on uint8 before dequantizing


@pytest.mark.parametrize("mode", [True, "any"])
def test_safe_weight_grid_cannot_saturate(rng, mode):
    w = rng.normal(size=(8, 16, 3, 3))
    w[0] *= 0.05
    w[0, 0, 1, 1] = 5.0  # one dominant weight keeps nearly the full grid
    scales = qdq.weight_scales(w, per_channel=True, safe_u8s8=mode)
    q = qdq.quantize_weight(w, scales)
    assert qdq.u8s8_safe(q, mode)
    assert np.abs(q[0]).max() >= 120
    assert not qdq.u8s8_safe(qdq.quantize_weight(w, qdq.weight_scales(w, safe_u8s8=False)), mode)
    clip = -np.eye(4).reshape(4, 4, 1, 1)
    assert np.all(qdq.quantize_weight(clip, qdq.weight_scales(clip)) == -127 * np.eye(4).reshape(4, 4, 1, 1))


def test_pair_rule_is_finer_than_the_any_two_rule(rng):
    w = rng.normal(size=(8, 16, 3, 3))
    pairs = qdq.weight_scales(w, safe_u8s8=True)
    anytwo = qdq.weight_scales(w, safe_u8s8="any")
    assert np.all(pairs <= anytwo) and np.mean(pairs / anytwo) < 0.8
    q = qdq.quantize_weight(w, pairs)
    assert qdq.u8s8_safe(q) and not qdq.u8s8_safe(q, "any")
    with pytest.raises(Exception, match="safe_u8s8"):
        qdq.weight_scales(w, safe_u8s8="sometimes")


def test_kernel_pairs_follow_the_nhwc_reduction_order():
    pairs = qdq.kernel_pairs((1, 3, 3, 3)).tolist()
    # NHWC index k = tap * 3 + c; NCHW flat index = c * 9 + tap: k = 0, 1 -> (c0, t0), (c1, t0); k = 2, 3 ->
    # (c2, t0), (c0, t1)
    assert pairs[:2] == [[0, 9], [18, 1]]
    assert len(pairs) == 13  # 27 weights: the last one has no partner
    assert qdq.kernel_pairs((1, 4, 1, 1)).tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("c,k", [(3, 3), (4, 3), (6, 1)])
def test_fused_kernel_adds_exactly_the_predicted_pairs(c, k):
    """The layout :func:`qdq.kernel_pairs` assumes, checked on this onnxruntime: on a CPU whose u8s8 kernel
    saturates, two weights at full scale saturate int16 exactly when they share a (2j, 2j + 1) pair of the NHWC
    reduction index; on a CPU that accumulates in int32, no pair saturates."""
    saturating = kernels.kernel_saturates_pairs()
    n = c * k * k
    probes = [(a, a + 1) for a in range(n - 1)] + [(a, a + 2) for a in range(0, n - 2, 3)]
    for a, b in probes:
        got = kernels.saturation_probe(c, k, a, b)
        paired = saturating and a // 2 == b // 2
        assert (got < 1.5) == paired, (c, k, a, b, got, "saturating" if saturating else "int32")


def test_fused_kernels_match_the_qdq_graph(rng):
    """With the safe grid, onnxruntime's fused int8 kernels compute what the QDQ graph says."""
    model = _chain(rng, c=16)
    plan = qdq.plan_qdq(model)
    q = qdq.build_qdq(model, plan, {"x": (0, 1), "a1": (0, 3), "a2": (0, 3), "c3": (-3, 3)})
    feed = {"x": rng.uniform(0, 1, size=(1, 3, 15, 17)).astype(np.float32)}
    ref = runtime.run(runtime.session(q), feed)["c3"]
    got = runtime.run(runtime.session(q, optimize=True), feed)["c3"]
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_clip_structure_ranges_are_exact(rng):
    model = _chain(rng, clip_tail=True)
    caps, exact = quantizer.clip_structures(model)
    assert caps == {"a3": pytest.approx(1.0)}
    assert exact == {"y": (0.0, 1.0)}
    bad = _chain(rng, clip_tail=True)
    for init in bad.graph.initializer:
        if init.name == "wc":
            init.CopyFrom(onnx.numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "wc"))
    assert quantizer.clip_structures(bad) == ({}, {})  # positive weights: values above 1 matter


def test_quantizer_end_to_end_on_tiny_chain(rng):
    model = _chain(rng, clip_tail=True)
    feeds = _feeds(rng)
    qmodel, report = quantizer.quantize_with_report(
        model, [f["x"] for f in feeds], scale=1, num=4, target="native"
    )
    assert report.capped == {"a3": pytest.approx(1.0)} and report.methods["y"] == "exact"
    assert report.equalize_max_abs < 1e-5
    ref = runtime.run(model, feeds[0])["y"]
    got = runtime.run(runtime.session(qmodel, optimize=True), feeds[0])["y"]
    assert np.abs(ref - got).max() < 0.05
    assert set(report.ops) == {"QuantizeLinear", "DequantizeLinear", "Conv", "Relu"}


def test_prelu_becomes_relu_before_quantizing(rng):
    """The exact PReLU -> ReLU rewrite runs first: no float PReLU left, every Conv fused with a Relu."""
    model = _chain(rng, act="PRelu")
    feeds = _feeds(rng)
    relu, count = quantizer.relu_form(model)
    assert count == 1 and "PRelu" not in [n.op_type for n in relu.graph.node]
    assert_equivalent(model, relu)
    images = [f["x"] for f in feeds]
    qmodel, report = quantizer.quantize_with_report(
        model, images, scale=1, num=4, target="native", prelu_to_relu=True
    )
    assert report.prelu_to_relu == 1 and "PRelu" not in report.ops
    plan = qdq.plan_qdq(relu)
    assert len(plan.fused) == 2 and len(plan.convs) == 3  # both hidden Convs fuse with a Relu
    ref = runtime.run(model, feeds[0])["c3"]
    got = runtime.run(runtime.session(qmodel, optimize=True), feeds[0])["c3"]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
    _, report = quantizer.quantize_with_report(model, images, scale=1, num=4)  # the default keeps PReLU
    assert report.prelu_to_relu == 0 and report.ops["PRelu"] == 1


def test_relu_form_leaves_models_without_prelu_alone(rng):
    model = _chain(rng)
    assert quantizer.relu_form(model) == (model, 0)


def test_clamp_pairs_makes_any_int8_weight_safe_and_changes_only_violations(rng):
    q = rng.integers(-127, 128, size=(6, 5, 3, 3)).astype(np.int8)
    fixed = qdq.clamp_pairs(q)
    assert qdq.u8s8_safe(fixed) and not qdq.u8s8_safe(q)
    pairs = qdq.kernel_pairs(q.shape)
    flat, flat_fixed = q.reshape(6, -1).astype(int), fixed.reshape(6, -1).astype(int)
    a, b = flat[:, pairs[:, 0]], flat[:, pairs[:, 1]]
    ok = (np.sign(a) != np.sign(b)) | (np.abs(a) + np.abs(b) <= 128)
    assert np.array_equal(flat_fixed[:, pairs[:, 0]][ok], a[ok])
    assert np.all(np.abs(flat_fixed) <= np.abs(flat))


def test_target_default_is_exact_int32_and_recorded(rng):
    """The default target puts no pair limit on the weights; x86-avx2 does; both are written to the model."""
    model = _chain(rng, clip_tail=True, c=16)
    images = [f["x"] for f in _feeds(rng)]
    q32, r32 = quantizer.quantize_with_report(model, images, scale=1, num=4, rounding="nearest")
    qavx, ravx = quantizer.quantize_with_report(
        model, images, scale=1, num=4, rounding="nearest", target="x86-avx2"
    )
    assert (r32.target, ravx.target) == ("int32", "x86-avx2")
    assert (kernels.recorded(q32), kernels.recorded(qavx)) == ("int32", "x86-avx2")
    weights = {
        i.name: onnx.numpy_helper.to_array(i)
        for i in q32.graph.initializer
        if i.name.endswith("weight_quantized")
    }
    avx = {i.name: onnx.numpy_helper.to_array(i) for i in qavx.graph.initializer}
    assert all(qdq.u8s8_safe(avx[n]) for n in weights)
    assert not all(qdq.u8s8_safe(w) for w in weights.values())  # full-range rows break the int16 pair limit


def test_native_target_follows_the_probed_kernel(rng):
    expected = "x86-avx2" if kernels.kernel_saturates_pairs() else "int32"
    assert kernels.resolve("native") == expected
    assert kernels.safe_mode(kernels.resolve("int32")) is False
    assert kernels.safe_mode("x86-avx2") == "pairs"
    with pytest.raises(Exception, match="unknown target"):
        kernels.resolve("gpu")
    model = _chain(rng, c=8)
    q, report = quantizer.quantize_with_report(
        model, [f["x"] for f in _feeds(rng)], scale=1, num=4, rounding="nearest", target="native"
    )
    assert report.target == expected == kernels.recorded(q)
    props = {p.key: p.value for p in q.metadata_props}
    assert props[kernels.METADATA_KEY + ".requested"] == "native"


def test_int32_target_matches_the_fused_kernel_only_where_it_accumulates_in_int32(rng):
    """Full-range weights: exact in the QDQ graph; the fused kernel agrees unless this CPU saturates pairs."""
    model = _chain(rng, c=16)
    plan = qdq.plan_qdq(model)
    ranges = {"x": (0, 1), "a1": (0, 3), "a2": (0, 3), "c3": (-3, 3)}
    q = qdq.build_qdq(model, plan, ranges, safe_u8s8=False)
    feed = {"x": rng.uniform(0, 1, size=(1, 3, 15, 17)).astype(np.float32)}
    ref = runtime.run(runtime.session(q), feed)["c3"]
    got = runtime.run(runtime.session(q, optimize=True), feed)["c3"]
    if kernels.kernel_saturates_pairs():
        pytest.skip("this CPU's u8s8 kernel saturates int16 pairs: only the x86-avx2 target is exact here")
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_the_prelu_doubling_alternative_gives_its_macs_and_estimated_htp_cycles():
    """A PReLU model's report names the doubling with its MACs (more) and its estimated HTP INT8 cycles (fewer:
    HTP runs a kept PReLU in float between a DequantizeLinear and a QuantizeLinear)."""
    from onnx import helper, numpy_helper

    from tests.sr_nets import tiny_sr_net

    model = tiny_sr_net()
    slope = numpy_helper.from_array(np.full((8, 1, 1), 0.2, np.float32), "slope")
    model.graph.initializer.append(slope)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.CopyFrom(helper.make_node("PRelu", ["c0", "slope"], ["r0"], name="prelu0"))
    _, report = quantizer.quantize_with_report(model, "samples", scale=2, num=4, patch=16)
    doubling = next(a for a in report.alternatives if a.option == "--prelu-relu")
    assert doubling.macs_ratio > 1.5
    assert doubling.htp_ratio is not None and doubling.htp_ratio < 1
