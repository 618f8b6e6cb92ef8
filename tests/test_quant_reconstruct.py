"""Block reconstruction (etc.quant.reconstruct) and PReLU input ranges (etc.quant.prelu_ranges)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc import proto, runtime, zoo
from etc.frontends.torch import export
from etc.quant import observe, prelu_ranges, qdq, quantizer, reconstruct
from etc.quant.refit import FitProblem
from tests.conftest import shared_pretrained
from tests.test_quant_equalize import _chain

FAST = reconstruct.Settings(iters=40, seconds=120.0, crop=12, batch=4)  # bounded by steps: deterministic


@pytest.fixture(scope="module")
def etds_small():
    """The official plain ETDS M5C16 x4 with its pretrained weights, and calibration crops of a real photo."""
    root = shared_pretrained()
    if root is None or not (root / "ETDS" / "ETDS_M5C16_x4.pth").is_file():
        pytest.skip("ETDS_M5C16_x4.pth is absent")
    model = export(zoo.build("etds", scale=4, M=5, C=16, pretrained=True), exporter="legacy")
    from skimage import data

    img = data.astronaut()[::4, ::4].astype(np.float32) / 255.0  # 128x128x3
    crops = [img[r : r + 21, c : c + 19].transpose(2, 0, 1)[None] for r in (0, 100) for c in (5, 60)]
    return quantizer._ensure_named(model), [np.ascontiguousarray(p) for p in crops]


def _block_errors(model, qmodel, plan, blocks, feeds) -> dict[str, float]:
    """Mean squared error of each block's output (fused Relu output, dequantized) against the FP32 model."""
    outputs = [plan.fused.get(c, c) for c in blocks]
    by_out = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in qmodel.graph.node if n.op_type == "DequantizeLinear"}
    quantized = [dq_of[by_out[o].output[0]] if o in by_out else o for o in outputs]
    ref = list(observe.run_tensors(model, feeds, outputs))
    got = list(observe.run_tensors(qmodel, feeds, quantized))
    return {
        o: float(np.mean([np.mean((r[o] - g[q]) ** 2) for r, g in zip(ref, got)]))
        for o, q in zip(outputs, quantized)
    }


def test_reconstruction_beats_nearest_rounding_on_every_block_of_a_real_model(etds_small):
    model, patches = etds_small
    feeds = [{model.graph.input[0].name: p} for p in patches]
    common = dict(scale=4, num=len(patches), equalize=False, bias_correction=False)
    _, report = quantizer.quantize_with_report(model, patches, rounding="nearest", **common)
    plan = qdq.plan_qdq(model)
    caps, _ = quantizer.clip_structures(model)
    problem = FitProblem(model, model, plan, report.ranges, feeds, True, False, skip_inputs=frozenset(caps))
    learned, grids, blocks = reconstruct.reconstruct(problem, settings=FAST)
    assert len(blocks) == len(plan.convs) - len(caps)  # every Conv but the exact clip
    assert all(b.steps > 0 and b.kept in ("learned", "refit") for b in blocks)
    q_learned = qdq.build_qdq(learned, plan, report.ranges, safe_u8s8=False, grids=grids)
    q_nearest = qdq.build_qdq(model, plan, report.ranges, safe_u8s8=False)
    conv_out = {n.name: n.output[0] for n in model.graph.node}
    names = [conv_out[b.conv] for b in blocks]
    after = _block_errors(model, q_learned, plan, names, feeds)
    before = _block_errors(model, q_nearest, plan, names, feeds)
    for name in after:
        assert after[name] < before[name], (name, after[name], before[name])


