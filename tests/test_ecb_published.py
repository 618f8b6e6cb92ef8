"""The ECB block as published (border written by slice assignment) reduces like our re-implementation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402

from etc import runtime, zoo  # noqa: E402
from etc.pipeline import NumericCheck, run_pipeline  # noqa: E402
from etc.testing import assert_equivalent, op_types  # noqa: E402
from etc.zoo.ecbsr import ECBSRTrain  # noqa: E402
from etc.zoo.published.ecbsr import PublishedECBSR  # noqa: E402
from tests.test_rep_zoo import cached_export  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]


def conv_shapes(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("act", ["prelu", "relu"])
def test_published_ecb_blocks_become_one_conv_each(request, exporter, act):
    """All three branch types (1x1-3x3, Sobel x/y, Laplacian) with the bias written into the border."""
    net = PublishedECBSR.from_train(ECBSRTrain(1, 4, 2, seed=3), act=act)
    model = cached_export(request, net, exporter, dynamic_hw=False)
    assert op_types(model).count("ScatterND") == 4 * 4 * 3
    result = run_pipeline(model, "fold,rep", instruments=[NumericCheck(atol=1e-5)])
    ops = [op for op in op_types(result.model) if op not in ("Constant",)]
    assert ops.count("Conv") == 3, ops  # one per ECB block
    assert "ScatterND" not in ops and "Pad" not in ops, ops
    assert_equivalent(model, result.model)


@pytest.mark.slow
def test_dynamic_hw_dynamo_export_probes_the_shape_arithmetic(request):
    """dynamo with dynamic H/W computes the strip indices from Shape: probed at several sizes, then rewritten."""
    net = PublishedECBSR.from_train(ECBSRTrain(1, 4, 2, seed=3))
    model = cached_export(request, net, "dynamo", dynamic_hw=True)
    result = run_pipeline(model, "fold,rep", instruments=[NumericCheck(atol=1e-5)])
    ops = op_types(result.model)
    assert ops.count("Conv") == 3 and "ScatterND" not in ops and "Pad" not in ops, ops
    assert_equivalent(model, result.model)


def test_dynamic_hw_legacy_export_is_declined_with_the_failing_size(request):
    """The legacy exporter bakes the traced size into an Expand: the writes cannot be probed at other sizes."""
    from etc.passes.fold_border import rules
    from etc.testing import reasons, run_family

    net = PublishedECBSR(0, 4, 2)
    model = cached_export(request, net, "legacy", dynamic_hw=True)
    _, hits, declines = run_family(run_pipeline(model, "fold").model, rules)
    assert hits == {}
    found = reasons(declines, "border_write_as_padding")
    assert found and all("does not run at 17x23" in r and "Expand" in r for r in found), found


@pytest.mark.parametrize(
    "exporter, dynamic_hw",
    [
        ("legacy", False),
        pytest.param("dynamo", False, marks=pytest.mark.slow),
        pytest.param("legacy", True, marks=pytest.mark.slow),
        pytest.param("dynamo", True, marks=pytest.mark.slow),
    ],
)
def test_pretrained_published_ecbsr_reduces_to_the_deploy_network(
    request, pretrained_root, exporter, dynamic_hw
):
    """ECBSR_M4C16_x4 deploy kernels split into published ECB branches: fold,rep,et gives the deploy graph.

    The legacy dynamic-H/W export runs only at its traced size (17x19, a baked Expand shape): it is pinned to
    that size, as the command line does, and compared with the deploy model exported at that size.
    """
    deploy = zoo.build("ecbsr", scale=4, pretrained="ECBSR_M4C16_x4")
    published = PublishedECBSR.from_train(ECBSRTrain.from_deploy(deploy, seed=7))
    x = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(published(x), deploy(x), atol=1e-5)
    model = cached_export(request, published, exporter, dynamic_hw)
    reference = cached_export(request, deploy, exporter, dynamic_hw)
    if exporter == "legacy" and dynamic_hw:
        size = runtime.runnable_size(model)
        assert size == (17, 19)
        model, reference = runtime.pin_hw(model, size), cached_export(request, deploy, exporter, False)
    got = run_pipeline(model, "fold,rep,et").model
    want = run_pipeline(reference, "fold,rep,et").model
    assert op_types(got) == op_types(want)
    assert conv_shapes(got) == conv_shapes(want)
    assert op_types(got).count("Conv") == deploy.M + 2  # 6: the anchor rides along as extra channels
    assert_equivalent(reference, got, atol=1e-4)
