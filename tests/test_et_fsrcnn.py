"""FSRCNN end to end: `fold,rep,et` with --prelu turns it into Conv/Relu/DepthToSpace only, equivalently.

FSRCNN = Conv5x5 PReLU, Conv1x1 PReLU, 4x (Conv3x3 PReLU), Conv1x1 PReLU, ConvTranspose9x9 stride s.
After: 8 Conv (the transposed conv as a phase conv), 7 Relu (each PReLU on doubled channels), 1 DepthToSpace.
Both exporters are covered with random weights (the graphs differ only in names and slope shapes); the real
weights go through the faster legacy exporter.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc import api, runtime, zoo
from etc.graph import op_histogram

torch = pytest.importorskip("torch")
from etc.frontends.torch import export  # noqa: E402

PLAIN = {"Conv": 8, "Relu": 7, "DepthToSpace": 1}


def optimize(model: onnx.ModelProto, prelu: bool = True):
    return api.optimize(model, "fold,rep,et", prelu_to_relu=prelu)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, h, w), dtype=np.float32)


def max_abs(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    (name,) = [i.name for i in a.graph.input]
    ya, yb = runtime.run(a, {name: x}), runtime.run(b, {name: x})
    return max(float(np.abs(ya[k].astype(np.float64) - yb[k]).max()) for k in ya)


def assert_plain_fsrcnn(result: onnx.ModelProto, scale: int) -> None:
    assert op_histogram(result) == PLAIN
    d2s = next(n for n in result.graph.node if n.op_type == "DepthToSpace")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in d2s.attribute}
    assert attrs == {"blocksize": scale, "mode": b"CRD"}
    assert result.graph.node[-1].op_type == "DepthToSpace"


@pytest.fixture(scope="module")
def random_fsrcnn() -> dict[tuple[str, bool], onnx.ModelProto]:
    """Random-init FSRCNN x2 exported by both exporters with dynamic H/W, and statically by the legacy one."""
    net = zoo.build("fsrcnn", scale=2, seed=3)
    return {
        ("legacy", True): export(net, exporter="legacy"),
        ("legacy", False): export(net, exporter="legacy", dynamic_hw=False),
        ("dynamo", True): export(net, exporter="dynamo"),
    }


@pytest.mark.parametrize(
    "exporter,dynamic",
    [("legacy", True), ("legacy", False), ("dynamo", True)],
    ids=["legacy", "static", "dynamo"],
)
def test_random_fsrcnn_becomes_plain_and_equivalent(random_fsrcnn, exporter, dynamic, photo):
    model = random_fsrcnn[(exporter, dynamic)]
    result, report = optimize(model)
    assert_plain_fsrcnn(result, 2)
    assert report.verification.equivalent
    assert not report.remaining
    if dynamic:
        for h, w in ((17, 23), (8, 5), (64, 64)):
            assert max_abs(model, result, noise(h, w)) <= 1e-5
    else:
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert max_abs(model, result, noise(shape[2], shape[3])) <= 1e-5
    if dynamic:
        assert max_abs(model, result, photo) <= 1e-5


def test_without_prelu_the_prelus_stay_and_the_cost_is_explained(random_fsrcnn):
    model = random_fsrcnn[("legacy", True)]
    result, report = optimize(model, prelu=False)
    ops = op_histogram(result)
    assert ops.get("PRelu") == 7 and "ConvTranspose" not in ops
    reasons = [d.reason for d in report.pipeline.declines if d.rule == "prelu_to_relu"]
    assert reasons and all("--prelu" in r for r in reasons)


def test_optimizing_twice_gives_identical_bytes(random_fsrcnn):
    model = random_fsrcnn[("legacy", True)]
    first, _ = optimize(model)
    second, _ = optimize(model)
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_real_fsrcnn_weights(pretrained_root, scale, photo):
    if not (pretrained_root / "FSRCNN" / f"FSRCNN_x{scale}.pth").is_file():
        pytest.skip(f"FSRCNN_x{scale}.pth is absent from {pretrained_root}")
    net = zoo.build("fsrcnn", scale=scale, pretrained=True)
    model = export(net, exporter="legacy")
    result, report = optimize(model)
    assert_plain_fsrcnn(result, scale)
    assert report.verification.equivalent
    assert max_abs(model, result, photo) <= 1e-5  # a real photo in [0, 1]
    # on uniform noise the trained net's output spans about +-100, where fp32 itself is off by ~1e-4: the
    # rewritten graph must be no farther from the float64 truth than the original graph is
    x = noise(32, 32, seed=scale)
    truth = net.double()(torch.from_numpy(x).double()).detach().numpy()
    original = runtime.run(model, {"input": x})["output"]
    rewritten = runtime.run(result, {"input": x})["output"]
    assert np.abs(rewritten - truth).max() <= 2 * np.abs(original - truth).max() + 1e-5
