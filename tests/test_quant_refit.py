"""Sequential refit (etc.quant.refit), the closing summary (etc.quant.summary) and the MACs cost of copies."""

from __future__ import annotations

import numpy as np
import pytest

from etc import proto, runtime
from etc.cost import conv_macs_per_pixel
from etc.quant import qdq, quantizer, refit, summary
from tests.test_quant_equalize import _chain


def _images(rng, n=6, size=(1, 3, 17, 15)):
    return [rng.uniform(0, 1, size=size).astype(np.float32) for _ in range(n)]


def _output_error(model, qmodel, images, name):
    ref = [runtime.run(model, {"x": x})[name] for x in images]
    got = [runtime.run(runtime.session(qmodel), {"x": x})[name] for x in images]
    return float(np.mean([np.mean((a - b) ** 2) for a, b in zip(ref, got)]))


def test_fit_layer_recovers_weights_already_on_the_grid(rng):
    """Unquantized input and weights already on their int8 grid: the fit gives them back exactly."""
    w = rng.normal(size=(5, 4, 3, 3))
    scales = qdq.weight_scales(w, safe_u8s8=False)
    q = qdq.quantize_weight(w, scales)
    w_grid = q.astype(np.float64) * scales.reshape(-1, 1, 1, 1)
    b = rng.normal(size=5)
    xs = [rng.uniform(0, 1, size=(1, 4, 15, 13)) for _ in range(4)]
    ys = []
    for x in xs:
        cols = refit.rounding.im2col(x, (3, 3), (1, 1, 1, 1), step=1)
        ys.append((w_grid.reshape(5, -1) @ cols + b[:, None]).reshape(1, 5, 15, 13))
    got_q, got_scales, got_b = refit.fit_layer(
        w_grid, b, xs, ys, (1, 1, 1, 1), lambda v: qdq.weight_scales(v, safe_u8s8=False), ridge=1e-6
    )
    np.testing.assert_allclose(got_scales, scales, rtol=1e-4)
    assert np.array_equal(got_q, q)
    np.testing.assert_allclose(got_b, b, atol=1e-6)


def test_refit_beats_plain_gptq_on_the_output(rng):
    """Each Conv refitted from its quantized input: lower output error against FP32 than GPTQ alone."""
    model = _chain(rng, c=12)
    images = _images(rng)
    common = dict(scale=1, num=len(images), equalize=False, bias_correction=False)
    q_gptq, _ = quantizer.quantize_with_report(model, images, rounding="gptq", **common)
    q_refit, report = quantizer.quantize_with_report(model, images, rounding="refit", **common)
    assert report.rounding == "refit"
    held = _images(rng, n=3)
    assert _output_error(model, q_refit, held, "c3") < _output_error(model, q_gptq, held, "c3")


def test_refit_keeps_exact_clip_convs(rng):
    """The clip Conv (exact range, -I weights) is not refitted: its int8 weights stay -127·I."""
    model = _chain(rng, c=8, clip_tail=True)
    qmodel, report = quantizer.quantize_with_report(model, _images(rng), scale=1, num=6)
    clip = next(i for i in qmodel.graph.initializer if i.name.startswith("clip_weight_quantized"))
    w = np.asarray(qdq.constants(qmodel)[clip.name]).reshape(4, 4)
    assert np.array_equal(w, -127 * np.eye(4, dtype=np.int8)) and report.methods["y"] == "exact"


def test_default_adds_no_macs_and_copies_report_their_cost(rng):
    from tests.test_quant_split import _model

    model = _model(rng, c=6)  # one input channel dominates the second Conv's rows: split copies it
    images = _images(rng)
    q1, _ = quantizer.quantize_with_report(model, images, scale=1, num=6)
    q4, rep4 = quantizer.quantize_with_report(model, images, scale=1, num=6, split=4)
    assert conv_macs_per_pixel(q1) == conv_macs_per_pixel(model)
    assert rep4.split and conv_macs_per_pixel(q4) > conv_macs_per_pixel(model)
    figures = summary.summarize(model, q4, scale=1, calib=None, patch=8, latency_size=(24, 20))
    assert figures.macs_ratio == pytest.approx(conv_macs_per_pixel(q4) / conv_macs_per_pixel(model))
    assert figures.fp32_ms > 0 and figures.int8_ms > 0 and figures.heldout_drop is None
    text = "\n".join(figures.lines())
    assert "conv MACs INT8 / FP32" in text and "latency at 1x3x24x20" in text and figures.cpu in text


