"""Channel duplication is exact in FP32 (onnxruntime, optimizations off, odd sizes) and fires only where it may."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from etc.pipeline import NumericCheck, run_pipeline
from etc.quant import split
from etc.testing import assert_equivalent, assert_int8_close, image_model, op_types, random_conv_weights


def _model(
    rng,
    *,
    c: int = 6,
    k: int = 3,
    act: str | None = "Relu",
    group1: int = 1,
    group2: int = 1,
    dominant: int = 2,
    out_extra: bool = False,
    reader: str = "Conv",
    pads: int | None = None,
):
    """x -> Conv(3->c, k) -> [act] -> t -> Conv(c->4, k) -> y, column ``dominant`` of the second Conv 10x larger."""
    p = k // 2 if pads is None else pads
    w1, b1 = random_conv_weights(rng, c, 3 // group1, k, k)
    w2, b2 = random_conv_weights(rng, 4, c // group2, k, k)
    if group2 == 1:
        w2[:, dominant] *= 10.0
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[p] * 4, group=group1, name="conv1")]
    t = "c1"
    if act is not None:
        attrs = {"alpha": 0.2} if act == "LeakyRelu" else {}
        nodes.append(helper.make_node(act, ["c1"], ["t"], name="act1", **attrs))
        t = "t"
    if reader == "Conv":
        nodes.append(
            helper.make_node("Conv", [t, "w2", "b2"], ["y"], pads=[p] * 4, group=group2, name="conv2")
        )
    else:  # the tensor is also added to itself: a non-Conv reader
        nodes.append(helper.make_node("Conv", [t, "w2", "b2"], ["y0"], pads=[p] * 4, name="conv2"))
        nodes.append(helper.make_node("Add", [t, t], ["y1"], name="add"))
        nodes.append(helper.make_node("ReduceSum", ["y1"], ["y2"], keepdims=1, name="sum"))
        nodes.append(helper.make_node("Add", ["y0", "y2"], ["y"], name="add2"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, None, None])]
    if out_extra:
        outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, c, None, None]))
    model = image_model(nodes, outputs, inits)
    return model


def _width(model, tensor_producer: str = "conv1") -> int:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == tensor_producer)
    return inits[node.input[1]].shape[0]


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", None])
def test_duplication_is_exact(rng, act):
    model = _model(rng, act=act)
    site = split.find_sites(model)[0]
    copies = np.array([1, 1, 3, 1, 2, 1])
    out = split.duplicate(model, site, copies)
    assert op_types(out) == op_types(model)
    assert _width(out) == 6 + 3
    assert_equivalent(model, out, atol=1e-5)


def test_split_channels_copies_the_dominant_channel_and_passes_numeric_check(rng):
    from etc.quant.split import SplitPass

    model = _model(rng)
    check = NumericCheck()
    sp = SplitPass(max_copies=3)
    result = run_pipeline(model, [sp], instruments=[check], max_rounds=1)
    assert [(r.tensor, r.added, r.max_copies) for r in sp.records] == [("t", 2, 3)]
    assert result.hits == {"split/split": 1}
    assert max(check.worst.values()) < 1e-5
    assert_equivalent(model, result.model)
    inits = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    conv2 = next(n for n in result.model.graph.node if n.name == "conv2")
    w2 = inits[conv2.input[1]]
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["w2"]
    assert w2.shape == (4, 8, 3, 3)
    assert np.abs(w2).max() == pytest.approx(np.abs(before).max() / 3, rel=1e-6)  # the row max shrinks 3x


@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(2, 7),
    k=st.sampled_from([1, 3, 5]),
    pads=st.integers(0, 2),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_duplication_is_exact_property(c, k, pads, seed, data):
    rng = np.random.default_rng(seed)
    model = _model(rng, c=c, k=k, pads=min(pads, k // 2), dominant=0)
    copies = np.array(data.draw(st.lists(st.integers(1, 4), min_size=c, max_size=c)))
    out = split.duplicate(model, split.find_sites(model)[0], copies)
    assert _width(out) == int(copies.sum())
    assert_equivalent(model, out, sizes=((11, 13), (12, 9)), atol=1e-5)


def test_channel_order_keeps_copies_out_of_one_kernel_pair():
    order = split.channel_order(np.array([1, 3, 1, 1, 2, 1, 1]))
    assert sorted(order) == [0, 1, 1, 1, 2, 3, 4, 4, 5, 6]
    for i in range(0, len(order) - 1, 2):
        assert order[i] != order[i + 1]


def test_choose_copies_only_for_dominated_rows(rng):
    w = rng.normal(0, 0.1, size=(4, 5, 3, 3))
    w[:, 4] = np.clip(w[:, 4], -0.1, 0.1)
    assert np.all(split.choose_copies([w]) == 1)
    w[0, 2, 1, 1] = 2.0  # row 0 dominated by channel 2
    copies = split.choose_copies([w], max_copies=3)
    assert copies.tolist() == [1, 1, 3, 1, 1]
    assert split.choose_copies([w], max_copies=1).tolist() == [1] * 5


def test_copies_grow_with_the_dominance_ratio():
    w = np.full((3, 4, 1, 1), 0.1)
    w[0, 0] = 0.3  # 3x the runner-up: two copies
    w[1, 1] = 0.7  # 7x: ceil(7 / 2) = 4 copies
    w[2, 2] = 1.1  # 11x: 6 copies, capped
    assert split.choose_copies([w], max_copies=4).tolist() == [2, 4, 4, 1]
    assert split.choose_copies([w], max_copies=4, per_copy=1.0).tolist() == [3, 4, 4, 1]
    assert split.choose_copies([w], max_copies=8).tolist() == [2, 4, 6, 1]


def test_copies_must_be_whole_and_positive(rng):
    model = _model(rng)
    site = split.find_sites(model)[0]
    with pytest.raises(ValueError, match="whole"):
        split.duplicate(model, site, np.array([1, 1, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="whole"):
        split.duplicate(model, site, np.array([1.0, 1, 2, 1, 1, 1]))


def _reason(model) -> str:
    node = next(n for n in model.graph.node if n.name == "conv1")
    found = split.check_site(model, node)
    assert isinstance(found, split.NoSite)
    return found.reason


def test_negative_grouped_producer(rng):
    assert "grouped" in _reason(_model(rng, group1=3))


def test_negative_grouped_consumer(rng):
    assert "grouped" in _reason(_model(rng, group2=2))


def test_negative_non_elementwise_activation(rng):
    assert "not Relu/LeakyRelu" in _reason(_model(rng, act="Sigmoid"))


def test_negative_tensor_is_graph_output(rng):
    assert "graph output" in _reason(_model(rng, out_extra=True))


def test_negative_reader_is_not_a_conv(rng):
    assert "not a Conv" in _reason(_model(rng, reader="Add"))


def test_negative_tensor_read_as_weight(rng):
    model = _model(rng, c=3, k=1, act=None)
    model.graph.node.append(helper.make_node("Conv", ["x", "c1"], ["z"], name="conv3"))
    assert "constant weights" in _reason(model)


def test_skipped_tensors_are_left_alone(rng):
    model = _model(rng)
    out, records = split.split_channels(model, skip={"t"})
    assert records == [] and out is model


def test_quantizer_widens_dominated_channels_and_stays_close(rng):
    from etc.quant import quantizer

    model = _model(rng, c=6)
    images = [rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32) for _ in range(4)]
    qmodel, report = quantizer.quantize_with_report(model, images, scale=1, num=4, split=2, target="native")
    assert [(r.tensor, r.added) for r in report.split] == [("t", 1)]
    _, off = quantizer.quantize_with_report(model, images, scale=1, num=4, split=1)
    assert off.split == []
    assert_int8_close(
        model, qmodel, {"x": images[0]}
    )  # native target: the fused kernel computes the QDQ graph