def test_reconstructed_model_is_a_valid_qdq_model_with_int8_weights(etds_small, monkeypatch):
    model, patches = etds_small
    monkeypatch.setattr(reconstruct, "DEFAULT", FAST)
    qmodel, report = quantizer.quantize_with_report(
        model, patches[:3], scale=4, num=3, rounding="reconstruct"
    )
    onnx.checker.check_model(qmodel)
    assert report.rounding == "reconstruct" and report.blocks
    assert {n.op_type for n in qmodel.graph.node} <= {
        "QuantizeLinear",
        "DequantizeLinear",
        "Conv",
        "Relu",
        "DepthToSpace",
    }
    consts = qdq.constants(qmodel)
    weights = [
        n.input[0] for n in qmodel.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.name
    ]
    assert len(weights) == sum(n.op_type == "Conv" for n in qmodel.graph.node)
    assert all(consts[w].dtype == np.int8 and np.abs(consts[w].astype(int)).max() <= 127 for w in weights)
    x = patches[0]
    got = runtime.run(runtime.session(qmodel), {model.graph.input[0].name: x})
    ref = runtime.run(model, {model.graph.input[0].name: x})
    name = model.graph.output[0].name
    assert np.abs(got[name] - ref[name]).mean() < 0.02  # an image in [0, 1], close to FP32


def test_prelu_range_drops_negative_values_the_slope_throws_away(rng):
    """Channel 0 (slope 0) holds large negatives that never leave the PReLU; channel 1 (slope 1) is linear."""
    z = np.concatenate([rng.uniform(-8, 1, 4000), rng.uniform(-1, 2, 4000)])
    alpha0 = np.where(z[:4000] < 0, 0.0, 1.0)
    alpha1 = np.ones(4000)
    lo, hi = prelu_ranges.best_range(z, np.concatenate([alpha0, alpha1]))
    assert -2.5 < lo <= -1.0 and hi == pytest.approx(2.0, rel=0.01)  # the slope-1 negatives are kept
    lo_all, _ = prelu_ranges.best_range(z, np.ones_like(z))  # every value weighted alike: keep the -8 tail
    assert lo_all < -7


def test_prelu_input_ranges_apply_only_to_kept_prelus(rng):
    model = _chain(rng, c=6, act="PRelu")
    images = [rng.uniform(0, 1, size=(1, 3, 15, 13)).astype(np.float32) for _ in range(4)]
    _, kept = quantizer.quantize_with_report(model, images, scale=1, num=4)  # the default keeps PReLU
    assert kept.methods["c1"] == "prelu" and kept.ranges["c1"][0] < 0 < kept.ranges["c1"][1]
    _, relu = quantizer.quantize_with_report(model, images, scale=1, num=4, prelu_to_relu=True)
    assert relu.prelu_to_relu == 1 and "prelu" not in relu.methods.values()


def test_prelu_input_ranges_lower_the_output_error_of_a_kept_prelu(rng, monkeypatch):
    """Half the PReLU channels have slope 0 and large negative inputs: ignoring them gives the positive values a
    finer step, and the QDQ model (onnxruntime) ends closer to FP32 on held-out inputs."""
    model = _chain(rng, c=8, act="PRelu")
    consts = {i.name: i for i in model.graph.initializer}
    slope = onnx.numpy_helper.to_array(consts["slope"]).copy()
    slope[:4] = 0.0
    b1 = onnx.numpy_helper.to_array(consts["b1"]).copy()
    b1[:4] -= 6.0
    proto.set_initializer(model, "slope", slope)
    proto.set_initializer(model, "b1", b1)
    images = [rng.uniform(0, 1, size=(1, 3, 15, 13)).astype(np.float32) for _ in range(6)]
    held = [rng.uniform(0, 1, size=(1, 3, 17, 11)).astype(np.float32) for _ in range(3)]
    common = dict(scale=1, num=6, prelu_to_relu=False, equalize=False)

    def error(qmodel) -> float:
        ref = [runtime.run(model, {"x": x})["c3"] for x in held]
        got = [runtime.run(runtime.session(qmodel), {"x": x})["c3"] for x in held]
        return float(np.mean([np.mean((a - b) ** 2) for a, b in zip(ref, got)]))

    q_weighted, report = quantizer.quantize_with_report(model, images, **common)
    monkeypatch.setattr(prelu_ranges, "prelu_input_ranges", lambda *a, **k: {})
    q_plain, plain = quantizer.quantize_with_report(model, images, **common)
    assert report.ranges["c1"][0] > 0.5 * plain.ranges["c1"][0]  # the slope-0 negatives are not covered
    assert error(q_weighted) < error(q_plain)
