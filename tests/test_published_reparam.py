"""Parity with the libraries' own deployed forms, both exporters: timm's MobileOne stack and SPAN's Conv3XC nets,
exported in their training form, become through fold,rep,et the convs the library's re-parameterization
deploys (count, kernel, stride, padding, groups, channels), depthwise convs stay depthwise, and the result is
equivalent to the training form at odd sizes."""

from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402

import etc  # noqa: E402
from etc.zoo.published.reparam import SPAN, MobileOneStack  # noqa: E402
from tests.test_rep_zoo import cached_export  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]
ODD_SIZES = ((19, 23), (11, 9))

NETS = {
    "mobileone": lambda: MobileOneStack(channels=8, kernel=3, branches=3),
    "span_body": lambda: SPAN(channels=8, blocks=2, concat_tail=False),
    "span": lambda: SPAN(channels=16, blocks=3),
}


def conv_shapes(model: onnx.ModelProto) -> list[tuple]:
    """Every Conv as (out, in per group, kh, kw, group, strides, pads, dilations), sorted (node order aside)."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    shapes = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        shapes.append(
            (
                *weights[node.input[1]],
                attrs.get("group", 1),
                tuple(attrs.get("strides", (1, 1))),
                tuple(attrs.get("pads", (0, 0, 0, 0))),
                tuple(attrs.get("dilations", (1, 1))),
            )
        )
    return sorted(shapes)


def depthwise(shapes: list[tuple]) -> list[tuple]:
    return [s for s in shapes if s[4] > 1]


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node if node.op_type != "Constant")


@pytest.fixture(scope="module")
def forms() -> dict:
    return {}


def training_and_deployed(request, cache: dict, name: str, exporter: str, nets=None, **options):
    """(net, training-form export, deployed-form export, fold,rep,et of the training form), built once per
    (name, exporter); ``nets`` maps names to factories (this file's NETS by default), ``options`` go to
    etc.optimize."""
    key = (name, exporter)
    if key not in cache:
        net = (nets or NETS)[name]()
        train = cached_export(request, net, exporter)
        deployed = cached_export(request, net.deploy(), exporter)
        plain, report = etc.optimize(train, "fold,rep,et", **options)
        assert report.verification.equivalent
        cache[key] = (net, train, deployed, plain)
    return cache[key]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mobileone_reaches_timm_reparameterize(request, forms, exporter):
    net, train, deployed, plain = training_and_deployed(request, forms, "mobileone", exporter)
    assert (
        ops(train)["Conv"] == 29 and ops(train)["BatchNormalization"] == 4
    )  # 3 kxk + 1x1 scale per kxk block
    want = conv_shapes(deployed)
    assert len(want) == len(net.blocks) + 4  # one conv per block, plus two SE 1x1 pairs
    assert conv_shapes(plain) == want
    assert (
        ops(plain)
        == ops(deployed)
        == Counter({"Conv": 11, "Relu": 9, "ReduceMean": 2, "Sigmoid": 2, "Mul": 2})
    )


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mobileone_depthwise_convs_stay_depthwise(request, forms, exporter):
    _, _, deployed, plain = training_and_deployed(request, forms, "mobileone", exporter)
    dw = depthwise(conv_shapes(plain))
    assert dw == depthwise(conv_shapes(deployed))
    assert [(s[2], s[5]) for s in dw] == [(3, (1, 1)), (3, (2, 2)), (3, (1, 1))]  # 3x3 at stride 1, 2, 1
    assert all(s[1] == 1 and s[4] == s[0] for s in dw)  # group == channels: one input channel per group


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["mobileone", "span_body"])
def test_equivalent_to_training_and_deployed_forms_at_odd_sizes(request, forms, name, exporter):
    _, train, deployed, plain = training_and_deployed(request, forms, name, exporter)
    assert etc.verify(train, plain, sizes=ODD_SIZES).equivalent
    assert etc.verify(deployed, plain, sizes=ODD_SIZES).equivalent


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_span_conv3xc_reaches_span_update_params(request, forms, exporter):
    """Pad -> 1x1 -> 3x3 (unpadded) -> 1x1 plus a 1x1 skip: one zero-padded 3x3 per Conv3XC, as eval_conv."""
    net, train, deployed, plain = training_and_deployed(request, forms, "span_body", exporter)
    conv3xc = len(net.blocks) * 3 + 2
    assert ops(train)["Conv"] == 4 * conv3xc + 1
    # legacy keeps the Pad; dynamo's optimizer moves it into the first 1x1 (a padded 1x1 with a bias)
    padded_1x1 = [s for s in conv_shapes(train) if s[2:4] == (1, 1) and s[6] == (1, 1, 1, 1)]
    assert ops(train)["Pad"] + len(padded_1x1) == conv3xc
    want = conv_shapes(deployed)
    assert len(want) == net.deploy_convs
    assert conv_shapes(plain) == want
    assert all(s[2:4] == (3, 3) and s[6] == (1, 1, 1, 1) for s in want)
    deployed_plain, _ = etc.optimize(deployed, "fold,rep,et")
    assert ops(plain) == ops(deployed_plain)
    assert not {"Pad", "BatchNormalization"} & set(ops(plain))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_span_with_concat_tail_keeps_the_deployed_convs(request, forms, exporter):
    """Carrying the other concat inputs through conv_2 so rep could fold conv_cat into it would give one 3x3
    (C, 4C) conv instead of the deployed 3x3 (C, C) + 1x1 (C, 4C): 36C² against 13C² MACs per pixel. The cost
    budget declines it, so the deployed convs stay."""
    net, _, deployed, plain = training_and_deployed(request, forms, "span", exporter)
    assert len(conv_shapes(deployed)) == net.deploy_convs
    assert conv_shapes(plain) == conv_shapes(deployed)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_span_training_and_deployed_forms_give_the_same_model(request, forms, exporter):
    """Whatever fold,rep,et does past the deployed form, it does the same to the training form."""
    _, _, deployed, plain = training_and_deployed(request, forms, "span", exporter)
    deployed_plain, _ = etc.optimize(deployed, "fold,rep,et")
    assert conv_shapes(plain) == conv_shapes(deployed_plain)
    assert ops(plain) == ops(deployed_plain)