def test_heldout_patches_are_aligned_lr_hr_crops():
    pairs = summary.heldout_pairs("samples", 2, num=3, patch=16, seed=1000)
    assert len(pairs) == 3
    for p in pairs:
        assert p.lr.shape == (16, 16, 3) and p.hr.shape == (32, 32, 3)
        from etc.quant.calib import bicubic_downscale

        assert np.abs(bicubic_downscale(p.hr, 2).astype(int) - p.lr.astype(int)).mean() < 12


def test_range_search_never_raises_the_calibration_error(rng):
    model = _chain(rng, c=8)
    images = _images(rng)
    _, base = quantizer.quantize_with_report(model, images, scale=1, num=6)
    _, searched = quantizer.quantize_with_report(model, images, scale=1, num=6, range_search=True)
    assert searched.search_after <= searched.search_before
    assert searched.search_before > 0 and base.search_before == 0.0  # off by default
    moved = [n for n in searched.ranges if searched.ranges[n] != base.ranges[n]]
    assert "x" not in moved  # the graph input keeps its declared range


def test_finetune_is_judged_on_held_out_patches_and_kept_only_if_better(rng):
    model = _chain(rng, c=8)
    images = _images(rng, n=8)
    qmodel, report = quantizer.quantize_with_report(model, images, scale=1, num=8, finetune_steps=30)
    assert report.finetune.startswith("held-out output MSE")
    before, after = (float(v) for v in report.finetune.split(": ")[0].split()[-3::2])
    assert (after < before) != report.finetune.endswith("not kept")
    weights = [i for i in qmodel.graph.initializer if i.name.endswith("weight_quantized")]
    assert weights and all(abs(int(np.abs(qdq.constants(qmodel)[w.name]).max())) <= 127 for w in weights)


def test_finetune_declines_graphs_it_cannot_simulate(rng):
    from etc.quant import finetune

    model = _chain(rng, c=8, act="Sigmoid")
    plan = qdq.plan_qdq(model)
    reason = finetune.unsupported(model, plan)
    assert reason is not None and "Sigmoid" in reason
    assert finetune.unsupported(_chain(rng, c=8), qdq.plan_qdq(_chain(rng, c=8))) is None


def test_finetune_simulation_matches_onnxruntime(rng):
    """The torch simulation of the QDQ graph agrees with onnxruntime (optimizations off) before training."""
    import torch

    from etc.quant import finetune

    model = _chain(rng, c=8)
    model.graph.node.append(
        __import__("onnx").helper.make_node("DepthToSpace", ["c3"], ["y"], blocksize=2, mode="CRD")
    )
    model.graph.output[0].CopyFrom(
        __import__("onnx").helper.make_tensor_value_info("y", __import__("onnx").TensorProto.FLOAT, None)
    )
    plan = qdq.plan_qdq(model)
    ranges = {"x": (0, 1), "a1": (0, 2), "a2": (0, 2), "c3": (-2, 2)}
    grids = {
        c: qdq.weight_scales(qdq.constants(model)[n.input[1]], safe_u8s8=False)
        for n in model.graph.node
        if (c := n.name) in plan.convs
    }
    on_grid = model
    for node in model.graph.node:
        if node.name in grids:
            w = qdq.constants(model)[node.input[1]]
            q = qdq.quantize_weight(w, grids[node.name]).astype(np.float64) * grids[node.name].reshape(
                -1, 1, 1, 1
            )
            proto.set_initializer(on_grid, node.input[1], q)
    sim = finetune._Sim(on_grid, plan, ranges, grids)
    x = _images(rng, n=1)[0]
    got = sim(torch.tensor(x)).detach().numpy()
    ref = runtime.run(
        runtime.session(qdq.build_qdq(on_grid, plan, ranges, safe_u8s8=False, grids=grids)), {"x": x}
    )["y"]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2 * 4 / 255)  # at most a rounding step where a tie fell apart
    assert np.mean(np.abs(got - ref) < 1e-5) > 0.98
