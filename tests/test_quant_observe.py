"""Activation statistics: the channel-weighted histogram and the consumer weights that feed ``auto``."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from etc.quant import observe


def _chain(rng, extra_reader: bool = False):
    """x -> Conv(3->2) -> Relu -> t -> Conv(2->3) -> y; channel 0 of t read 10x harder than channel 1."""
    w1 = rng.normal(0, 0.5, size=(2, 3, 1, 1)).astype(np.float32)
    b1 = np.array([0.1, 0.2], np.float32)
    w2 = rng.normal(0, 0.1, size=(3, 2, 3, 3)).astype(np.float32)
    w2[:, 0] *= 10.0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["t"], name="relu1"),
        helper.make_node("Conv", ["t", "w2"], ["y0" if extra_reader else "y"], pads=[1] * 4, name="conv2"),
    ]
    if extra_reader:
        nodes.append(helper.make_node("Add", ["y0", "t"], ["y"], name="add"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, None, None])],
        [numpy_helper.from_array(v, n) for n, v in {"w1": w1, "b1": b1, "w2": w2}.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model, w2


def test_consumer_weights_are_column_energies(rng):
    model, w2 = _chain(rng)
    got = observe.consumer_weights(model, ["t", "y"])
    assert list(got) == ["t"]  # y is a graph output
    np.testing.assert_allclose(got["t"], (w2.astype(np.float64) ** 2).sum(axis=(0, 2, 3)), rtol=1e-6)


def test_negative_consumer_weights_need_conv_readers_only(rng):
    model, _ = _chain(rng, extra_reader=True)
    assert observe.consumer_weights(model, ["t"]) == {}


def test_weighted_histogram_counts_each_channel_by_its_weight(rng):
    model, _ = _chain(rng)
    feeds = [{"x": rng.uniform(0, 1, size=(1, 3, 8, 9)).astype(np.float32)} for _ in range(3)]
    plain = observe.collect(model, feeds, ["t"])["t"]
    assert plain.weighted is None
    only0 = observe.collect(model, feeds, ["t"], channel_weights={"t": np.array([1.0, 0.0])})["t"]
    values = np.concatenate([v["t"][:, 0].ravel() for v in observe.run_tensors(model, feeds, ["t"])])
    want, _ = np.histogram(values, bins=observe.BINS, range=(only0.lo, only0.hi))
    np.testing.assert_allclose(only0.weighted, want)
    np.testing.assert_allclose(only0.hist, plain.hist)  # the plain histogram is unchanged


def _stats(hist: np.ndarray, weighted: np.ndarray | None) -> observe.TensorStats:
    z = np.zeros(1)
    return observe.TensorStats("t", z, np.ones(1), z, z, hist, 0.0, 1.0, weighted)


def test_auto_weighs_errors_by_the_weighted_histogram():
    """Many light values near 0 and a thin heavy tail up to 1: the plain histogram clips the tail for a finer
    step, the weighted one (tail read 100x harder) keeps it."""
    hist = np.zeros(observe.BINS)
    hist[: observe.BINS // 8] = 1000.0
    tail = np.zeros(observe.BINS)
    tail[observe.BINS // 8 :] = 0.1
    plain = _stats(hist + tail, None)
    weighted = _stats(hist + tail, hist + 100.0 * tail)
    assert observe.choose_range(plain, "auto")[1] < 0.99
    assert observe.choose_range(weighted, "auto")[1] == 1.0
    assert observe.expected_error(weighted, 0.0, 0.5) > observe.expected_error(plain, 0.0, 0.5)
