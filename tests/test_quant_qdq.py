"""QDQ placement, int8 weight grids that cannot saturate u8s8 kernels, exact clip ranges, quantizer end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc import runtime
from etc.quant import qdq, quantizer
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


def test_safe_weight_grid_cannot_saturate(rng):
    w = rng.normal(size=(8, 16, 3, 3))
    w[0] *= 0.05
    w[0, 0, 1, 1] = 5.0  # one dominant weight keeps nearly the full grid
    scales = qdq.weight_scales(w, per_channel=True, safe_u8s8=True)
    q = qdq.quantize_weight(w, scales)
    assert qdq.u8s8_safe(q)
    assert np.abs(q[0]).max() >= 120
    assert not qdq.u8s8_safe(qdq.quantize_weight(w, qdq.weight_scales(w, safe_u8s8=False)))
    clip = -np.eye(4).reshape(4, 4, 1, 1)
    assert np.all(qdq.quantize_weight(clip, qdq.weight_scales(clip)) == -127 * np.eye(4).reshape(4, 4, 1, 1))


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
    qmodel, report = quantizer.quantize_with_report(model, [f["x"] for f in feeds], scale=1, num=4)
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
    qmodel, report = quantizer.quantize_with_report(model, images, scale=1, num=4)
    assert report.prelu_to_relu == 1 and "PRelu" not in report.ops
    plan = qdq.plan_qdq(relu)
    assert len(plan.fused) == 2 and len(plan.convs) == 3  # both hidden Convs fuse with a Relu
    ref = runtime.run(model, feeds[0])["c3"]
    got = runtime.run(runtime.session(qmodel, optimize=True), feeds[0])["c3"]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
    _, report = quantizer.quantize_with_report(model, images, scale=1, num=4, prelu_to_relu=False)
    assert report.prelu_to_relu == 0 and report.ops["PRelu"] == 1


def test_relu_form_leaves_models_without_prelu_alone(rng):
    model = _chain(rng)
    assert quantizer.relu_form(model) == (model, 0)
