"""Equalization is exact in FP32 (onnxruntime, optimizations off, odd sizes) and fires only where it may."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from etc.pipeline import NumericCheck, run_pipeline
from etc.quant import equalize
from etc.quant.observe import collect
from etc.testing import assert_equivalent, image_model, random_conv_weights


def _chain(rng, act: str = "Relu", c: int = 6, clip_tail: bool = False, out_extra: bool = False):
    """x -> Conv(3->c) -> act -> Conv(c->c, k3) -> Relu -> Conv(c->4) [-> Relu -> Conv1x1(-I, 1) -> Relu]."""
    w1, b1 = random_conv_weights(rng, c, 3, 3, 3)
    w1[-1] *= 0.05  # a low-range channel: worth rescaling
    w2, b2 = random_conv_weights(rng, c, c, 3, 3)
    w3, b3 = random_conv_weights(rng, 4, c, 3, 3)
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    if act == "PRelu":
        inits["slope"] = rng.uniform(-0.3, 0.3, size=(c, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("PRelu", ["c1", "slope"], ["a1"], name="act1"))
    else:
        nodes.append(helper.make_node(act, ["c1"], ["a1"], name="act1"))
    nodes += [
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
    ]
    last = "c3"
    if clip_tail:
        inits["w3"] = -inits["w3"]
        inits["b3"] = (1.0 - inits["b3"]).astype(np.float32)
        inits["wc"] = -np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
        inits["bc"] = np.ones(4, np.float32)
        nodes += [
            helper.make_node("Relu", ["c3"], ["a3"], name="act3"),
            helper.make_node("Conv", ["a3", "wc", "bc"], ["c4"], name="clip"),
            helper.make_node("Relu", ["c4"], ["y"], name="act4"),
        ]
        last = "y"
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 4, "h", "w"])]
    if out_extra:
        outputs.append(helper.make_tensor_value_info("a1", TensorProto.FLOAT, [1, c, "h", "w"]))
    model = image_model(nodes, outputs, inits)
    return model


def _feeds(rng, n=3):
    return [{"x": rng.uniform(0, 1, size=(1, 3, 13, 11)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("act", ["Relu", "PRelu", "LeakyRelu"])
def test_equalization_is_exact(rng, act):
    model = _chain(rng, act)
    pairs = equalize.find_pairs(model)
    assert [p.tensor for p in pairs] == ["a1", "a2"]
    scales = rng.uniform(0.2, 8.0, size=6)
    out = equalize.apply_scales(model, pairs[0], scales)
    assert_equivalent(model, out, atol=1e-5)
    w_before = numpy_helper.to_array(model.graph.initializer[0])
    w_after = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}[out.graph.node[0].input[1]]
    np.testing.assert_allclose(w_after, w_before * scales.reshape(-1, 1, 1, 1).astype(np.float32), rtol=1e-6)


def test_clip_conv_bias_scales_with_its_rows(rng):
    """Scaling the rows of Conv(-W, 1-b) scales the constant 1 of its bias too; the result stays exact."""
    model = _chain(rng, clip_tail=True)
    pair = next(p for p in equalize.find_pairs(model) if p.tensor == "a3")
    out = equalize.apply_scales(model, pair, np.array([2.0, 3.0, 0.5, 4.0]))
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    conv3 = next(n for n in out.graph.node if n.name == "conv3")
    b_before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["b3"]
    np.testing.assert_allclose(inits[conv3.input[2]], b_before * [2.0, 3.0, 0.5, 4.0], rtol=1e-6)
    assert_equivalent(model, out, atol=1e-5)


def test_equalize_picks_scales_and_passes_numeric_check(rng):
    from etc.quant.equalize import EqualizePass

    model = _chain(rng)
    check = NumericCheck()
    eq = EqualizePass(feeds=_feeds(rng))
    result = run_pipeline(model, [eq], instruments=[check], max_rounds=1)
    assert eq.records and result.hits == {"equalize/equalize": len(eq.records)}
    assert all(r.max_scale > 1.0 or r.min_scale < 1.0 for r in eq.records)
    assert max(check.worst.values()) < 1e-5
    assert_equivalent(model, result.model)


def test_negative_non_homogeneous_activation(rng):
    model = _chain(rng, act="Sigmoid")
    assert [p.tensor for p in equalize.find_pairs(model)] == ["a2"]  # sigmoid(a z) != a sigmoid(z)


def test_negative_tensor_is_graph_output(rng):
    model = _chain(rng, out_extra=True)
    assert "a1" not in [p.tensor for p in equalize.find_pairs(model)]


def test_negative_clip_input_is_skipped(rng):
    model = _chain(rng, clip_tail=True)
    feeds = _feeds(rng)
    stats = collect(model, feeds, ["a1", "a2", "a3"])
    _, records = equalize.equalize(model, stats, skip={"a3"})
    assert "a3" not in [r.tensor for r in records]


def test_scales_must_be_positive(rng):
    model = _chain(rng)
    pair = equalize.find_pairs(model)[0]
    with pytest.raises(ValueError, match="positive"):
        equalize.apply_scales(model, pair, np.array([1, 1, 1, 1, 1, -2.0]))


def test_choose_scales_leaves_balanced_tensors_alone(rng):
    w = rng.normal(size=(4, 4, 3, 3))
    scales, alpha = equalize.choose_scales([w], np.ones(4), np.ones(4))
    assert alpha == 0.0 and np.all(scales == 1.0)


def test_choose_scales_brings_a_single_outlier_channel_down(rng):
    w = rng.normal(size=(6, 6, 3, 3))
    ranges = np.array([11.5, 3.0, 2.8, 2.5, 1.0, 0.7])
    sq = (ranges / 3) ** 2
    scales, _ = equalize.choose_scales([w], ranges, sq)
    assert scales[0] < np.median(scales[1:])
    noise = equalize.estimated_noise([w], ranges, sq, scales)
    assert noise < equalize.estimated_noise([w], ranges, sq, np.ones(6)) * (1 - equalize.MIN_GAIN)
    assert np.all(scales >= 1 / equalize.MAX_SCALE) and np.all(scales <= equalize.MAX_SCALE)


def test_candidate_scales_keep_dead_channels_and_cover_the_classic_family():
    ranges = np.array([4.0, 2.0, 1.0, 0.0])
    cands = list(equalize.candidate_scales(ranges))
    assert all(s[3] == 1.0 for s, _, _ in cands)
    classic = [s for s, a, t in cands if t == 4.0 and a == 1.0]
    assert np.allclose(classic[0][:3], [1.0, 2.0, 4.0])


def test_activation_noise_is_weighed_linearly(rng):
    w = rng.normal(size=(4, 4, 3, 3))
    ranges, sq, scales = np.array([8.0, 1.0, 2.0, 1.0]), np.ones(4), np.array([0.25, 1.0, 0.5, 1.0])
    weight_only = equalize.estimated_noise([w], ranges, sq, scales, act_weight=0.0)
    act = equalize.estimated_noise([w], ranges, sq, scales, act_weight=1.0) - weight_only
    assert act > 0 and weight_only > 0
    default = equalize.estimated_noise([w], ranges, sq, scales)
    assert default == pytest.approx(weight_only + equalize.ACT_WEIGHT * act)
