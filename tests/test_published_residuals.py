"""Published forms through fold,rep,et, both exporters: DnCNN's x - f(x), FastViT's RepMixer difference of
branches, Real-ESRGAN Compact's LeakyReLU body with the nearest-upsampled image added."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402

import etc  # noqa: E402
from tests.published_residuals import CompactSR, DnCNN, RepMixerNet, RepMixerOnly  # noqa: E402
from tests.test_rep_zoo import cached_export  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]


def optimized(model: onnx.ModelProto, **kw) -> tuple[onnx.ModelProto, etc.OptimizeReport]:
    plain, report = etc.optimize(model, "fold,rep,et", **kw)
    assert report.verification.equivalent  # checked at odd and even sizes
    return plain, report


def op_list(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def attr(node: onnx.NodeProto, name: str, default: int = 1):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_dncnn_subtraction_residual_becomes_plain(request, exporter):
    net = DnCNN(layers=5)
    model = cached_export(request, net, exporter)
    assert "Sub" in op_list(model)
    plain, _ = optimized(model)
    assert op_list(plain) == ["Conv", "Relu"] * (net.layers - 1) + ["Conv"]
    first = next(i for i in plain.graph.initializer if i.name == plain.graph.node[0].input[1])
    assert first.dims[0] == net.features + 3  # the image rides along as 3 identity channels (proved >= 0)


def test_dncnn_with_a_signed_input_is_carried_as_two_relus(request):
    """Not proved >= 0: the skip rides as relu(x), relu(-x) (twice the carried channels), still plain: at
    DnCNN's published width (64) that costs (70/64)² ≈ 1.2x MACs, inside the default budget."""
    net = DnCNN(layers=5)
    model = cached_export(request, net, "legacy")
    plain, _ = optimized(model, input_ranges={"input": (-1.0, 1.0)})
    assert set(op_list(plain)) == {"Conv", "Relu"}
    first = next(i for i in plain.graph.initializer if i.name == plain.graph.node[0].input[1])
    assert first.dims[0] == net.features + 6


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_repmixer_becomes_one_depthwise_conv(request, exporter):
    model = cached_export(request, RepMixerOnly(channels=3), exporter)
    assert {"Sub", "BatchNormalization", "Mul"} <= set(op_list(model))
    plain, _ = optimized(model, input_ranges={"input": (-1.0, 1.0)})
    assert op_list(plain) == ["Conv"]
    conv = plain.graph.node[0]
    assert attr(conv, "group") == 3 and list(attr(conv, "kernel_shape")) == [3, 3]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_repmixer_stack_reaches_the_deployed_conv_count(request, exporter):
    net = RepMixerNet(channels=8, blocks=2)
    model = cached_export(request, net, exporter)
    plain, _ = optimized(model)
    ops = op_list(plain)
    assert ops.count("Conv") == net.deploy_convs
    assert not {"Sub", "BatchNormalization"} & set(ops)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_compact_keeps_only_its_leaky_relus(request, exporter):
    net = CompactSR(features=8, convs=3, upscale=2)
    model = cached_export(request, net, exporter)
    plain, _ = optimized(model)
    ops = op_list(plain)
    assert ops == ["Conv", "LeakyRelu"] * net.activations + ["Conv", "DepthToSpace"]
    prelu, _ = optimized(model, prelu_to_relu=True)
    assert op_list(prelu) == ["Conv", "Relu"] * net.activations + ["Conv", "DepthToSpace"]


def test_compact_with_a_signed_input_keeps_its_skip(request):
    """A signed image cannot ride through LeakyReLU (it would be scaled): the carry declines and says so."""
    model = cached_export(request, CompactSR(features=8, convs=3, upscale=2), "legacy")
    plain, report = optimized(model, input_ranges={"input": (-1.0, 1.0)})
    assert "Concat" in op_list(plain)
    reasons = [d.reason for d in report.pipeline.declines if d.rule == "carry_skip"]
    assert any("may be negative: LeakyRelu would scale it" in r for r in reasons)
